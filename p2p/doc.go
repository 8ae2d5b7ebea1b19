// Package p2p is gamewire's public API: Steam-style peer-to-peer
// networking without Steam. A Node has an Identity (an X25519 key; its
// public half, the PeerID, names the node), one UDP socket, and sessions
// with the peers it talks to. Games send packets to a PeerID on a channel
// with one of Steam's four send types and read them per channel; sessions
// open, are accepted and fail as in Steam's ISteamNetworking.
//
// # Send types
//
// See SendType for the table: size limits (1200 bytes unreliable, 1 MiB
// reliable), what is queued or dropped before a session connects, and the
// netpacket flags each maps to. Ordering is per (peer, channel): a reliable
// message held up on one channel never delays another.
//
// # Sessions
//
//   - Sending to a peer opens a session (Connecting) and accepts the peer.
//   - A peer that sends to this node unaccepted raises SessionRequest,
//     raised again every 2 s while it keeps sending. Its data is held (within
//     a window of about 1 MiB, pushing back on the sender past it) and
//     delivered after AcceptP2PSessionWithUser; unanswered, it is dropped
//     after ConnectTimeout and the sender fails with SessionErrorTimeout.
//   - No path, handshake or acceptance within ConnectTimeout (20 s): one
//     SessionConnectFail{Timeout}, the queued data is dropped, and the next
//     send starts a fresh attempt. A connected peer that goes silent (10 s
//     without a packet, despite keepalives every second) fails the same way.
//   - A peer running another AppID or protocol version fails the session
//     with SessionErrorNotRunningApp; a peer that refuses it (closes it
//     without accepting) with SessionErrorNoRightsToApp.
//   - CloseP2PSessionWithUser frees the session and tells the peer (which
//     gets SessionClosed); new data from it raises a new SessionRequest.
//     CloseP2PChannelWithUser drops a channel's unread data; closing the last
//     open channel closes the session.
//   - GetP2PSessionState reports false without a session, else the truth:
//     active or connecting, the last error, the remote address, queued bytes
//     and packets, RTT, loss and rates.
//
// Events reach the application once each, through one bounded queue: either
// RunCallbacks, which calls the Config callbacks on the caller's goroutine
// (a game loop), or Events, a channel for Go code.
//
// # Security
//
// Every session runs a Noise IK handshake (internal/secure documents every
// byte) that proves both PeerIDs and carries the AppID and protocol version;
// then every datagram is sealed with ChaCha20-Poly1305 under a counter nonce
// and checked against a replay window, and carries a receiver index rather
// than a PeerID. A node never answers an unauthenticated packet with more
// bytes than it carried. When peers start a session with each other at the
// same moment, the lower PeerID stays initiator. A flood of handshakes puts
// the node "under load": it then answers initiations with cookies, so only
// sources that receive at their address get a handshake, each rate-limited.
//
// # Consent before cost
//
// Identities are free, so a node spends nothing on a peer it has no
// session with beyond a paced answer to the address the packet came from:
//
//   - With a rendezvous server, a peer's request for an introduction
//     reaches this node first, as an ask carrying only the asker's
//     verified address; the server hands out candidates only once both
//     sides asked. The ask raises SessionRequest; the node asks back (so
//     consents) only for a peer it sent to or the application accepted
//     (AcceptP2PSessionWithUser). Until then: no probe, no birthday
//     sockets, no TCP dial, no TURN allocation. Config.AllowIntroduction
//     refuses strangers at no cost (the asker fails with Timeout), and an
//     introduction for a peer this node did not consent to is ignored.
//   - A responder sends nothing on a new session but its handshake
//     response until the peer proves its address with an authenticated
//     packet (the initiator sends one at once); an unaccepted session that
//     stays unproven is forgotten after 5 s. Every answer to an
//     unauthenticated datagram (response, cookie reply, refusal) is held to
//     three times the bytes that address sent.
//   - Sessions peers open are budgeted per source IP (an IPv4 address or an
//     IPv6 /64): Config.MaxPendingPerIP unaccepted ones (8), within
//     Config.MaxPendingSessions in all (256), where a newcomer evicts the
//     oldest of the busiest IP rather than being locked out; while an IP
//     holds a pending session, or a quarter of the total is pending, an
//     initiation must bring a cookie before any state exists, whatever the
//     rate; and Config.MaxSessionsPerIP (64) sessions an IP opened,
//     accepted or not. NodeStats counts every refusal and eviction.
//
// # Transport
//
// Each session runs a channels.Conn (reliability, ordering, fragmentation,
// coalescing, congestion control) over its encrypted datagrams. The socket
// is read and written in batches (recvmmsg/sendmmsg on Linux) and the first
// byte of each datagram says what it is (docs/ARCHITECTURE.md, "The first byte"): 0x80–0xBF gamewire;
// STUN (0x00–0x03) answers NAT traversal's requests. TURN never shares the
// socket: the relay client (package relay) has a socket or TCP connection
// of its own, and what its allocation receives enters the node as if read
// from a socket of kind PathRelay.
//
// # Paths
//
// A session's path (its route) is a peer address and one of the node's
// sockets: the main one, an extra one the birthday approach opened, the
// relay or a TCP link. Once the session is established, the path layer
// (internal/path: one owner goroutine per node) chooses it among the
// routes offered: the peer's packets from another address, validated
// checks, the relay, TCP links. A better class takes over at once (UDP to
// our subnet, to a private or loopback address, to a public one, then
// TCP, then the relay); the same class only when the current route fails
// (unacknowledged data 200 ms overdue, or a second of silence), in the
// first 2 s for a better-checked route, or for an RTT 20 % and 5 ms lower
// twice a second apart; a worse class after a second of silence. A peer's
// route moves at most 6 times a minute unless it fails; ::1 and
// 127.0.0.1 at one port are one route. With
// Config.Rendezvous, a session with no direct path after Config.RelayAfter
// (at once when both NATs map per destination, or when either side's UDP
// is blocked and it registered over TCP) goes relay to relay through the
// TURN servers and credentials the rendezvous server issued: from half
// the budget on, each side allocates, re-registers with its relayed
// address, learns the other's from the next introduction and installs a
// permission, so the switch at the budget is immediate. NAT traversal goes on in the background (the
// punch, then a new introduction 5 s later, doubling to 40 s); the first
// validated direct path takes over the session, which raises PathChanged.
// Packets from the relay never pull a direct session back unless the
// direct path has gone quiet. The channels.Conn is the same across every
// switch, so reliable messages are neither lost nor duplicated. An
// allocation no session needed for 30 s is released. One the server forgot
// (a restart: the relay client's own refreshes go unanswered or are
// refused, or its TCP connection ends) is dropped and replaced, usually
// within 2 to 5 s: the node re-registers with the new relayed address,
// learns the peer's, and installs the permissions again.
//
// When a peer registered over TCP, or we did (a network that drops UDP),
// the node also listens on TCP (at its UDP port number when that is free,
// with SO_REUSEPORT) and dials the peer's observed and host addresses from
// that port, as the peer dials ours: the SYNs cross inside both NATs (TCP
// simultaneous open). Each datagram crosses a link in a frame (0xBE, a
// 2-byte big-endian length, the datagram). A link lets packets in once the
// other end's probe checks out, and is offered to the session once the ack
// of our own fresh probe comes back; the session then runs over it
// (PathTCP) rather than the relay. UDP straight to the peer ranks above
// TCP, TCP above the relay (a link is one hop and costs the operator
// nothing). A link holds at most 64 KiB beyond the
// kernel's buffer: past that datagrams are dropped and counted
// (NodeStats.TCPDropped) and the channels send reliable data again, so a
// stalled TCP connection never queues unreliable data without bound.
// Connections that prove no introduced peer within 5 s are closed.
// Config.DisableDirectTCP turns direct TCP off.
//
// # Port mapping and NAT type
//
// Unless Config.DisablePortMapping, a node with a rendezvous server asks
// its router to forward its port (PCP, NAT-PMP or UPnP IGD; package
// nat/portmap), renews the mapping, deletes it on Close and advertises it
// as a candidate, so two NATs that map per destination still connect
// directly when one router offers mapping. Node.NATType reports the NAT
// as Epic Online Services does (Open, Moderate, Strict) with the RFC 4787
// behaviour, port mapping and IPv6 addresses behind it.
//
// Config.Rendezvous may name a dual-stack server by both its addresses:
// the node registers over IPv4 (IPv6 without an IPv4 address), learns its
// address and NAT in the other family by STUN and offers that address to
// peers, so a pair that can go direct in both families does, and settles
// on IPv6 unless IPv6 is measurably slower.
//
// # LAN discovery
//
// With Config.LANDiscovery, nodes of one AppID on one network find each
// other with no server. Each sends a round of beacons at once and then
// every 1.5 to 2.5 s (2 s ± 25 %, so a LAN's nodes do not beacon in step)
// from its own socket, so the address a beacon comes from is the one its
// sessions use: to 239.255.71.87 (IPv4 local scope, RFC 2365) and
// 255.255.255.255 from each interface's first IPv4 address, and to
// ff12::4757 (link-local scope) on each interface with IPv6, all on UDP
// port 18263; a socket bound to one address beacons from it alone. It
// listens on that port with sockets of its own (SO_REUSEPORT, so every
// node on a machine does), joined to the groups on each interface it can
// use. A beacon is 74 bytes:
//
//	0  type  u8   0xB0
//	1  ver   u8   1
//	2  app   16   BLAKE2s-256(AppID), first 16 bytes
//	18 peer  32   the sender's PeerID
//	50 time  u64  little endian, unix milliseconds, the sender's clock
//	58 mac   16   BLAKE2s-128 over bytes 0-57, keyed with
//	              BLAKE2s-256("gamewire LAN beacon v1" 0x00 AppID)
//
// A PeerID is an X25519 key, which cannot sign, so a beacon only claims
// its PeerID and address; a session's handshake proves both (it fails
// unless the node there holds the key). The MAC is keyed by the AppID
// itself, not by the hash the beacon carries, so only software that knows
// the AppID makes valid beacons; the AppID is no secret, so the MAC keeps
// other programs out rather than authenticating. A beacon more than 2
// minutes from our clock, or older than the last one taken from its
// address, is dropped (replays).
//
// Nothing a stranger sends makes the node send: beacons are never
// answered, and a beacon's address gets packets only once the application
// sends to that peer, and then what an AddPeerAddr address would: the
// initiation (a copy to each other address of the peer, once) and its
// retries. A handshake on a beacon's address unanswered for a second asks
// the rendezvous server as well, when there is one. What the node keeps is
// bounded: 256 peers, 4 addresses each, 16 peers per source IP (an IPv6
// /64), 16 newcomers a second (bursts of 64; each raises LANPeerFound);
// beacons are taken at 16 a second per source IP (bursts of 32), and new
// entries at 256 a second in all. A full table refuses newcomers rather
// than evict the peers it lists. An address not heard from for 10 s is
// forgotten, and LANPeers lists the peers that have one left.
// NodeStats.LANSent, LANHeard, LANDropped, LANRefused and LANErrors count
// it all: a port, group or interface discovery cannot use is counted in
// LANErrors and logged at debug level, and never fails New.
//
// # Goroutines and locks
//
// docs/ARCHITECTURE.md has the whole picture. In short: a reader per
// socket, a handshake worker, a maintenance goroutine, the path layer's
// owner, each Conn's timer, each punch's goroutine, the relay client's
// and TCP links' readers and writers, and LAN discovery's sender and
// readers. Locks are taken in the order
// Node.mu, session.mu, a punch's mu, then leaf locks. No socket is
// written, no rendezvous message sent and no user callback run under
// session.mu: a locked section queues what it decided and session.unlock
// carries it out (Conns are handed queued data with Conn.Queue, and
// closed there too). Each peer's path state (peerPaths: its punch, what
// traversal found, its relay and TCP state), the relay allocation and the
// TCP links belong to the path layer's owner goroutine, which runs all
// path work posted to it (traversal.do, traversal.must) and reaches a
// session only through the session's own methods; everyone else reads the
// peer's published peerView. Nothing waits for the owner.
//
// Data packet flags (authenticated) say where the sender stands on the
// session, so acceptance, refusal and closing ride on every packet,
// acknowledgements and keepalives included, and need no control messages of
// their own:
//
//	bit 0  accepted  the sender accepts the session
//	bit 1  refused   the sender refuses it
//	bit 2  closing   the sender closed it
//
// A data packet with an empty payload carries only these flags.
package p2p

// The NAT matrix in docs/NAT-MATRIX.md comes from TestLabNATMatrix, which
// needs root and network namespaces.
//go:generate sh -c "GAMEWIRE_NAT_MATRIX=../docs/NAT-MATRIX.md go test -count=1 -timeout 30m -run TestLabNATMatrix ."
