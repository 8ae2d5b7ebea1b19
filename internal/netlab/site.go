package netlab

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// NATKind is how a site's NAT maps and filters (RFC 4787 terms).
type NATKind string

const (
	NATNone           NATKind = "none"               // host directly on the public segment
	NATFullCone       NATKind = "full-cone"          // endpoint-independent mapping + endpoint-independent filtering
	NATAddrRestricted NATKind = "address-restricted" // EIM + address-dependent filtering
	NATPortRestricted NATKind = "port-restricted"    // EIM + address-and-port-dependent filtering (Linux masquerade)
	NATSymmetric      NATKind = "symmetric"          // address-and-port-dependent mapping (masquerade fully-random) + APDF
)

// natKinds lists every kind, NATNone first.
var natKinds = []NATKind{NATNone, NATFullCone, NATAddrRestricted, NATPortRestricted, NATSymmetric}

func (k NATKind) valid() bool { return slices.Contains(natKinds, k) }

// IPv6Mode is whether, and how, a site's hosts have IPv6 (needs
// Options.IPv6). IPv6 addresses are global: no NAT66, a stateful firewall
// in the site's (home) router instead (see doc.go).
type IPv6Mode string

const (
	// IPv6None: no IPv6, IPv6 is off in the site's namespaces.
	IPv6None IPv6Mode = ""
	// IPv6Dual: hosts have IPv4 behind the site's NAT, as without IPv6,
	// and a global IPv6 address (Host.IP6).
	IPv6Dual IPv6Mode = "dual"
	// IPv6Only: hosts have a global IPv6 address and no IPv4 address or
	// route at all (Host.IP is invalid). The site's routers keep their
	// IPv4 WAN and NAT, unused.
	IPv6Only IPv6Mode = "only"
)

// SiteConfig describes a site: its NAT layers, LAN hosts and impairments.
type SiteConfig struct {
	// NAT is the kind of the site's (home, inner) NAT; "" means NATNone:
	// the hosts sit on the public segment with public addresses.
	NAT NATKind
	// Outer, if not "" (or NATNone), puts a second NAT layer, a carrier-
	// grade NAT of this kind, between the site's NAT and the public
	// segment (double NAT / NAT444).
	Outer NATKind
	// Hairpin makes the site's NAT layers hairpin: a LAN host sending UDP
	// to the site's public address and a live mapped port reaches the LAN
	// host behind that mapping, with the sender's public mapping as the
	// source. With two layers both hairpin (each for its own external
	// address), since only that lets a LAN host reach the site's public
	// address. Without it such datagrams are dropped (the Linux default).
	Hairpin bool
	// AcceptInbound makes the site's NAT routers accept, on their own
	// input, UDP from the WAN that no mapping claims, as OpenWrt's fw4 and
	// a Linux box with only a MASQUERADE rule do (without it they drop
	// it). Conntrack then records such a datagram as a flow to the router
	// itself, and a LAN host's datagram to its sender that leaves later
	// clashes with that flow's tuple: the NAT maps it to another port. A
	// peer's probe that arrives before the host's own has left thus moves
	// the host's mapping toward that peer, and every retry keeps the stale
	// entry alive. Applies to every NAT kind and layer.
	AcceptInbound bool
	// Hosts is the number of hosts on the site's LAN; 0 means 1.
	Hosts int
	// LossPermille drops this many datagrams per thousand, at random, in
	// each direction of the site's uplink (IPv4 and IPv6; ARP, neighbour
	// discovery and MLD pass).
	LossPermille int
	// UDPTimeout, if not zero, sets the conntrack UDP timeouts
	// (nf_conntrack_udp_timeout and nf_conntrack_udp_timeout_stream, in
	// whole seconds, rounded up) in the site's NAT namespaces, and the
	// lifetime of full-cone and address-restricted mappings. Zero keeps
	// the kernel defaults (30 s unreplied, 120 s after two-way traffic).
	// The timeouts apply to the IPv6 firewall's conntrack entries as well.
	UDPTimeout time.Duration
	// IPv6 gives the site's hosts global IPv6 addresses (IPv6Dual,
	// IPv6Only); it needs Options.IPv6. The site gets the /48
	// 2001:db8:<i>::/48 (i, the site index, in hex), its LAN the first
	// /64 of it, with the home router at ::1 and hosts at ::2, ::3, ...;
	// NATNone hosts get public-segment addresses instead.
	IPv6 IPv6Mode
	// IPv6Open turns the home router's IPv6 firewall open: inbound IPv6 of
	// every kind reaches the hosts, not only replies to their own flows.
	// Needs IPv6. NATNone sites have no firewall (they are open anyway).
	IPv6Open bool
}

