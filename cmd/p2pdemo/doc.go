// Command p2pdemo runs gamewire for real: the server side (rendezvous,
// STUN and TURN on one host) and interactive or scripted peers, so two
// players on different networks connect; a self-contained demo on
// loopback; and, as root, the NAT lab with real peer processes.
//
//	p2pdemo demo                                  # everything in one process, loopback only
//	p2pdemo server --listen 203.0.113.7:3478      # on a public host
//	p2pdemo server --listen 203.0.113.7:3478,[2001:db8::7]:3478 \
//	    --listen2 203.0.113.8:3479,[2001:db8::8]:3479  # both families, RFC 5780 in each
//	p2pdemo server --listen [2001:db8::7]:3478    # IPv6 only
//	p2pdemo peer --server KEY@203.0.113.7:3478    # on each player's machine
//	p2pdemo peer --server KEY@203.0.113.7:3478,[2001:db8::7]:3478  # a dual-stack server
//	p2pdemo lab                                   # root: the NAT matrix with real peers
//
// The server's embedded TURN relay runs on the first --listen address of
// each family and relays a client in the family it reaches the relay by:
// IPv4 clients get IPv4 relayed addresses, IPv6 ones IPv6 addresses
// (--relay-ip takes the public IP of each, "203.0.113.7,2001:db8::7";
// the --relay-ports range holds in each family). Peers are told the TURN
// address of the family they registered over first, then the other's. An
// IPv6 --listen address of [::] without an IPv6 --relay-ip relays its
// clients over IPv4, and the banner says so.
//
// A peer prints its PeerID, and once registered its NAT type as
// Node.NATType reports it ("nat: Moderate (public ..., mapping ...,
// filtering ..., port mapping ..., IPv6 ...)"). It asks its router for a
// port mapping (PCP, NAT-PMP, UPnP IGD) unless --no-portmap.
//
// Every subcommand explains its flags with -h.
package main
