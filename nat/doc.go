// Package nat finds a direct path between two peers through their NATs:
// STUN over the node's shared socket, host candidates, NAT behaviour
// discovery, and connectivity checks (probes) that punch holes, learn
// peer-reflexive addresses and, when one side's NAT maps per destination,
// run the birthday approach; and the TCP sockets of TCP hole punching
// (ListenTCP, DialTCP: dials leave from the listener's port). It knows
// nothing of sessions: package p2p feeds it datagrams and acts on the
// paths it validates. Nor does it know the rendezvous protocol: it imports
// no other gamewire package, and package rendezvous puts its Mapping on the
// wire as it is (rendezvous.Mapping is nat.Mapping).
//
// # STUN
//
// STUN sends Binding requests (RFC 5389, built with github.com/pion/stun/v3)
// over a socket that carries other protocols too: the owner reads the
// socket and passes datagrams whose first byte is 0–3 to STUN.Handle.
// A query's first request is padded (RFC 5780 PADDING) so servers that
// never answer with more bytes than a request carried (gamewire's) still
// fit every attribute; its retransmissions alternate unpadded and padded
// copies, since servers that do not know PADDING (RFC 3489 ones such as
// stund, and RFC 5389 ones without RFC 5780) must refuse a request that
// carries it. Answers in RFC 3489's form (MAPPED-ADDRESS, CHANGED-ADDRESS)
// are understood as well.
// Discover runs RFC 5780's mapping test (the public address seen by two
// server addresses: the same means endpoint-independent mapping, different
// means endpoint-dependent, "symmetric"): the primary's and its
// OTHER-ADDRESS, else the first extra server to answer; all are asked at
// once, so dead ones cost no waiting. When the server has an alternate
// address, DiscoverFiltering runs the filtering tests (CHANGE-REQUEST).
//
// # Candidates
//
// A peer's candidates are its interface addresses (host), the address the
// rendezvous server sees it at (server-reflexive) and addresses its probes
// arrive from (peer-reflexive). Priority ranks them as ICE does (host 126,
// peer-reflexive 110, server-reflexive 100) and puts host addresses on one
// of this node's own subnets first: the same LAN beats the public path.
//
// # Probes and punching
//
// A Punch checks the pairs toward one peer: one probe every 20 ms (RFC
// 8445 paces at 50 ms), the best due candidate first, each retried every
// 200 ms for 3 s, then every second. Probes carry a MAC under a key derived
// from X25519 between the two identities (see probe.go for the bytes), so
// only the peer can make them: an off-path attacker can neither fake a
// working path nor steer a session to its own address. A probe is answered
// with an ack to where it came from and triggers a probe back that way
// (learning peer-reflexive addresses, the way a symmetric NAT's new port is
// found); an ack validates the path it came back on, and the owner hears of
// every validated path better than the last (OnPath).
//
// When one side's NAT maps per destination (endpoint-dependent) and the
// other's does not, ordinary checks fail against a port-restricted NAT, so
// after 400 ms without a path the punch uses the birthday approach: the
// endpoint-dependent side opens 256 sockets, each sending toward the
// peer's public address (256 new mappings), and the other side probes ports
// of that public IP, 500 a second, at most 4096: alternately the ports just
// above the peer's public port, in order (port prediction: many NATs
// allocate in sequence, so the new mappings sit there), and random ports
// (the birthday approach, for NATs that allocate at random, as Linux's
// fully-random masquerade does). Each random probe hits a mapping with
// probability 256/64512, so 1024 random probes find one 98 % of the time and
// 2048 99.97 %. Both sides endpoint-dependent
// cannot be punched this way (about 170000 probes); that pair needs a relay.
//
// # Priming and stalls
//
// Before the first check to an address that may be a peer NAT's, a punch
// sends primers: the same probe with TTL 2 and 3 (TTLSocket), which open
// this side's NAT toward the peer and die before the peer's NAT; the full
// check follows PrimeWait later. A NAT that accepts inbound datagrams to
// its own address would otherwise turn a peer's check that arrives first
// into a conntrack entry that moves this side's mapping (the conntrack
// clash). Hold primes without checking until the introduction; the
// birthday approach's hard side opens its mappings with primers. When both
// NATs map endpoint-independently and the peer's public addresses stay
// unanswered for 250 ms, OnStall asks the owner to heal from a fresh port
// (AddSocket), and the stalled pairs go quiet for 65 s so the stale
// entries expire.
//
// # Goroutines and locks
//
// Each Punch runs one goroutine of its own (the check schedule, the
// birthday spray); its state is under its mu, which is a leaf: sockets are
// written, OnPath is called and extra sockets are closed only after mu is
// released. HandleProbe runs on the caller's goroutine (the owner's
// reader) under the same rule. A STUN client's transactions are under its
// own leaf mu; Handle completes them on the reader's goroutine. Discover
// and DiscoverFiltering block their caller until ctx ends or the tests
// are done; Discover asks each server from a goroutine of its own, and
// cancels and waits for them all before it returns.
package nat