// Site is a network behind zero, one or two NATs.
type Site struct {
	Name     string
	Config   SiteConfig // normalised: NAT and Hosts filled in
	PublicIP netip.Addr // the outermost NAT's public address (NATNone: Hosts[0].IP)
	Hosts    []*Host    // the LAN hosts (NATNone: hosts on the public segment)
	// Prefix6 is the /64 the hosts have their IPv6 addresses in: the
	// site's LAN 2001:db8:<i>::/64, or for NATNone the public segment's
	// 2001:db8:100::/64. Invalid without IPv6. PublicIP is invalid for an
	// IPv6Only NATNone site.
	Prefix6 netip.Prefix
	// Routers are the NAT namespaces, the home NAT first and the carrier
	// NAT second; IP is each router's WAN address. Empty for NATNone.
	Routers []*Host

	lab    *Lab
	index  int
	layers []*natLayer  // same order as Routers
	ports  []string     // the site's ports on the public bridge
	route6 netip.Prefix // the site's /48, routed by the public namespace (IPv6 NAT sites)

	loss     int
	blockUDP bool
	blocked  []netip.Addr
}

// natLayer is one NAT router of a site.
type natLayer struct {
	router   *Host
	kind     NATKind
	wan, lan string       // interface names in router's namespace
	lanNet   netip.Prefix // the addresses it translates
	hairpin  bool
	accept   bool // SiteConfig.AcceptInbound
	lifetime int  // seconds: full-cone / address-restricted mapping lifetime
	epoch    int  // bumped by ChangeMappings; selects the SNAT port range
}

var siteNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,19}$`)

// defaultStreamTimeout is the kernel's nf_conntrack_udp_timeout_stream.
const defaultStreamTimeout = 120

// AddSite adds a site. Per site (index i from 1): a NAT namespace (router,
// WAN on the public segment with the next free address from 203.0.113.20,
// LAN bridge 10.i.0.1/24) and Hosts host namespaces (10.i.0.2, .3, ...)
// routed through it; with an Outer NAT the home router's WAN is 100.64.i.2
// behind the carrier router's 100.64.i.1 and the LAN is 192.168.i.0/24.
// NATNone puts Hosts hosts straight on the public segment. With
// SiteConfig.IPv6 the hosts also (IPv6Dual) or only (IPv6Only) get global
// IPv6 addresses, 2001:db8:i::2, ::3, ... behind the home router's
// stateful firewall (NATNone: public-segment addresses), and AddSite
// returns once the site's IPv6 is ready (see doc.go). If AddSite fails it
// removes what it made for the site (with its route in the public
// namespace); the lab stays usable.
func (l *Lab) AddSite(name string, cfg SiteConfig) (_ *Site, err error) {
	if !siteNameRE.MatchString(name) {
		return nil, fmt.Errorf("netlab: site name %q: want 1-20 of [a-zA-Z0-9_-], starting with a letter or digit", name)
	}
	if cfg.NAT == "" {
		cfg.NAT = NATNone
	}
	if cfg.Outer == NATNone {
		cfg.Outer = ""
	}
	if cfg.Hosts == 0 {
		cfg.Hosts = 1
	}
	switch {
	case !cfg.NAT.valid():
		return nil, fmt.Errorf("netlab: unknown NAT kind %q", cfg.NAT)
	case cfg.Outer != "" && !cfg.Outer.valid():
		return nil, fmt.Errorf("netlab: unknown outer NAT kind %q", cfg.Outer)
	case cfg.Outer != "" && cfg.NAT == NATNone:
		return nil, errors.New("netlab: an outer NAT needs an inner NAT")
	case cfg.Hosts < 1 || cfg.Hosts > maxHosts:
		return nil, fmt.Errorf("netlab: %d hosts: want 1-%d", cfg.Hosts, maxHosts)
	case cfg.LossPermille < 0 || cfg.LossPermille > 1000:
		return nil, fmt.Errorf("netlab: loss %d‰: want 0-1000", cfg.LossPermille)
	case cfg.UDPTimeout < 0:
		return nil, errors.New("netlab: negative UDPTimeout")
	case cfg.IPv6 != IPv6None && cfg.IPv6 != IPv6Dual && cfg.IPv6 != IPv6Only:
		return nil, fmt.Errorf("netlab: unknown IPv6 mode %q", cfg.IPv6)
	case cfg.IPv6 != IPv6None && !l.ipv6:
		return nil, fmt.Errorf("netlab: SiteConfig.IPv6 %q needs a lab made with Options.IPv6", cfg.IPv6)
	case cfg.IPv6Open && cfg.IPv6 == IPv6None:
		return nil, errors.New("netlab: IPv6Open needs SiteConfig.IPv6")
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosed
	}
	for _, s := range l.sites {
		if s.Name == name {
			return nil, fmt.Errorf("netlab: site %q exists", name)
		}
	}
	index := l.nextIndex
	if index > maxSites {
		return nil, errors.New("netlab: too many sites")
	}
	need := 1
	if cfg.NAT == NATNone {
		need = cfg.Hosts
	}
	if l.nextOctet+need-1 > lastSiteOctet {
		return nil, errors.New("netlab: out of public addresses")
	}
	pub := make([]netip.Addr, need)
	for k := range pub {
		pub[k] = netip.AddrFrom4([4]byte{203, 0, 113, byte(l.nextOctet + k)})
	}

	s := &Site{Name: name, Config: cfg, PublicIP: pub[0], lab: l, index: index, loss: cfg.LossPermille}
	if cfg.NAT == NATNone && cfg.IPv6 == IPv6Only {
		s.PublicIP = netip.Addr{} // the hosts' octets are reserved, unused
	}
	firstNS := len(l.created)
	defer func() {
		if err == nil {
			return
		}
		// Undo: the site's public bridge ports (deleting a veth end deletes
		// its peer at once, while a deleted namespace's links go
		// asynchronously), then its namespaces. Its bridge table is the
		// last step of build, so it does not exist here.
		if ip, err := tool("ip"); err == nil {
			for _, p := range s.ports {
				if runCmd("", ip, "-n", l.pubNS, "link", "del", p) == nil {
					l.logf("netlab: ip -n %s link del %s", l.pubNS, p)
				}
			}
			// The core's route to the site (if it was made).
			if s.route6.IsValid() && runCmd("", ip, "-n", l.pubNS, "route", "del", s.route6.String()) == nil {
				l.logf("netlab: ip -n %s route del %s", l.pubNS, s.route6)
			}
		}
		for i := len(l.created) - 1; i >= firstNS; i-- {
			l.delNetns(l.created[i])
		}
		l.created = l.created[:firstNS]
	}()

	if err := s.build(pub); err != nil {
		return nil, err
	}
	l.nextIndex++
	l.nextOctet += need
	l.sites = append(l.sites, s)
	return s, nil
}

var errClosed = errors.New("netlab: lab closed")

// build creates the site's namespaces, links, addresses, routes and rules.
// Called with l.mu held.
func (s *Site) build(pub []netip.Addr) error {
	l, cfg, i := s.lab, s.Config, s.index
	v4, v6 := cfg.IPv6 != IPv6Only, cfg.IPv6 != IPv6None
	eth0 := l.ifName("eth0")
	newHost := func(j int, ip, ip6 netip.Addr) *Host {
		name := fmt.Sprintf("%s-h%d", s.Name, j)
		h := &Host{Name: name, Namespace: l.nsName(name)}
		if v4 {
			h.IP = ip
		}
		if v6 {
			h.IP6 = ip6
		}
		return h
	}
	// hostIf is a host's interface set-up: its addresses with default
	// routes via gw (IPv4, /bits) and gw6 (IPv6, /64).
	hostIf := func(h *Host, bits int, gw, gw6 netip.Addr) ifaceConfig {
		var c ifaceConfig
		if h.IP.IsValid() {
			c.addrs, c.gw = append(c.addrs, netip.PrefixFrom(h.IP, bits)), gw
		}
		if h.IP6.IsValid() {
			c.addrs, c.gw6 = append(c.addrs, netip.PrefixFrom(h.IP6, 64)), gw6
		}
		return c
	}
	var p plan
	var ports []planStep // bridge-side steps, added after the other side

	if cfg.NAT == NATNone {
		if v6 {
			s.Prefix6 = public6
		}
		var names []string
		for j := 1; j <= cfg.Hosts; j++ {
			h := newHost(j, pub[j-1], addr6(public6, int(pub[j-1].As4()[3])))
			s.Hosts = append(s.Hosts, h)
			names = append(names, h.Namespace)
		}
		if err := l.addNetns(v6, names...); err != nil {
			return err
		}
		for j, h := range s.Hosts {
			port := l.ifName(fmt.Sprintf("u%dh%d", i, j+1))
			s.ports = append(s.ports, port)
			p.add(h.Namespace, "link", "set", "lo", "up")
			ports = append(ports, l.attachPublic(&p, h.Namespace, eth0, port, hostIf(h, publicPrefixLen, routerAddr, core6)))
		}
		p.steps = append(p.steps, ports...)
		if err := l.runPlan(&p); err != nil {
			return err
		}
		if v6 {
			if err := l.waitIPv6(names...); err != nil {
				return err
			}
		}
		return l.nft(l.pubNS, s.bridgeScript(false))
	}

	lifetime := defaultStreamTimeout
	if cfg.UDPTimeout > 0 {
		lifetime = int((cfg.UDPTimeout + time.Second - 1) / time.Second)
	}
	wan, lan, uplink := l.ifName("wan"), l.ifName("lan"), l.ifName(fmt.Sprintf("u%d", i))
	s.ports = append(s.ports, uplink)

	// IPv6: the site's /48, its LAN (the first /64) and, behind a carrier,
	// the carrier's transit /64 to the home router (the second).
	site6 := netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i)}), 48)
	lan6 := netip.PrefixFrom(site6.Addr(), 64)
	transit6 := netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 0, 1}), 64)
	wan6 := addr6(public6, int(pub[0].As4()[3])) // the outermost router's WAN
	if v6 {
		s.Prefix6 = lan6
	}

	home := &natLayer{
		router: &Host{Name: s.Name + "-nat", Namespace: l.nsName(s.Name + "-nat"), IP: pub[0]},
		kind:   cfg.NAT, wan: wan, lan: lan,
		lanNet:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24),
		hairpin: cfg.Hairpin, accept: cfg.AcceptInbound, lifetime: lifetime,
	}
	s.layers = []*natLayer{home}
	var cgn *natLayer
	if cfg.Outer != "" {
		cgn = &natLayer{
			router:   &Host{Name: s.Name + "-cgn", Namespace: l.nsName(s.Name + "-cgn"), IP: pub[0]},
			kind:     cfg.Outer,
			wan:      wan,
			lan:      l.ifName("cgl"),
			lanNet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i), 0}), 24),
			hairpin:  cfg.Hairpin,
			accept:   cfg.AcceptInbound,
			lifetime: lifetime,
		}
		home.router.IP = netip.AddrFrom4([4]byte{100, 64, byte(i), 2})
		home.lanNet = netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 0}), 24)
		s.layers = append(s.layers, cgn)
	}
	if v6 {
		home.router.IP6 = wan6
		if cgn != nil {
			cgn.router.IP6 = wan6
			home.router.IP6 = addr6(transit6, 2)
		}
	}
	gw := home.lanNet.Addr().Next()
	gw6 := addr6(lan6, 1)
	for j, addr := 1, gw; j <= cfg.Hosts; j++ {
		addr = addr.Next()
		s.Hosts = append(s.Hosts, newHost(j, addr, addr6(lan6, j+1)))
	}
	var names []string
	for _, n := range s.layers {
		s.Routers = append(s.Routers, n.router)
		names = append(names, n.router.Namespace)
	}
	for _, h := range s.Hosts {
		names = append(names, h.Namespace)
	}
	if err := l.addNetns(v6, names...); err != nil {
		return err
	}
	for _, n := range s.layers {
		if err := s.routerSysctls(n, v6); err != nil {
			return err
		}
	}

	hn := home.router.Namespace
	// The outermost router's WAN on the public segment.
	outer := ifaceConfig{addrs: []netip.Prefix{netip.PrefixFrom(pub[0], publicPrefixLen)}, gw: routerAddr}
	if v6 {
		outer.addrs, outer.gw6 = append(outer.addrs, netip.PrefixFrom(wan6, public6.Bits())), core6
	}
	p.add(hn, "link", "set", "lo", "up")
	if cgn == nil {
		ports = append(ports, l.attachPublic(&p, hn, wan, uplink, outer))
	} else {
		// Carrier router: WAN on the public bridge, cgl 100.64.i.1/24
		// facing the home router's WAN 100.64.i.2/24 (IPv6: the transit
		// /64, ::1 and ::2).
		cn := cgn.router.Namespace
		cgnAddr := cgn.lanNet.Addr().Next()
		homeWAN := ifaceConfig{addrs: []netip.Prefix{netip.PrefixFrom(home.router.IP, 24)}, gw: cgnAddr}
		if v6 {
			homeWAN.addrs, homeWAN.gw6 = append(homeWAN.addrs, netip.PrefixFrom(home.router.IP6, 64)), addr6(transit6, 1)
		}
		ports = append(ports, l.attach(&p, hn, wan, cn, cgn.lan, "", homeWAN))
		ports[0] = planStep{cn, []string{"link", "set", cgn.lan, "up"}} // a plain link, no bridge
		p.add(cn, "link", "set", "lo", "up")
		p.add(cn, "addr", "add", pfx(cgnAddr, 24), "dev", cgn.lan)
		if v6 {
			p.add(cn, "addr", "add", pfx(addr6(transit6, 1), 64), "dev", cgn.lan, "nodad")
		}
		ports = append(ports, l.attachPublic(&p, cn, wan, uplink, outer))
	}
	// The LAN: a bridge in the home router, one veth per host.
	if v6 {
		p.add(hn, bridge6(lan, i)...)
		p.add(hn, "addr", "add", pfx(gw6, 64), "dev", lan, "nodad")
	} else {
		p.add(hn, "link", "add", lan, "type", "bridge")
	}
	if v4 {
		p.add(hn, "addr", "add", pfx(gw, 24), "dev", lan)
	}
	p.add(hn, "link", "set", lan, "up")
	for j, h := range s.Hosts {
		p.add(h.Namespace, "link", "set", "lo", "up")
		ports = append(ports, l.attach(&p, h.Namespace, eth0, hn, l.ifName(fmt.Sprintf("h%d", j+1)), lan, hostIf(h, 24, gw, gw6)))
	}
	p.steps = append(p.steps, ports...)
	if v6 {
		// Routes to the LAN: the carrier's via the home router's WAN, once
		// the transit link is up; the core's via the outermost WAN.
		if cgn != nil {
			p.add(cgn.router.Namespace, "route", "add", lan6.String(), "via", home.router.IP6.String())
		}
		s.route6 = site6
		p.add(l.pubNS, "route", "add", site6.String(), "via", wan6.String())
	}
	if err := l.runPlan(&p); err != nil {
		return err
	}

	// NAT rules, then (conntrack is loaded by now) the UDP timeouts.
	for _, n := range s.layers {
		if err := l.nft(n.router.Namespace, n.script(false)); err != nil {
			return err
		}
		if cfg.UDPTimeout > 0 {
			v := strconv.Itoa(lifetime)
			if err := l.sysctl(n.router.Namespace, [][2]string{
				{"net/netfilter/nf_conntrack_udp_timeout", v},
				{"net/netfilter/nf_conntrack_udp_timeout_stream", v},
			}, false); err != nil {
				return err
			}
		}
	}
	if v6 {
		if err := l.nft(hn, home.firewall6(cfg.IPv6Open)); err != nil {
			return err
		}
		if err := l.waitIPv6(names...); err != nil {
			return err
		}
	}
	return l.nft(l.pubNS, s.bridgeScript(false))
}

// routerSysctls turns forwarding on in a NAT router's namespace (IPv6
// too, with v6), ICMP redirects off (hairpinned traffic leaves by the
// interface it came in) and reverse-path filtering off. Namespaces inherit
// the root's IPv4 defaults, hence explicit values; the root's are never
// written. Runs before the router has interfaces, so the defaults apply to
// them.
func (s *Site) routerSysctls(n *natLayer, v6 bool) error {
	kv := [][2]string{
		{"net/ipv4/conf/all/send_redirects", "0"},
		{"net/ipv4/conf/default/send_redirects", "0"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
		{"net/ipv4/ip_forward", "1"},
	}
	if v6 {
		kv = append(kv, forwarding6...)
	}
	return s.lab.sysctl(n.router.Namespace, kv, false)
}

// portRange is the SNAT port range of the layer's current epoch: none
// (port preserving) until the first ChangeMappings, then alternately
// 20000-29999 and 10000-19999, both outside the ephemeral range
// 32768-60999 that unbound sockets get their ports from.
func (n *natLayer) portRange() string {
	if n.kind == NATSymmetric || n.epoch == 0 {
		return ""
	}
	if n.epoch%2 == 1 {
		return "20000-29999"
	}
	return "10000-19999"
}

// script returns the layer's nftables table. With replace it first
// deletes the existing one (one transaction: the swap is atomic).
func (n *natLayer) script(replace bool) string {
	var b strings.Builder
	if replace {
		b.WriteString("table ip gwnat\ndelete table ip gwnat\n")
	}
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	W, L := strconv.Quote(n.wan), strconv.Quote(n.lan)
	P, LAN := n.router.IP.String(), n.lanNet.String()
	snat := func(match string) {
		rnd := ""
		if n.kind == NATSymmetric {
			rnd = " fully-random"
		}
		if r := n.portRange(); r != "" {
			w("\t\t%s meta l4proto { tcp, udp } snat ip to %s:%s%s", match, P, r, rnd)
		}
		w("\t\t%s snat ip to %s%s", match, P, rnd)
	}

	w("table ip gwnat {")
	// fc: external (mapped) UDP port -> LAN address . LAN port, for inbound
	// full-cone / address-restricted traffic and for hairpinning.
	// seen: remote address . mapped port, for address-restricted filtering.
	w("\tmap fc { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout %ds; size 65535; }", n.lifetime)
	w("\tset seen { type ipv4_addr . inet_service; flags dynamic,timeout; timeout %ds; size 65535; }", n.lifetime)

	w("\tchain pre {")
	w("\t\ttype nat hook prerouting priority dstnat; policy accept;")
	switch n.kind {
	case NATFullCone:
		w("\t\tiifname %s meta l4proto udp dnat ip to udp dport map @fc", W)
	case NATAddrRestricted:
		w("\t\tiifname %s meta l4proto udp ip saddr . udp dport @seen dnat ip to udp dport map @fc", W)
	}
	if n.hairpin {
		w("\t\tiifname %s ip daddr %s meta l4proto udp dnat ip to udp dport map @fc", L, P)
	}
	w("\t}")

	w("\tchain post {")
	w("\t\ttype nat hook postrouting priority srcnat; policy accept;")
	snat(fmt.Sprintf("oifname %s ip saddr %s", W, LAN))
	if n.hairpin {
		snat(fmt.Sprintf("oifname %s ip saddr %s ct status dnat", L, LAN))
	}
	w("\t}")

	// After srcnat (priority 100) the packet carries the mapped port; the
	// LAN side comes from the conntrack tuples: the original tuple for
	// flows the LAN started, the reply tuple for flows let in by dnat.
	w("\tchain track {")
	w("\t\ttype filter hook postrouting priority 200; policy accept;")
	w("\t\toifname %s meta l4proto udp ct direction original update @fc { udp sport : ct original ip saddr . ct original proto-src }", W)
	w("\t\toifname %s meta l4proto udp ct direction reply update @fc { udp sport : ct reply ip saddr . ct reply proto-src }", W)
	if n.kind == NATAddrRestricted {
		w("\t\toifname %s meta l4proto udp update @seen { ip daddr . udp sport }", W)
	}
	w("\t}")

	w("\tchain forward_filter {")
	w("\t\ttype filter hook forward priority filter; policy drop;")
	w("\t\tct state established,related accept")
	w("\t\tiifname %s accept", L)
	w("\t\tiifname %s ct status dnat accept", W)
	w("\t}")

	// The router itself answers pings and nothing else: datagrams to
	// unmapped ports (and, without hairpin, from the LAN to the public
	// address) are dropped silently, not answered with ICMP. With accept
	// it takes UDP from the WAN, which confirms its conntrack entry (the
	// kernel then answers port unreachable, rate-limited).
	w("\tchain input_filter {")
	w("\t\ttype filter hook input priority filter; policy drop;")
	w("\t\tct state established,related accept")
	w("\t\tiifname \"lo\" accept")
	w("\t\tmeta l4proto icmp accept")
	if n.accept {
		w("\t\tiifname %s meta l4proto udp accept", W)
	}
	w("\t}")
	w("}")
	return b.String()
}

// firewall6 returns the home router's IPv6 firewall, a stateful one as
// home routers have: the LAN's flows go out, and only their replies
// (conntrack: the flow's exact 5-tuple, address-and-port-dependent
// filtering) and ICMPv6 errors and echo come in; with open, everything
// from the WAN does. The router itself takes ICMPv6 (neighbour discovery,
// echo) and replies only.
func (n *natLayer) firewall6(open bool) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	W, L := strconv.Quote(n.wan), strconv.Quote(n.lan)
	w("table ip6 gwfw6 {")
	w("\tchain forward_filter {")
	w("\t\ttype filter hook forward priority filter; policy drop;")
	w("\t\tct state established,related accept")
	w("\t\tmeta l4proto ipv6-icmp icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, echo-reply } accept")
	w("\t\tiifname %s oifname %s accept", L, W)
	if open {
		w("\t\tiifname %s oifname %s accept", W, L)
	}
	w("\t}")
	w("\tchain input_filter {")
	w("\t\ttype filter hook input priority filter; policy drop;")
	w("\t\tct state established,related accept")
	w("\t\tiifname \"lo\" accept")
	w("\t\tmeta l4proto ipv6-icmp accept")
	w("\t}")
	w("}")
	return b.String()
}

// bridgeScript returns the site's table in the public namespace: loss and
// blocks on the site's bridge ports, both directions. A site with IPv6
// has them on the bridge's input and output too, where the public
// namespace's own stack (the IPv6 core router) takes frames from the
// site's ports and sends them to them; neighbour discovery and MLD pass.
func (s *Site) bridgeScript(replace bool) string {
	var b strings.Builder
	name := fmt.Sprintf("site%d", s.index)
	if replace {
		fmt.Fprintf(&b, "table bridge %s\ndelete table bridge %s\n", name, name)
	}
	v6 := s.Config.IPv6 != IPv6None
	quoted := make([]string, len(s.ports))
	for k, p := range s.ports {
		quoted[k] = strconv.Quote(p)
	}
	ports := "{ " + strings.Join(quoted, ", ") + " }"
	fmt.Fprintf(&b, "table bridge %s {\n", name)
	rule := func(format string, args ...any) { fmt.Fprintf(&b, "\t\t"+format+"\n", args...) }
	if !v6 {
		b.WriteString("\tchain forward_filter {\n\t\ttype filter hook forward priority 0; policy accept;\n")
	} else {
		for _, hook := range []string{"forward", "input", "output"} {
			fmt.Fprintf(&b, "\tchain %s_filter {\n\t\ttype filter hook %s priority 0; policy accept;\n\t\tjump impair\n\t}\n", hook, hook)
		}
		b.WriteString("\tchain impair {\n")
		rule("ether type ip6 meta l4proto ipv6-icmp icmpv6 type %s accept", linkICMPv6)
	}
	for _, a := range s.blocked {
		if a.Is4() {
			rule("iifname %s ether type ip ip daddr %s drop", ports, a)
			rule("oifname %s ether type ip ip saddr %s drop", ports, a)
		} else {
			rule("iifname %s ether type ip6 ip6 daddr %s drop", ports, a)
			rule("oifname %s ether type ip6 ip6 saddr %s drop", ports, a)
		}
	}
	if s.blockUDP {
		rule("iifname %s ether type ip meta l4proto udp drop", ports)
		rule("oifname %s ether type ip meta l4proto udp drop", ports)
		if v6 {
			rule("iifname %s ether type ip6 meta l4proto udp drop", ports)
			rule("oifname %s ether type ip6 meta l4proto udp drop", ports)
		}
	}
	if s.loss > 0 {
		// numgen's values are 0-999: 1000‰ is a plain drop.
		random := fmt.Sprintf(" numgen random mod 1000 < %d", s.loss)
		if s.loss >= 1000 {
			random = ""
		}
		rule("iifname %s ether type ip%s drop", ports, random)
		rule("oifname %s ether type ip%s drop", ports, random)
		if v6 {
			rule("iifname %s ether type ip6%s drop", ports, random)
			rule("oifname %s ether type ip6%s drop", ports, random)
		}
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// locked runs f with the lab's lock held, failing if the lab is closed.
func (s *Site) locked(f func() error) error {
	s.lab.mu.Lock()
	defer s.lab.mu.Unlock()
	if s.lab.closed {
		return errClosed
	}
	return f()
}

// FlushConntrack drops every NAT mapping of the site, in all its NAT
// layers: the conntrack table and the full-cone / address-restricted
// state. A NATNone site has none.
func (s *Site) FlushConntrack() error {
	return s.locked(s.flush)
}

func (s *Site) flush() error {
	var errs []error
	for _, n := range s.layers {
		if err := s.lab.nft(n.router.Namespace, "flush map ip gwnat fc\nflush set ip gwnat seen\n"); err != nil {
			errs = append(errs, err)
		}
		if err := n.router.Do(flushConntrack); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.router.Namespace, err))
		}
	}
	return errors.Join(errs...)
}

// ChangeMappings makes every NAT layer of the site map to other external
// ports than before, as a NAT reboot or rebinding would: each layer's SNAT
// switches to the next port range (20000-29999, then 10000-19999, then
// back; symmetric layers stay fully random), its mapping state is
// dropped, and conntrack is flushed. A LAN socket bound to a port inside
// the new range may keep its port; ephemeral ports never are inside.
func (s *Site) ChangeMappings() error {
	return s.locked(func() error {
		for _, n := range s.layers {
			n.epoch++
			if err := s.lab.nft(n.router.Namespace, n.script(true)); err != nil {
				n.epoch--
				return err
			}
		}
		return s.flush()
	})
}

// SetLoss sets the random loss on the site's uplink, per mille, each
// direction.
func (s *Site) SetLoss(permille int) error {
	if permille < 0 || permille > 1000 {
		return fmt.Errorf("netlab: loss %d‰: want 0-1000", permille)
	}
	return s.locked(func() error {
		old := s.loss
		s.loss = permille
		return s.reloadBridge(func() { s.loss = old })
	})
}

// BlockUDP makes the site's uplink drop all UDP to and from the public
// side, IPv4 and IPv6 (or lets it through again); TCP and ICMP still pass.
func (s *Site) BlockUDP(block bool) error {
	return s.locked(func() error {
		old := s.blockUDP
		s.blockUDP = block
		return s.reloadBridge(func() { s.blockUDP = old })
	})
}

// BlockAddr drops all traffic between the site and one public address
// (for example another site's PublicIP, or a host's IP6), both
// directions, or lets it through again. Other addresses, such as the
// server's, stay reachable. An IPv6 address needs a site with IPv6;
// neighbour discovery with it still passes.
func (s *Site) BlockAddr(peer netip.Addr, block bool) error {
	peer = peer.Unmap()
	switch {
	case !peer.IsValid():
		return errors.New("netlab: BlockAddr: invalid address")
	case peer.Is6() && s.Config.IPv6 == IPv6None:
		return fmt.Errorf("netlab: BlockAddr %v: site %s has no IPv6", peer, s.Name)
	}
	peer = peer.WithZone("")
	return s.locked(func() error {
		old := slices.Clone(s.blocked)
		s.blocked = slices.DeleteFunc(s.blocked, func(a netip.Addr) bool { return a == peer })
		if block {
			s.blocked = append(s.blocked, peer)
		}
		return s.reloadBridge(func() { s.blocked = old })
	})
}

func (s *Site) reloadBridge(undo func()) error {
	if err := s.lab.nft(s.lab.pubNS, s.bridgeScript(true)); err != nil {
		undo()
		return err
	}
	return nil
}

// StaleEntry makes the site's outermost NAT record a datagram from `from`
// to `to` (an address of the NAT's) as though one had arrived and been
// accepted: the UNREPLIED conntrack entry of the conntrack clash, which a
// LAN host's datagram to `from` then clashes with (it leaves from another
// port). It needs the conntrack tool (Debian's conntrack); the entry
// lives 60 s unless datagrams from `from` refresh it. A NATNone site has
// no NAT.
func (s *Site) StaleEntry(from, to netip.AddrPort) error {
	if len(s.layers) == 0 {
		return errors.New("netlab: StaleEntry: the site has no NAT")
	}
	ct, err := tool("conntrack")
	if err != nil {
		return err
	}
	ip, err := tool("ip")
	if err != nil {
		return err
	}
	n := s.layers[len(s.layers)-1]
	f, t := from.Addr().String(), to.Addr().String()
	fp, tp := strconv.Itoa(int(from.Port())), strconv.Itoa(int(to.Port()))
	return s.locked(func() error {
		return s.lab.run("", ip, "netns", "exec", n.router.Namespace, ct, "-I", "-p", "udp",
			"-s", f, "-d", t, "--sport", fp, "--dport", tp,
			"-r", t, "-q", f, "--reply-port-src", tp, "--reply-port-dst", fp, "-t", "60")
	})
}
