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
// A Client runs on a socket of its own: a UDP socket ("udp4", or "udp6"
// for a server at an IPv6 address), or a TCP or TLS connection to the
// server (RFC 6062 framing through turn.NewSTUNConn). It
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
// relayed, refusals). It relays UDP only, over IPv4 and IPv6 (below);
// TCP and TLS are transports clients reach it over.
//
// # IPv6
//
// ServerConfig.RelayIP is the IPv4 address put in relayed addresses and
// RelayIP6 the IPv6 one (RelayBind and RelayBind6 are what relay sockets
// bind to; MinPort and MaxPort bound the ports of each family). An
// Allocate that carries REQUESTED-ADDRESS-FAMILY (RFC 6156) is relayed in
// the family it asks for, over a transport of either family, when the
// server has a relay IP of it; one without the attribute is relayed in
// the family of its client's transport, the source address of its UDP
// datagrams (IPv4-mapped is IPv4, so one dual-stack socket serves both)
// or of its TCP connection, when the server has a relay IP of that
// family, and in the other family otherwise. Relay sockets are of one
// family ("udp6" ones IPv6-only), so an allocation reaches peers of its
// own family only: a permission or channel bind for one of the other,
// IPv4-mapped addresses included, is refused (403) and counted in
// ServerStats.DeniedPeers. Relay to relay on one server therefore works
// between allocations of one family, not across them.
//
// The default departs from RFC 6156 (and RFC 8656), under which an
// Allocate without REQUESTED-ADDRESS-FAMILY gets IPv4 whatever its
// transport: over IPv6 it gets IPv6 here (IPv4 when RelayIP6 is unset).
// This is coturn's allocation-default-address-family=keep, which coturn
// marks as breaking RFC 6156. It is chosen because pion's client, which
// Client is, cannot send the attribute, so a gamewire peer over IPv6
// would otherwise never get an IPv6 relayed address. A client that
// follows the RFC to the letter and sends no attribute over IPv6 expects
// IPv4 and may refuse what it gets: coturn's turnutils_uclient does
// (measured, rendezvous TestCoturnClientsOverIPv6). It gets IPv4 by
// asking for it. ADDITIONAL-ADDRESS-FAMILY (RFC 8656's dual allocation)
// is not read: an allocation has one relayed address.
//
// pion/turn v4.1.4 reads no REQUESTED-ADDRESS-FAMILY and asks its relay
// address generator for "udp4" every time. Measured
// (TestPionIgnoresRequestedAddressFamily), it lets the attribute, and any
// other unknown comprehension-required attribute, through without the
// 420 (Unknown Attribute) RFC 8489 asks for (it refuses DONT-FRAGMENT
// only): bare, it relays an Allocate that asks for IPv6 over IPv4.
// Server reads the attribute itself, before pion. pion's generator is
// per socket or listener, and handles a socket's datagrams one at a time,
// so a UDP socket's generator allocates in the family of the datagram
// being handled. A listener's connections are split between two of
// pion's listeners, one per family, by their first frame, which is the
// client's first Allocate; a later allocation on a TCP connection that
// asks for the other family is refused. An authenticated Allocate (its
// MESSAGE-INTEGRITY checks out under the secret, its username has not
// expired) asking for a family the server has no relay IP for, or a value
// RFC 6156 does not define, is answered 440 (Address Family not
// Supported), and a malformed attribute 400, signed, and counted in
// ServerStats.FamilyRefused. The first, unauthenticated Allocate is
// pion's (401) whatever it asks: authentication comes first, as RFC 8656
// orders it.

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
// The server's own addresses (RelayIP, RelayIP6, RelayBind, RelayBind6,
// the local addresses of its sockets and listeners,
// ServerConfig.OwnAddrs) are denied whatever AllowPeers says, save one
// case: relay to relay. Two peers that both relay through one server send
// to each other's relayed addresses, which are the server's RelayIP (or
// RelayIP6), so the relayed address (IP and port) of a live allocation on
// this server is always reachable, and no other port of the server is.
// All of it holds for IPv6 allocations as for IPv4 ones.
//
// The policy is enforced twice. pion's PermissionHandler refuses
// CreatePermission and ChannelBind for a denied IP, or one of the other
// family (it sees no port, so RelayIP and RelayIP6 pass there), and every
// relay socket checks the destination family, IP and port of each
// datagram it writes. Refusals are counted in
// ServerStats.DeniedPeers. Datagrams from peers are admitted by pion's
// permissions, which the policy has already filtered.
package relay
