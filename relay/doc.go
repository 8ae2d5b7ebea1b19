// Package relay is gamewire's TURN layer (RFC 8656) over
// github.com/pion/turn/v4: a client that holds one allocation on a TURN
// server and carries a node's datagrams through it, an embedded TURN server,
// and the time-limited credentials both share with coturn.
//
// # Credentials
//
// Credentials follow coturn's use-auth-secret scheme (the TURN REST API
// draft): the username is "expiry:user", expiry in unix seconds, and the
// password is base64(HMAC-SHA1(secret, username)). A deployment hands the
// same secret to the rendezvous server, which issues credentials to
// registered peers, and to its TURN server, the embedded one (Server) or a
// coturn started with use-auth-secret and static-auth-secret.
//
// # Client
//
// A Client runs on a socket of its own: a UDP socket, or a TCP or TLS
// connection to the server (RFC 6062 framing through turn.NewSTUNConn). It
// does not share the node's game socket, so TURN ChannelData and game
// packets are never told apart by guesswork (docs/ARCHITECTURE.md, "The first byte"): everything the
// client's socket reads is TURN, and everything the allocation delivers is
// a peer's datagram. Writes go through a bounded queue and a writer
// goroutine: a full queue drops the datagram (the channels layer above
// resends what was reliable), so a stalled TCP connection never blocks the
// node or grows memory without bound.
//
// A client knows when its allocation is dead and says so (Client.Dead,
// Client.Err, matching ErrDead): it refreshes the allocation itself every
// ClientConfig.CheckInterval (15 s), or at once on Client.Check, and a
// refresh unanswered for CheckTimeout (3 s) or refused (437 Allocation
// Mismatch, 403, anything but a stale nonce) kills it, as does a
// CreatePermission answered 437 or the end of its TCP or TLS connection.
// pion's own refresh timers (allocation, permissions, channel bindings)
// only log their failures; those log lines make the client check at once.
// A TURN server that restarted has forgotten every allocation: gamewire's
// answers nothing about them, coturn 437. A dead client refuses writes;
// its owner closes it and allocates again with a new one.
//
// Ownership: the reader goroutine owns the TURN client's inbound path, the
// relayed reader owns delivery to ClientConfig.Receive, the writer owns
// every write on the allocation, the checker owns the client's own
// refreshes (and the nonce they carry). Close stops all four.
//
// # Server
//
// Server is pion's TURN server with gamewire's defaults: use-auth-secret
// authentication, allocation caps, a peer address policy, relay sockets
// opened through a caller's ListenPacket (so they live in the right
// network namespace), and counters (allocations made and live, bytes
// relayed, refusals). It relays UDP only; TCP and TLS are transports
// clients reach it over.
//
// # Allocation caps
//
// Identities cost nothing, so credentials do not bound what one host
// takes. Allocations are capped per user (MaxPerUser, default 4; the user
// is the username's part after "expiry:", so reissued credentials share
// it), per client IP (MaxPerIP, default 32; an IPv6 client counts by its
// /64) and in all (MaxAllocations, default 10000), checked in pion's
// QuotaHandler. A granted check reserves the place at once, so Allocates
// racing on many TCP connections cannot all pass it; the reservation
// becomes the allocation or is given back when the request fails, and the
// counts drop when allocations end. Refusals (486) are counted in
// ServerStats.QuotaRefused, split by cause.
//
// # Revocation
//
// use-auth-secret credentials cannot be revoked by themselves: they hold
// until their expiry, and a TURN client cannot change them for the
// refreshes of a live allocation (pion's client keeps the username it
// started with), so their lifetime must outlast the longest relayed
// session. ServerConfig.Authorize ties them to something that can end:
// it is asked on every authenticated request after the expiry check, and
// a refusal fails the request and ends the allocations the requesting
// address holds under the username. The rendezvous server's embedded
// relay accepts a username only while its peer is registered there,
// under the server's current key.
//
// # Peer policy
//
// Anyone with credentials gets an allocation, and an allocation sends
// where its client asks: without a policy the server is an open UDP proxy
// into its own host and network. So relay sockets reach public addresses
// only. Denied by default: unspecified, loopback, RFC 1918, carrier-grade
// NAT (100.64.0.0/10), link-local (cloud metadata services live there),
// multicast, reserved (240.0.0.0/4 with broadcast), IPv6 unique-local,
// site-local and local-use NAT64, and these in IPv4-mapped, -compatible
// and -translated form; 6to4, NAT64 and Teredo addresses are judged by the
// IPv4 address they embed. ServerConfig.AllowPeers opens ranges (coturn's
// allowed-peer-ip), for a LAN or lab whose peers are private.
//
// The server's own addresses (RelayIP, RelayBind, the local addresses of
// its sockets and listeners, ServerConfig.OwnAddrs) are denied whatever
// AllowPeers says, save one case: relay to relay. Two peers that both
// relay through one server send to each other's relayed addresses, which
// are the server's RelayIP, so the relayed address (IP and port) of a live
// allocation on this server is always reachable, and no other port of the
// server is.
//
// The policy is enforced twice. pion's PermissionHandler refuses
// CreatePermission and ChannelBind for a denied IP (it sees no port, so
// RelayIP passes there), and every relay socket checks the destination IP
// and port of each datagram it writes. Refusals are counted in
// ServerStats.DeniedPeers. Datagrams from peers are admitted by pion's
// permissions, which the policy has already filtered.
package relay
