// Command p2pdemo runs gamewire for real: the server side (rendezvous,
// STUN and TURN on one host) and interactive or scripted peers, so two
// players on different networks connect; a self-contained demo on
// loopback; and, as root, the NAT lab with real peer processes.
//
//	p2pdemo demo                                  # everything in one process, loopback only
//	p2pdemo server --listen 203.0.113.7:3478      # on a public host
//	p2pdemo server --listen 203.0.113.7:3478,[2001:db8::7]:3478 \
//	    --listen2 203.0.113.8:3479,[2001:db8::8]:3479  # both families, RFC 5780 in each
//	p2pdemo peer --server KEY@203.0.113.7:3478    # on each player's machine
//	p2pdemo lab                                   # root: the NAT matrix with real peers
//
// Every subcommand explains its flags with -h.
package main
