// Package mpeer is a Godot-style multiplayer peer over a p2p.Node: the
// shape of Godot 4's ENetMultiplayerPeer (and of what a
// MultiplayerPeerExtension implements), so a port of a Godot or ENet game
// maps one to one.
//
//	Godot ENetMultiplayerPeer                 mpeer.Peer
//	create_server(port, max_clients)          CreateServer(node, Config{MaxClients: n})
//	create_client(address, port)              CreateClient(node, serverPeerID, Config{})
//	create_mesh(id), add_mesh_peer(id, host)  CreateMesh(node, id, Config{}), AddMeshPeer(id, nodePeer)
//	set_target_peer                           SetTargetPeer
//	transfer_mode, transfer_channel           SetTransferMode, SetTransferChannel (and Get...)
//	put_packet, get_packet                    PutPacket, GetPacket
//	get_packet_peer/_channel/_mode            GetPacketPeer, GetPacketChannel, GetPacketMode (next packet)
//	get_available_packet_count                GetAvailablePacketCount
//	get_unique_id, is_server                  GetUniqueID, IsServer
//	get_connection_status                     GetConnectionStatus
//	refuse_new_connections                    RefuseNewConnections, IsRefusingNewConnections
//	get_max_packet_size                       GetMaxPacketSize
//	is_server_relay_supported                 IsServerRelaySupported
//	disconnect_peer(id, force), close         DisconnectPeer(id, force), Close
//	poll, peer_connected/_disconnected        Poll, then Events: PeerConnected, PeerDisconnected
//	connection_failed                         Event ConnectionFailed; DisconnectReason
//
// # Peers and topologies
//
// Peer ids are int32: the server is 1, clients 2..2^31-1. A client asks
// for an id (Config.ClientID, or a random one as Godot's
// generate_unique_id); the server rejects an id below 2 or already in use,
// and the client learns why (ConnectionFailed with ErrInvalidID or
// ErrIDInUse, and DisconnectReason). A server that refuses new connections
// (RefuseNewConnections) or is full rejects with ErrRefused or
// ErrServerFull.
//
// A client is Disconnected, then Connecting from CreateClient, then
// Connected once the server accepts it; a server and a mesh member are
// Connected at once. A client gets PeerConnected for the server (1) and
// then for every other client, and later PeerConnected and
// PeerDisconnected as clients come and go, as Godot clients do.
//
// In client/server mode client-to-client packets are server-relayed, as
// with Godot's SceneMultiplayer server relay (IsServerRelaySupported is
// true): a client sends every packet to the server, whatever its target;
// the server delivers it to itself when the target includes the server
// (1, broadcast 0, or -x for x ≠ 1) and forwards it, unchanged, to every
// other client the target names, so receivers see the original sender in
// GetPacketPeer. A relayed packet costs one more hop through the server.
// When the server's send queue to a recipient is full, it holds the
// reliable forwards and reads no more reliable data until they have gone,
// so senders wait (their PutPacket fails with p2p.ErrQueueFull) and no
// reliable packet is lost at the server; an unreliable forward over a full
// queue is dropped and counted (Stats.RelayErrors).
//
// In mesh mode (CreateMesh, AddMeshPeer) every member has direct sessions
// with the others and there is no server and no relay. Each member adds
// each other one with its id and node; both send an introduction (HELLO)
// and a member is connected when the other's introduction arrives with
// the id it was added with. Both must add each other within
// Config.JoinTimeout (20 s).
//
// SetTargetPeer: 0 broadcasts to every connected peer, 1 is the server, a
// positive id is that peer, -x is every peer but x (and never the sender).
// As in Godot, PutPacket refuses (ErrInvalidTarget) a target whose
// absolute value is not a connected peer.
//
// # Transfer modes, flags and channels
//
// Each transfer mode maps onto netpacket flags (package channels) on its
// own node channel. The table relates Steam's send types (docs/ARCHITECTURE.md, "Send types"),
// netpacket flags, ENet packet flags and Godot's transfer modes:
//
//	Steam send type                netpacket flags                       ENet flags (+ action)           Godot transfer mode             mpeer mode (flags)
//	SendUnreliable (0)             Unreliable|Unsequenced|FlushHint (6)  UNSEQUENCED, flush              UNRELIABLE (0)                  Unreliable (6)
//	SendUnreliableNoDelay (1)      6, dropped until connected            UNSEQUENCED, CONNECTED only     UNRELIABLE (0), CONNECTED only  Unreliable (6), Connected only
//	SendReliable (2)               Reliable|FlushHint (5)                RELIABLE, flush                 RELIABLE (2)                    Reliable (5)
//	SendReliableWithBuffering (3)  Reliable (1), Nagle                   RELIABLE, sent at next service  RELIABLE (2), flushed per put   Reliable (5)
//	Send with Unreliable (beyond)  Unreliable (0): sequenced             0: sequenced, drop stale        UNRELIABLE_ORDERED (1)          UnreliableOrdered (4)
//
// Every mode carries FlushHint because ENetMultiplayerPeer flushes the
// host after every put_packet. So:
//
//   - Reliable: exactly once, in order per (sender, channel); resent until
//     acknowledged.
//   - Unreliable: may be lost or arrive in any order; never duplicated.
//   - UnreliableOrdered: may be lost; never delivered after a newer packet
//     of the same sender on the same channel (stale ones are dropped).
//
// Transfer channels are 0–255, and each channel is three independent
// channels, one per mode (Godot's channel 0 "works as 3 separate
// channels"; here every channel does): a lost reliable packet on one
// (channel, mode) never delays another. (channel, mode) travels on node
// channel DataChannel(channel, mode) = DataChannelBase + channel*3 + mode,
// 0xFD00–0xFFFF; control messages on ControlChannel, 0xFCFF. The adapter
// owns node channels 0xFCFF–0xFFFF: the game must not use them.
//
// # Sizes
//
// Each packet carries an 8-byte header, so PutPacket takes up to
// MaxReliablePacketSize (p2p.MaxReliableSize − 8 = 1048568 bytes) in
// Reliable mode and MaxUnreliablePacketSize (p2p.MaxUnreliableSize − 8 =
// 1192 bytes) in the unreliable modes; GetMaxPacketSize reports the limit
// of the current mode. A larger packet fails with ErrTooLarge and nothing
// is sent. PutPacket before the status is Connected fails with
// ErrNotConnected, as with Godot and ENet.
//
// # Wire format
//
// Integers are little-endian, as in ENetMultiplayerPeer's header. A data
// packet, on its data channel:
//
//	bytes 0–3  source peer id, int32: the original sender (a relay keeps it)
//	bytes 4–7  target peer id, int32: as given to SetTargetPeer
//	bytes 8–   payload
//
// A control message, on ControlChannel (reliable, flushed), is a type byte
// and its fields; receivers ignore bytes after the fields, so later
// versions may append some:
//
//	0x01 JOIN    version u8, id int32  client → server: let me in with this id
//	0x02 ACCEPT  version u8            server → client: you are in
//	0x03 REJECT  reason u8             server → client: 1 id out of range, 2 id in use,
//	                                   3 refusing new connections, 4 full, 5 version
//	0x04 ADD     id int32              server → client: that client is in
//	0x05 DEL     id int32              server → client: that client left
//	0x06 BYE     (none)                any → any: the sender ends this connection
//	0x07 HELLO   version u8, id int32  mesh member → member: I am this id
//
// The protocol version is 1. A server answers a JOIN with ACCEPT followed
// by an ADD for every client already in (on the one ordered channel), and
// sends the others an ADD for the newcomer; a DEL when a client leaves.
// Example, client 7 broadcasting "hi": 07 00 00 00 00 00 00 00 68 69.
//
// # Sessions and the node
//
// The adapter takes over the node's event stream: while a Peer is active
// the game must not call Node.RunCallbacks or read Node.Events, and must
// not use the reserved channels. Create* discards node events and
// reserved-channel packets left from before. A server accepts every
// session request unless it refuses new connections, or 64 accepted
// sessions are still waiting for their JOIN (then the session is
// refused), and closes sessions that send no JOIN within
// Config.JoinTimeout; a client refuses sessions from any node but its
// server; a mesh member answers a request when AddMeshPeer adds that node.
// Reaching the other nodes is the node's business: AddPeerAddr, or a
// rendezvous server. Close ends the Peer's sessions but not the node,
// which the caller owns.
//
// A peer is disconnected (PeerDisconnected) when it says BYE
// (DisconnectPeer), when its node closes the session (Node.Close, Peer
// Close), or when it goes silent: the node's session fails after 10 s
// without a packet (Err ErrTimeout). A node closed under the Peer ends it
// too.
//
// # Poll, events and goroutines
//
// Nothing happens between calls: the Peer starts no goroutine. Poll, on
// the caller's goroutine, takes the node's session events, reads control
// and data messages into the queue GetPacket reads, relays on a server,
// and runs timeouts. Events are a polled list: Poll queues
// PeerConnected, PeerDisconnected and ConnectionFailed, and Events returns
// and clears them; no callback ever runs. Call Poll every frame as
// Godot calls poll; a server relays only while it polls.
//
// A Peer's methods may be called from any goroutine: one mutex guards all
// its state, and it calls the node (which is safe for concurrent use)
// while holding it; the node never calls back. Games usually call
// everything from their main loop, as in Godot.
//
// # Hostile input
//
// Every message is checked: a data packet shorter than its header, an
// unknown or truncated control message, a source id that is not the
// sender's, a packet from a node that has not joined, an id out of range,
// a target that is not this peer or is -2^31, or a control message out of
// place is dropped and counted (Stats), never a panic. Packets from a
// sender not yet known (its announcement on the control channel was lost
// and resent, so data overtook it) are held up to 5 s, then dropped and
// counted.
package mpeer
