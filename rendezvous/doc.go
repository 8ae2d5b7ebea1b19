// Package rendezvous is gamewire's signalling service: a server that
// registers peers by PeerID at the public address it sees them at,
// introduces two of them to each other once both asked for it, so both
// punch through their NATs at the same moment, and answers STUN Binding
// requests on the same sockets; and the client a p2p.Node runs over its
// own socket.
//
// # Protocol
//
// Every message starts with a type byte in gamewire's range (0x80–0xBF,
// docs/ARCHITECTURE.md, "The first byte"). Integers are big-endian. An address is 18 bytes: a 16-byte
// IPv6 address (IPv4 as IPv4-mapped) and a 2-byte port; all zeros is none.
// A MAC is BLAKE2s-128 keyed with the session key over every byte before it.
//
// The session key binds a client to its PeerID: it is derived from X25519
// between the client's identity and the server's key,
//
//	key = BLAKE2s-256("gamewire rendezvous v1" || X25519(client, server) || client PeerID || server key)
//
// so only the holder of a PeerID's private key can produce its MACs.
//
//	REGISTER   0xA0  client → server
//	  0  type
//	  1  flags: bits 0–1 the client's NAT mapping (0 unknown, 1 endpoint-independent, 2 dependent),
//	     bit 2 the client allows relay, bit 3 a relayed address follows the candidates
//	  2  version (1)
//	  3  n: host candidates, at most 8
//	  4  PeerID (32)
//	  36 timestamp (8): strictly increasing per client; older ones are refused
//	  44 cookie (16): from the last CHALLENGE, zeros at first
//	  60 n × address: the client's host candidates
//	  .. its relayed address on a TURN server (18), with flag bit 3
//	  .. MAC (16), zeros while the client does not know the server's key
//
//	CHALLENGE  0xA1  server → client, to a REGISTER without a valid cookie
//	  0  type, 3 reserved
//	  4  cookie (16): BLAKE2s-128 keyed with a secret rotated every 2 minutes,
//	     over the client's source address and port; only a client that receives
//	     there learns it; valid until two rotations have passed (4 min at most)
//	  20 the server's public key (32)
//
//	REGISTERED 0xA2  server → client
//	  0  type
//	  1  flags: bit 0 a TURN section follows
//	  2  2 reserved
//	  4  the address the server saw the REGISTER from
//	  22 TTL in seconds (2)
//	  24 the REGISTER's timestamp (8)
//	  32 TURN section, to clients that allow relay when the server has TURN:
//	       n (1, at most 4) TURN servers, each transport (1: 1 UDP, 2 TCP, 3 TLS)
//	       and address (an unspecified IP means the rendezvous server's);
//	       username length (1), username; password length (1), password
//	       (coturn use-auth-secret credentials, see package relay)
//	  .. MAC (16)
//
//	INTRODUCE  0xA3  client → server
//	  0  type, 3 reserved
//	  4  PeerID (32)
//	  36 target PeerID (32)
//	  68 timestamp (8)
//	  76 MAC (16)
//
//	PEER       0xA4  server → both clients of an introduction, at the same moment, once both asked
//	  0  type
//	  1  flags: bits 0–1 the other peer's NAT mapping, bit 2 pushed (this client did not
//	     ask; never set now that both must ask, see Consent),
//	     bit 3 the other peer allows relay, bit 4 its relayed address follows the
//	     candidates, bit 5 it registered over TCP (its UDP is blocked)
//	  2  reserved
//	  3  n: host candidates of the other peer, at most 8
//	  4  the other peer's PeerID (32)
//	  36 the timestamp of this client's INTRODUCE (8)
//	  44 the other peer's registered (public) address
//	  62 n × address
//	  .. the other peer's relayed address (18), with flag bit 4
//	  .. MAC (16), with the recipient's key
//
//	UNKNOWN    0xA5  server → client: the target is not registered
//	  0  type, 3 reserved
//	  4  target (32)
//	  36 the introduction's timestamp (8)
//	  44 MAC (16)
//
//	ASK        0xA6  server → the target of an introduction it has not asked for itself
//	  0  type
//	  1  flags: bits 0–1 the asker's NAT mapping, as in REGISTER
//	  2  2 reserved
//	  4  the asker's PeerID (32)
//	  36 the introduction's timestamp (8)
//	  44 the asker's registered (cookie-verified) address (18)
//	  62 MAC (16), with the recipient's key
//
// A client registers on start, refreshes every 20 s (under Linux
// conntrack's 30 s UDP timeout, so the mapping toward the server stays
// open for ASKs and introductions), and counts as gone 60 s after its last
// refresh. The first registration takes two round trips (challenge, then
// register with the cookie); later ones one. A server that restarted
// knows nobody and drops INTRODUCEs from peers not registered with it; a
// client waiting for an introduction that has heard nothing from the
// server for 5 s registers again at once (at most once a refresh
// interval) and asks again, rather than waiting for its next refresh.
//
// # Consent
//
// The server introduces two peers only when both asked for it: an
// INTRODUCE from A naming B tells A nothing while B has not asked for A.
// The server keeps A's request (its consent) for 10 s after its last
// INTRODUCE, at most 16 outstanding per peer (the oldest gives way), and
// sends B an ASK: who asks, and the address A registered from, which A
// already exposes to whoever it sends to. If B consents, its client calls
// Introduce(A) (ClientConfig.OnAsk); B's INTRODUCE then finds A's request
// standing and the server sends PEER to both at once, with Pushed clear
// in both, and forgets both requests. If B refuses it says nothing, and A
// is told nothing: its attempt times out as an unanswered Steam session
// request does. A's retries refresh its request but ask B again at most
// once a second, and B is sent at most 10 ASKs a second (burst 20) from
// all askers together, so a swarm of identities cannot flood B through
// the server. An INTRODUCE naming an unregistered peer is answered with
// UNKNOWN, as before.
//
// # TCP and TURN
//
// With ServerConfig.Listeners the service also listens on TCP, normally at
// the UDP port, for clients whose network drops UDP. Each message then
// travels in a frame: 0xBF, a 2-byte big-endian length, the message. The
// server answers a TCP-registered client and sends its ASKs and
// introductions on its connection, and tells peers introduced to it that it is TCP-only.
//
// With ServerConfig.TURN the server issues TURN credentials (in REGISTERED)
// to registered clients that allow relay, for its embedded TURN server or
// an external one such as coturn with the same secret. The embedded server
// shares the first UDP socket of each address family (Conns[0], the first
// address given to Listen, and the first of the other family) and the TCP
// listeners: STUN messages other
// than Binding requests and TURN ChannelData (first byte 0x40–0x7F) go to
// it, and a TCP connection whose first byte is STUN's or ChannelData's is
// handed to it whole. TURN answers an unauthenticated Allocate with a 401
// carrying a nonce and realm, as every TURN server does: about 90 bytes for
// a 20-byte request. That is TURN's own amplification, bounded by the
// realm's length, and is one of two exceptions to the rule below (the other
// is STUN's, see STUN).
//
// The embedded server relays over IPv4 and IPv6: an allocation made over
// IPv6 gets an IPv6 relayed address (from the relay's RelayIP6, by default
// the IPv6 socket's IP), one over IPv4 an IPv4 one, unless its
// REQUESTED-ADDRESS-FAMILY asks otherwise (see package relay, IPv6). A
// client is told the TURN addresses of the family it registered over
// first, UDP then TCP, at an unspecified IP ("the server's address as you
// reach it"), then the other family's, at an explicit IP (that family's
// relay IP, the host's public one, or else the TURN socket's own), which
// it reaches if it is dual-stack: four at most, the limit REGISTERED has
// always had, so older clients read the list too. gamewire's client takes
// the first it can use (UDP first), so a peer registered over IPv6 is
// relayed over IPv6, where only peers with IPv6 reach its relayed address;
// it moves down the list when an allocation fails, as an older client that
// cannot reach an IPv6 TURN server does. External Servers are told as
// they are, whatever the client's family.
//
// # Abuse
//
// Nothing unauthenticated is answered with more bytes than it carried: a
// CHALLENGE (52 bytes) answers a REGISTER of at least 76; a STUN answer is
// trimmed to the request's size (see below). Bad messages are dropped and
// counted (Stats); so are UDP datagrams over 2048 bytes (Oversized), which
// no client sends unfragmented: the reader takes one byte more than that,
// so a longer datagram is never parsed cut short. "Per IP" below means per IPv4 address or IPv6 /64;
// each per-IP table holds 4096 sources per 2048 of MaxPeers (at most 64
// such shards), and a source it has no room for is refused.
//
// Registration. A REGISTER whose cookie does not match its source address
// costs one keyed hash and is answered with a CHALLENGE, at most 20 a
// second per IP (burst 40), so spoofed floods do not make the server a
// steady sender toward anyone. A cookie is bound to the source address
// and port and valid for at most two rotations of its secret (4 min): a
// peer whose address changed is challenged at the new one first, then
// registers there at once. REGISTERs with a valid cookie are limited to
// 10 a second per IP (burst 20). One from a PeerID the server has no key
// for costs a Diffie-Hellman, at most 20 a second per IP. A peer's refresh
// from the origin it is registered at (the same socket and address, or
// the same TCP stream) sooner than 1 s after its last accepted one is
// dropped, so REGISTERED (and the TURN credentials in it) cannot be
// farmed at line rate; a REGISTER from a new origin is not held to that.
// An IP holds at most MaxPeersPerIP live registrations (64 by default): a
// new PeerID registering from it, or a registered one moving to it, is
// refused past that, before any Diffie-Hellman. The server holds at most
// MaxPeers registrations (100000 by default).
//
// Expiry. A registration lasts TTL (60 s by default) past its last
// accepted REGISTER. Expired ones are evicted from an index ordered by
// expiry, never by scanning: on every REGISTER and INTRODUCE, on Stats,
// and every second by a sweep. An evicted registration leaves a tombstone
// for 4 min (two cookie rotations, the longest a cookie of a replayed
// REGISTER stays valid) with its key and last timestamps, so replays of
// its messages stay refused and a returning peer costs no Diffie-Hellman;
// at most MaxPeers tombstones are kept, the oldest giving way.
//
// Introductions. An INTRODUCE is acted on only when it comes from the
// origin its sender is registered at (else it is dropped and counted,
// Unverified, and does not move the registration), with a timestamp past
// the sender's last; at most 20 a second per peer and 20 a second per IP
// (burst 40 each). A peer learns another's addresses only when both asked
// (Consent); ASKs are limited to one a second per pair and 10 a second
// (burst 20) per target, and a peer holds at most 16 standing requests.
//
// # STUN
//
// Binding requests (RFC 5389) get a success response with
// XOR-MAPPED-ADDRESS and, while they fit in the request's size or in 44
// bytes, whichever is more, OTHER-ADDRESS (RFC 5780, when the server has
// an alternate address), RESPONSE-ORIGIN and FINGERPRINT. 44 bytes is the
// bare answer to an IPv6 source (header and XOR-MAPPED-ADDRESS), which a
// STUN server must send to unpadded 20-byte requests (RFC 5389 clients do
// not pad): the second exception to the rule on answer sizes, at most 24
// bytes over what the request carried. An IPv4 answer fits OTHER-ADDRESS
// in it as well, which is all an unpadded RFC 5780 client needs. Other
// STUN methods are not served here.
//
// The server's sockets come in groups (ServerConfig.Conns), one per
// primary address given to Listen, each of one address family: a plain
// one, or four for RFC 5780 (the primary and alternate IPs and ports
// combined). CHANGE-REQUEST is honoured within the group the request
// arrived at: the answer leaves from the other IP, the other port, or
// both, for RFC 5780's filtering tests, and OTHER-ADDRESS names the
// group's socket with the other IP and port. An IPv6 request is thus
// answered from, and told of, IPv6 addresses only, and a group without an
// alternate refuses a CHANGE-REQUEST that sets a flag (one with none is
// answered as if it were absent). IPv6 sockets are IPv6-only, so
// 0.0.0.0 and [::] at one port coexist.
//
// A Binding request without the magic cookie is RFC 3489's (Debian's stun
// client, old VoIP gear): it is answered in RFC 3489's form, its 16-byte
// transaction ID echoed, with MAPPED-ADDRESS, then CHANGED-ADDRESS (the
// alternate address, as OTHER-ADDRESS) and SOURCE-ADDRESS while they fit,
// under the same bound: the larger of the request's size and 44 bytes.
// RFC 3489 requests are 20 or 28 bytes, so an IPv4 client gets
// MAPPED-ADDRESS and CHANGED-ADDRESS, all its tests need, and an IPv6 one
// MAPPED-ADDRESS alone. CHANGE-REQUEST is honoured as above (with no flags
// set, as those clients send it, on any server); a request with
// RESPONSE-ADDRESS, which asks for the answer to go elsewhere, is dropped:
// honouring it would aim the server at any address.
//
// # Goroutines and locks
//
// The Server runs a reader per UDP listener, an accept loop per TCP
// listener with a goroutine per connection, and a sweeper that expires
// registrations; the peer table, limiters and counters are under its mu,
// and datagrams are written after mu is released. A Client has no
// goroutine: the owner calls Handle from its reader and Tick from its
// timer. Its mu is a leaf: what a REGISTER says of the node is gathered
// before it is taken, Send and every callback (OnPeer, OnAsk, OnUnknown,
// OnTURN, OnRegistered) run after it is released, so a callback may call
// the client again.
package rendezvous
