// Package netlab builds real NAT topologies out of Linux network
// namespaces, veth pairs, bridges and nftables, for tests and for the
// demo's `lab` command. It needs root (Available says whether it can run).
// The kernel does all forwarding and NAT; Go code only opens sockets inside
// the namespaces (Host.Do, ListenUDP, Dial, ...).
//
// # Topology
//
//	                public namespace "<p>pub": bridge <p>br = 203.0.113.1/24
//	                (the "internet": forwards nothing else, so traffic to
//	                 addresses outside the lab is dropped silently)
//	  ┌──────────────────┬─────────────┴──────────┬───────────────────────────┐
//	<p>srv             <p>u1                    <p>u2                   <p>u3h1, <p>u3h2
//	  │                  │                        │                           │
//	server "<p>srv"    site 1: NAT "<p>a-nat"   site 2: carrier "<p>b-cgn"  site 3 (NATNone):
//	203.0.113.10/24    wan 203.0.113.20         wan 203.0.113.21            hosts "<p>c-h1",
//	203.0.113.11/24    lan bridge 10.1.0.1/24   cgl 100.64.2.1/24           "<p>c-h2" with
//	                     │         │              │                         203.0.113.22, .23
//	                   h1 10.1.0.2 h2 10.1.0.3  home NAT "<p>b-nat"
//	                   ("<p>a-h1") ("<p>a-h2")  wan 100.64.2.2/24
//	                                            lan bridge 192.168.2.1/24
//	                                              │
//	                                            h1 192.168.2.2
//
// <p> is the lab's prefix ("gw" + 4 random hex digits + "-") followed, in
// namespace names, by the Options.Name tag and a dash. Every namespace and
// every interface the lab makes starts with the prefix (interface names
// are prefix + at most 8 bytes, within the kernel's 15). Site i (from 1)
// uses LAN 10.i.0.0/24 (one NAT) or 192.168.i.0/24 behind 100.64.i.0/24
// (double NAT, RFC 6598 carrier space); LAN hosts are .2, .3, ... with the
// router at .1 as default gateway. Public addresses: router 203.0.113.1,
// server 203.0.113.10 (ServerAddrs()[0], primary) and 203.0.113.11
// ([1], the RFC 5780 alternate), sites from 203.0.113.20 up, one per NAT
// site (its outermost router's WAN) and one per NATNone host.
// 198.51.100.0/24 is not used. Without Options.IPv6 the lab is IPv4 only:
// IPv6 is off in every namespace (disable_ipv6=1).
//
// # IPv6 (Options.IPv6, SiteConfig.IPv6)
//
// Modelled on an ISP giving global IPv6 behind stateful firewalls: no
// NAT66, every host has its own global address (Host.IP6), and the home
// router filters. Only documentation space (2001:db8::/32) is used:
//
//	2001:db8:100::/64       the public segment, on the same bridge as
//	                        203.0.113.0/24
//	2001:db8:100::1         the core router (the public namespace's bridge)
//	2001:db8:100::10, ::11  the server (ServerAddrs6, Server().IP6 = ::10)
//	2001:db8:100::N         the outermost router's WAN, or a NATNone host,
//	                        whose IPv4 address is 203.0.113.N (N's decimal
//	                        digits read as hex: .20 is ::20)
//	2001:db8:i::/48         site i (i in hex: site 10 is 2001:db8:a::/48),
//	                        routed by the core to the outermost WAN
//	2001:db8:i::/64         its LAN (Site.Prefix6): home router ::1,
//	                        hosts ::2, ::3, ... (like 10.i.0.2, .3, ...)
//	2001:db8:i:1::/64       behind a carrier NAT: the transit link, carrier
//	                        ::1, home router's WAN ::2
//
// The public namespace is the IPv6 core router: it forwards IPv6
// (forwarding=1) between its bridge and itself only (table ip6 gwcore
// drops anything with another input or output interface; it has no other
// links), has a route per site /48 (added with the site, removed when
// AddSite fails) and a blackhole default route, so IPv6 to addresses
// outside the lab is dropped silently, as IPv4 is. Hosts on the segment
// (server, routers' WANs, NATNone hosts) reach each other on-link and
// route the rest via ::1. The core's redirects are dropped (its output
// chain drops nd-redirect) and every lab namespace ignores redirects
// (accept_redirects=0). IPv6 namespaces have no router advertisements,
// autoconfiguration or solicitations (accept_ra=0, autoconf=0,
// router_solicitations=0) and no duplicate address detection
// (accept_dad=0, addresses added with nodad); AddSite and New return
// only once every interface with a global address also has its
// link-local one (a router's neighbour solicitations for datagrams it
// forwards come from it: without it the first is not sent, and the
// datagrams wait a second for the next). IPv6 bridges have a fixed MAC
// (a bridge's own otherwise follows its lowest port's and would move
// under its neighbours' caches when a site is added) and no multicast
// snooping.
//
// A site with IPv6None keeps IPv6 off in its namespaces. IPv6Dual hosts
// have their IPv4 LAN address as before plus the global one; IPv6Only
// hosts have no IPv4 address or route (their router keeps its IPv4 WAN
// and NAT, unused; a NATNone IPv6Only site reserves its octets and has no
// PublicIP). ListenUDP(":0") on an IPv6Only host gives a udp6 socket.
// With an Outer NAT the carrier forwards IPv6 plainly (no filter: CGNAT
// for IPv4, native IPv6, as mobile carriers do) and routes the LAN /64 to
// the home router, which holds the firewall. Hairpin, AcceptInbound,
// StaleEntry and Probe are IPv4 NAT features.
//
// The home router's firewall (table ip6 gwfw6), stateful as home routers
// are:
//
//	forward: policy drop; ct state established,related accept;
//	         ICMPv6 errors (destination-unreachable, packet-too-big,
//	         time-exceeded, parameter-problem) and echo accept;
//	         iifname LAN oifname WAN accept
//	         [IPv6Open: iifname WAN oifname LAN accept]
//	input:   policy drop; established,related, lo and ICMPv6 (neighbour
//	         discovery, echo) accepted
//
// Inbound UDP and TCP thus pass only as replies to a flow the host
// started, to its exact 5-tuple: address-and-port-dependent filtering
// (another port or address of the same peer is dropped). Two hosts behind
// such firewalls reach each other once both have sent (the first
// datagram opens its sender's firewall and is dropped by the peer's).
// IPv6Open lets every kind of inbound IPv6 through. The firewall's
// entries are conntrack's: FlushConntrack drops them (every family),
// ChangeMappings leaves the table alone, UDPTimeout applies to them.
//
// # NAT kinds (nftables, inside each router's namespace, table ip gwnat)
//
// Every NAT router forwards (ip_forward=1), sends no ICMP redirects, has
// no reverse-path filter, and filters like a home router:
//
//	forward: policy drop; ct state established,related accept;
//	         iifname LAN accept; iifname WAN ct status dnat accept
//	input:   policy drop; established,related, lo and ICMP accepted
//	         (unmapped inbound datagrams vanish, no ICMP errors)
//	postrouting srcnat: oifname WAN ip saddr LAN-net snat ip to PUBLIC
//
// Filtering of everything else is conntrack's: only replies to a flow's
// exact 5-tuple pass. A filter chain at postrouting priority 200, after
// srcnat, sees each outgoing UDP datagram with its mapped port and records
// the mapping in a dynamic map, fc (mapped port -> LAN address . LAN port,
// taken from the conntrack tuples: "ct original ip saddr . ct original
// proto-src" for flows the LAN started, the reply tuple for flows let in
// by dnat), and, for address-restricted, a dynamic set seen (remote
// address . mapped port). Entries live as long as a UDP conntrack entry:
// UDPTimeout, or 120 s by default, refreshed by outgoing datagrams.
//
//   - port-restricted (EIM + APDF): plain "snat ip to PUBLIC". Linux keeps
//     the source port when it can (port preservation) and, for a new
//     destination, reuses the socket's existing mapping: EIM.
//   - symmetric (APDM + APDF): "snat ip to PUBLIC fully-random": a random
//     port per conntrack entry, i.e. per destination address and port.
//   - full-cone (EIM + EIF): port-restricted plus, in prerouting (dstnat),
//     "iifname WAN meta l4proto udp dnat ip to udp dport map @fc": any
//     datagram to a live mapping reaches the LAN socket behind it.
//   - address-restricted (EIM + ADF): as full-cone, but only for sources
//     that socket has sent to: "iifname WAN meta l4proto udp ip saddr .
//     udp dport @seen dnat ip to udp dport map @fc".
//   - Hairpin: "iifname LAN ip daddr PUBLIC meta l4proto udp dnat ip to udp
//     dport map @fc" plus "oifname LAN ip saddr LAN-net ct status dnat snat
//     ip to PUBLIC" (same port range and randomness as the main snat), so
//     the receiver sees the sender's public mapping (RFC 4787 REQ-9).
//     Hairpinned datagrams are not filtered by the NAT kind. Without
//     Hairpin, LAN datagrams to the public address hit the input policy and
//     are dropped (the Linux default). With two layers both hairpin; the
//     home NAT's filter then applies to what the carrier reflects, so
//     punching through both layers takes a round of datagrams each way.
//   - Double NAT: the home router's WAN is on the carrier's LAN; each layer
//     runs the rules of its own kind. Behaviour composes: every layer EIM
//     gives EIM, any symmetric layer gives APDM; the strictest filter wins.
//
// Full-cone, address-restricted and hairpin behaviour applies to UDP; TCP
// gets port-restricted NAT in every kind. Limits: Linux SNAT may give two
// LAN hosts the same external port towards different destinations ("port
// overloading", only when both use the same local port); fc then holds the
// first and inbound datagrams go to that host.
//
// AcceptInbound (any kind, every layer) adds "iifname WAN meta l4proto
// udp accept" to the input chain: the router takes unsolicited UDP to its
// own address, as OpenWrt's fw4 and a bare MASQUERADE box do. Its
// conntrack entry (peer -> PUBLIC:port, UNREPLIED) is then confirmed, and
// a LAN datagram to that peer that leaves later clashes with the entry's
// tuple, so SNAT maps it to another port (TestAcceptInboundClash). Each
// retry the peer sends refreshes the stale entry (30 s unreplied).
//
// Site.ChangeMappings replaces each layer's table (one atomic nft
// transaction) with the SNAT restricted to the next port range, 20000-29999
// then 10000-19999 alternately (outside the ephemeral range 32768-60999,
// so every socket gets a new external port; symmetric layers stay fully
// random), and flushes conntrack. Site.FlushConntrack empties fc and seen
// and deletes every conntrack entry (a ctnetlink flush sent from a thread
// inside the router's namespace).
//
// UDPTimeout sets nf_conntrack_udp_timeout and _stream inside the NAT
// namespaces (these sysctls are per namespace; the tests check the root's
// are unchanged).
//
// # Hops (bridge family, in the public namespace)
//
// Table bridge hops makes the public segment count as Options.Hops routers
// (DefaultHops, 4): "ip ttl <= HOPS drop", then one rule per TTL value
// setting it to TTL-HOPS (nft cannot subtract from a header field). Each
// NAT layer is one more hop (it forwards). A datagram from behind one NAT
// thus needs TTL HOPS+2 to reach any other host on the segment, and one
// with TTL 2 (3 behind a double NAT) passes its own NAT layers and dies on
// the segment: the low-TTL priming that opens a NAT's mapping toward a
// peer without reaching the peer's NAT (TestHops).
//
// IPv6 loses the same HOPS of hop limit crossing the segment, whichever
// way it crosses: bridged (on-link, e.g. a site to the server) the hops
// table does to "ip6 hoplimit" what it does to the TTL (sparing
// neighbour discovery and MLD, whose hop limits of 255 and 1 receivers
// check, and link-scope multicast); routed by the core (to a site's /48:
// server to site, site to site) the core's forwarding takes one and table
// ip6 gwcore the other HOPS-1, after dropping in prerouting, without
// ICMP, what would not last. Each router (home, carrier) is one more hop,
// so priming works over IPv6 as over IPv4: hop limit 2 (3 behind a
// carrier) opens the sender's firewall and dies on the segment
// (TestIPv6Hops).
//
// # Impairments (bridge family, in the public namespace)
//
// Each site has a table bridge site<i> whose forward chain matches the
// site's bridge ports both ways (iifname and oifname): "ether type ip
// numgen random mod 1000 < N drop" for LossPermille/SetLoss (ARP is not
// dropped; 1000 is a plain drop), "meta l4proto udp drop" for BlockUDP,
// "ip daddr X drop" and "ip saddr X drop" for BlockAddr. Loss is thus on
// the wire: a datagram lost on the uplink has still created its NAT
// mapping. A site with IPv6 has the same rules for ether type ip6 (BlockAddr
// takes IPv6 addresses), after one accepting neighbour discovery and MLD,
// and runs them on the bridge's input and output hooks too, where the
// core router takes frames from the site's ports and sends frames to
// them. There is no delay (tc netem is unavailable here; a test needing
// delay runs a userspace proxy).
//
// # Use
//
//	l := netlab.NewForTest(t, netlab.Options{Name: "p2p"}) // or New, then Close
//	home, err := l.AddSite("home", netlab.SiteConfig{NAT: netlab.NATPortRestricted})
//	c, err := home.Hosts[0].ListenUDP(":0") // a socket behind the NAT
//	b, err := l.Probe(home.Hosts[0])        // measured mapping, filtering, hairpin
//
// Tests call Require (or NewForTest): it skips with "netlab unavailable:
// <reason>" where labs cannot run, and fails instead when
// GAMEWIRE_REQUIRE_LAB=1, as CI sets it.
//
// # Safety rules
//
//   - Nothing is created or changed in the root namespace: every veth pair
//     is created by `ip -n A link add X type veth peer name Y netns B`, so
//     both ends are born inside lab namespaces; bridges, addresses, routes
//     and nftables tables are made inside lab namespaces; sysctls are
//     written by a thread that has switched into the lab namespace and
//     checked (nsfs inode) that it is there. The only root-namespace
//     action is creating and deleting the named namespaces.
//   - No lab namespace is linked to a real interface; traffic stays on
//     203.0.113.0/24, 2001:db8::/32 and the private LANs inside the lab.
//   - br_netfilter, if loaded, would run the IP hooks on bridged frames;
//     its bridge-nf-call-* sysctls are turned off in every lab namespace.
//   - Close removes every namespace the lab made (which removes its links,
//     bridges, rules and conntrack state) and any other namespace with the
//     prefix; New and AddSite undo what they made when they fail; sweep
//     removes leftovers of a crashed process by prefix.
//   - Host.Do runs its function on a separate goroutine locked to an OS
//     thread that is switched into the namespace and back; a thread that
//     cannot switch back is never reused (its goroutine ends locked).
//   - Sockets opened in a lab stay in their namespace; close them, and end
//     processes started with Host.Command, before Close.
package netlab
