// Package netpacket is libretro's netpacket interface
// (RETRO_ENVIRONMENT_SET_NETPACKET_INTERFACE) over a p2p.Node, so an
// emulator core's netplay code ports one to one: the core fills in
// Callbacks (retro_netpacket_callback), the frontend makes a Host or a
// Client and calls Frame once per frame, and the core sends with the
// SendFunc that Start gave it (send_fn) and may drain incoming packets
// between frames with pollReceive (poll_receive_fn).
//
// # Players
//
// The host is client 0 (HostID); clients get ids 1..Config.MaxClients (31
// by default: 32 players, as RetroArch), never 0 or 0xFFFF. Broadcast
// (0xFFFF) sends to every other player, from the host or from a client.
//
// The topology is a star, as in RetroArch: clients have a session with the
// host only. A client's packet to another client, or its broadcast, goes
// to the host, which delivers it and rewrites the sender's id for the
// recipients, so client-to-client packets are host-relayed: one extra hop.
// The sender's id a recipient sees comes from the authenticated session
// the packet arrived on, never from the packet, so no client can pass as
// another.
//
// # Lifecycle
//
// NewHost calls Start(HostID, ...) at once. Join sends the host a join
// request carrying Callbacks.ProtocolVersion. The host's Frame checks the
// version (a client whose version differs is refused, ReasonVersion),
// takes the lowest free id (none: ReasonFull) and asks Connected(id)
// (false: ReasonRefused); then it welcomes the client with its id and the
// client's Frame calls Start(id, ...). A refused client learns why (its
// Frame returns a *RefusedError; the host's Config.OnRefuse gets the same
// reason), its Start is never called and its session is closed.
//
// When a client's session closes (Close, or its node closed) or fails (the
// client went silent: 10 s, p2p's SessionClosed and SessionConnectFail
// events), the host's Frame calls Disconnected(id) and the id is free
// again. When the host goes away, each client's Frame calls Stop and
// returns ErrHostGone. Close calls Stop too. The adapters never close the
// node, which stays the caller's.
//
// # Flags
//
// Send honours every libretro flag:
//
//	Reliable               arrives exactly once, in order (per sender and recipient;
//	                       when the host's queue to a relayed packet's recipient is
//	                       full, the host holds the packet and reads no more reliable
//	                       data until it goes, so the senders wait, nothing is lost)
//	Reliable|Unsequenced   invalid in libretro.h; treated as Reliable (ENet ignores Unsequenced there too)
//	Unreliable             sequenced: may be lost, never delivered after a newer one
//	Unreliable|Unsequenced may be lost or arrive in any order, never duplicated
//	FlushHint              with any of them: this packet and what was buffered go now;
//	                       with no data: only flush what was buffered
//
// Without FlushHint, packets may wait up to the node's Config.NagleDelay
// (5 ms by default) to share a datagram; Frame does not flush. Packets
// carry 1 to MaxPacketSize (65536) bytes; larger ones fail with
// ErrTooLarge, and empty data sends nothing. Unreliable packets larger
// than MaxUnreliableSize (p2p.MaxUnreliableSize less this package's 2-byte
// header: 1198 bytes) are sent reliably, as libretro.h allows ("Reliable
// transmission will be used instead"); Stats.SentReliably counts them.
// Each delivery class travels on its own p2p channel, so ordering holds
// within a class: a reliable packet never waits behind a lost unreliable
// one, and PollReceive delivers reliable packets, then sequenced, then
// unsequenced, each class in arrival order. A relayed packet keeps its
// class; sequenced packets relayed to one client share the host's
// sequence to it, so a late one may also be dropped because a newer one
// from another sender overtook it.
//
// The send types of Steam, this package's flags, ENet's packet flags and
// Godot's transfer modes map as follows (docs/ARCHITECTURE.md, "Send types"; ENet and Godot as
// in reference/semantics.md §3 and §5.1):
//
//	Steam send type (p2p)         netpacket flags                   ENet packet flags   Godot transfer mode
//	SendUnreliable (0)            Unreliable|Unsequenced|FlushHint  UNSEQUENCED, flush  TRANSFER_MODE_UNRELIABLE
//	SendUnreliableNoDelay (1)     Unreliable|Unsequenced|FlushHint  UNSEQUENCED, flush  TRANSFER_MODE_UNRELIABLE
//	SendReliable (2)              Reliable|FlushHint                RELIABLE, flush     TRANSFER_MODE_RELIABLE
//	SendReliableWithBuffering (3) Reliable                          RELIABLE            TRANSFER_MODE_RELIABLE
//	(Node.Send, flags 0)          Unreliable                        0 (sequenced)       TRANSFER_MODE_UNRELIABLE_ORDERED
//	(none)                        Reliable|Unsequenced = Reliable   RELIABLE            TRANSFER_MODE_RELIABLE
//
// Notes on the rows. "flush" is enet_host_flush after enet_peer_send;
// without it ENet sends at the next enet_host_service, which is what
// SendReliableWithBuffering's Nagle delay is to Steam. Godot flushes
// after every put_packet, so it has no buffered mode. UnreliableNoDelay
// differs from Unreliable only before the session is connected, where p2p
// drops it (as enet_peer_send fails on an unconnected peer and Godot's
// put_packet errors). Over ENet, unreliable packets above the MTU also
// need UNRELIABLE_FRAGMENT, or ENet sends their fragments reliably; this
// package sends them reliably on purpose (see above). ENet ignores
// Unsequenced on reliable packets, as this package does.
//
// # The node
//
// A Host or Client takes over its node's event stream: it reads
// Node.Events in Frame, so the game must not call Node.RunCallbacks or
// Node.Events while the adapter runs. It uses the p2p channels ChannelBase
// to ChannelBase+ChannelCount-1 (0xFE00–0xFE0F); the game may use every
// other channel of the node for its own traffic, with the peers of the
// netpacket session. A client refuses every session a peer opens to it:
// the one it keeps is the one it opened to its host. A host accepts every
// session opened to it, to read the join, and closes it if no join comes
// within Config.JoinTimeout.
//
// # Threading
//
// Like libretro's netpacket, Host and Client are not safe for concurrent
// use: call Frame, Send, PollReceive and Close from one goroutine, the
// frontend's loop; the callbacks run on it, within those calls. The
// adapters start no goroutines and keep no state that the node's
// goroutines touch: they reach the node only through its methods, which
// are safe for concurrent use. Stats may be read from any goroutine.
//
// # Bad input
//
// Malformed or hostile messages are dropped and counted, never trusted:
// short or oversized messages, unknown control types, control messages
// from the wrong side or at the wrong time, data from a peer that has not
// joined, client ids out of range or held by no one, and anything on the
// reserved channels this version does not use (see Stats).
//
// # Wire format
//
// Every message is one p2p message on a reserved channel; integers are
// big-endian.
//
//	channel 0xFE00  control, reliable
//	channel 0xFE01  data, reliable (and unreliable packets over MaxUnreliableSize)
//	channel 0xFE02  data, unreliable sequenced
//	channel 0xFE03  data, unreliable unsequenced
//	0xFE04–0xFE0F   reserved; read and dropped
//
// Data messages:
//
//	bytes 0–1  client id: from a client, the recipient (0 the host,
//	           1..max a client, 0xFFFF everyone else); from the host,
//	           the original sender (0 the host, 1..max a client)
//	bytes 2..  the packet, 1 to 65536 bytes
//
// Control messages start with a type byte:
//
//	0x01 JOIN     client → host   byte 1: this package's wire version (1)
//	                              bytes 2..: ProtocolVersion (0–255 bytes)
//	0x02 WELCOME  host → client   bytes 1–2: the client's id (1..max)
//	                              bytes 3–4: max, the largest client id
//	                              (exactly 5 bytes)
//	0x03 REFUSE   host → client   byte 1: the Reason (1 version, 2 refused by
//	                              the core, 3 full, 4 malformed join)
//	                              bytes 2..: the host's ProtocolVersion when
//	                              the reason is 1, else nothing
package netpacket
