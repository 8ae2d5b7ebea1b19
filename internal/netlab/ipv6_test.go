package netlab

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv6"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// newLab6 makes a dual-stack lab (Options.IPv6) that the test's cleanup
// closes.
func newLab6(t *testing.T, name string) *Lab {
	t.Helper()
	return NewForTest(t, Options{Name: name, IPv6: true})
}

// udp6 opens a UDP socket on h's IPv6 address that the test's cleanup
// closes.
func udp6(t *testing.T, h *Host) *net.UDPConn {
	t.Helper()
	if !h.IP6.IsValid() {
		t.Fatalf("%s has no IPv6 address", h.Name)
	}
	return udp(t, h, h.AddrPort6(0).String())
}

// ipTool returns the path of the ip command.
func ipTool(t *testing.T) string {
	t.Helper()
	ip, err := tool("ip")
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

// tcpEcho runs an echo server on ln until the test ends.
func tcpEcho(t *testing.T, ln net.Listener) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				io.Copy(conn, conn)
			})
		}
	})
}

// echoes dials addr from h (giving up after wait) and reports whether a
// TCP echo round trip works.
func echoes(t *testing.T, h *Host, addr netip.AddrPort, wait time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	network := "tcp4"
	if addr.Addr().Is6() {
		network = "tcp6"
	}
	conn, err := h.DialContext(ctx, network, addr.String())
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		return false
	}
	buf := make([]byte, 4)
	_, err = io.ReadFull(conn, buf)
	return err == nil && string(buf) == "ping"
}

// TestIPv6DualStack: a dual-stack host behind a NAT reaches the server
// over IPv4 (NATed) and over IPv6 (its own global address, the port
// kept: no NAT66), UDP and TCP, and so does a NATNone dual-stack host.
func TestIPv6DualStack(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab6(t, "dual")
	if got := l.ServerAddrs6(); len(got) != 2 || got[0] != server6Addr1 || got[1] != server6Addr2 || l.Server().IP6 != server6Addr1 {
		t.Fatalf("ServerAddrs6 %v, Server().IP6 %v", got, l.Server().IP6)
	}
	srv4, srv6 := openServer(t, l), openServer6(t, l)
	ln, err := l.Server().Listen("tcp6", netip.AddrPortFrom(server6Addr1, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	tcpEcho(t, ln)
	tcpAddr := ln.Addr().(*net.TCPAddr).AddrPort()

	nat := addSite(t, l, "nat", SiteConfig{NAT: NATPortRestricted, IPv6: IPv6Dual, Hosts: 2})
	none := addSite(t, l, "none", SiteConfig{NAT: NATNone, IPv6: IPv6Dual})
	if want := netip.MustParsePrefix("2001:db8:1::/64"); nat.Prefix6 != want || nat.Hosts[1].IP6 != netip.MustParseAddr("2001:db8:1::3") {
		t.Errorf("site 1: Prefix6 %v, host 2 %v", nat.Prefix6, nat.Hosts[1].IP6)
	}
	if want := netip.MustParseAddr("2001:db8:100::20"); nat.Routers[0].IP6 != want || none.Hosts[0].IP6 != netip.MustParseAddr("2001:db8:100::21") {
		t.Errorf("router WAN %v, NATNone host %v", nat.Routers[0].IP6, none.Hosts[0].IP6)
	}
	if d := nat.Config.Describe(); !strings.Contains(d, "dual-stack IPv6") {
		t.Errorf("Describe() = %q", d)
	}
	for _, h := range []*Host{nat.Hosts[0], nat.Hosts[1], none.Hosts[0]} {
		c4 := udp(t, h, ":0")
		if m := mapped(t, c4, srv4.A1, srv4.a1); m.Addr() != map[bool]netip.Addr{true: nat.PublicIP, false: h.IP}[h != none.Hosts[0]] {
			t.Errorf("%s: IPv4 source %v", h.Name, m)
		}
		c6 := udp6(t, h)
		m := mapped(t, c6, srv6.A1, srv6.a1)
		if m != h.AddrPort6(localAP(c6).Port()) {
			t.Errorf("%s: IPv6 source %v, want the host's own %v", h.Name, m, h.AddrPort6(localAP(c6).Port()))
		}
		if !reaches(t, srv6.a1, m, c6) {
			t.Errorf("%s: the server's IPv6 reply did not arrive", h.Name)
		}
		if !echoes(t, h, tcpAddr, 5*time.Second) {
			t.Errorf("%s: no TCP echo over IPv6", h.Name)
		}
	}
	// ListenPacket and Dial with IPv6 literals.
	pc, err := nat.Hosts[0].ListenPacket("udp6", nat.Hosts[0].AddrPort6(0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if got := pc.LocalAddr().(*net.UDPAddr).AddrPort().Addr(); got != nat.Hosts[0].IP6 {
		t.Errorf("ListenPacket bound %v", got)
	}
	dc, err := nat.Hosts[0].Dial("udp6", srv6.A1.String())
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if _, err := dc.Write([]byte("dial6")); err != nil {
		t.Fatal(err)
	}
	if from, ok, err := await(srv6.a1, "dial6", time.Second); err != nil || !ok || from.Addr() != nat.Hosts[0].IP6 {
		t.Errorf("Dial udp6: arrived %v from %v (%v)", ok, from, err)
	}
}

// TestIPv6Firewall: the home router's stateful IPv6 firewall drops
// unsolicited UDP (from the server, from another site), lets in replies
// from exactly the address and port the host sent to (APDF), forgets them
// on FlushConntrack, and keeps working across ChangeMappings.
func TestIPv6Firewall(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab6(t, "fw6")
	srv := openServer6(t, l)
	other := addSite(t, l, "other", SiteConfig{NAT: NATNone, IPv6: IPv6Dual})
	co := udp6(t, other.Hosts[0])
	for _, tc := range []siteCase{
		{"pr", SiteConfig{NAT: NATPortRestricted, IPv6: IPv6Dual}},
		{"only", SiteConfig{NAT: NATFullCone, IPv6: IPv6Only}}, // the NAT kind is IPv4's only
	} {
		s := addSite(t, l, tc.name, tc.cfg)
		h := s.Hosts[0]
		c := udp6(t, h)
		me := h.AddrPort6(localAP(c).Port())
		if reaches(t, srv.a1, me, c) || reaches(t, co, me, c) {
			t.Errorf("%s: unsolicited IPv6 reached the host", tc.name)
		}
		if m := mapped(t, c, srv.A1, srv.a1); m != me {
			t.Errorf("%s: source %v, want %v", tc.name, m, me)
		}
		if !reaches(t, srv.a1, me, c) {
			t.Errorf("%s: the reply from A:p1 did not pass", tc.name)
		}
		if reaches(t, srv.a2, me, c) {
			t.Errorf("%s: A:p2 (not sent to) got through", tc.name)
		}
		if reaches(t, srv.b1, me, c) {
			t.Errorf("%s: B:p1 (not sent to) got through", tc.name)
		}
		if reaches(t, co, me, c) {
			t.Errorf("%s: another site's host got through", tc.name)
		}
		if err := s.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
		if reaches(t, srv.a1, me, c) {
			t.Errorf("%s: after FlushConntrack the reply still passes", tc.name)
		}
		if err := s.ChangeMappings(); err != nil {
			t.Fatal(err)
		}
		if m := mapped(t, c, srv.A1, srv.a1); m != me || !reaches(t, srv.a1, me, c) {
			t.Errorf("%s: after ChangeMappings: source %v, reply passes %v", tc.name, m, reaches(t, srv.a1, me, c))
		}
	}
}

// TestIPv6Open: with IPv6Open unsolicited IPv6 (UDP from any address and
// port, TCP) reaches the hosts, while the IPv4 NAT still filters; without
// it inbound TCP does not connect (TestIPv6Firewall has UDP).
func TestIPv6Open(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab6(t, "open6")
	srv4, srv := openServer(t, l), openServer6(t, l)
	for _, open := range []bool{true, false} {
		name := map[bool]string{true: "open", false: "closed"}[open]
		s := addSite(t, l, name, SiteConfig{NAT: NATPortRestricted, Outer: NATPortRestricted, IPv6: IPv6Dual, IPv6Open: open})
		h := s.Hosts[0]
		c := udp6(t, h)
		me := h.AddrPort6(localAP(c).Port())
		for _, from := range []*net.UDPConn{srv.a1, srv.a2, srv.b1} {
			if open && !reaches(t, from, me, c) {
				t.Errorf("%s: unsolicited UDP from %v did not arrive", name, localAP(from))
			}
		}
		ln, err := h.Listen("tcp6", netip.AddrPortFrom(h.IP6, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		tcpEcho(t, ln)
		if got := echoes(t, l.Server(), ln.Addr().(*net.TCPAddr).AddrPort(), time.Second); got != open {
			t.Errorf("%s: inbound TCP works %v, want %v", name, got, open)
		}
		if open {
			c4 := udp(t, h, ":0")
			m4 := mapped(t, c4, srv4.A1, srv4.a1)
			if reaches(t, srv4.a2, m4, c4) {
				t.Errorf("%s: the IPv4 NAT let A:p2 in", name)
			}
		}
	}
	if d := (SiteConfig{NAT: NATPortRestricted, IPv6: IPv6Dual, IPv6Open: true}).Describe(); !strings.Contains(d, "open IPv6 firewall") {
		t.Errorf("Describe() = %q", d)
	}
}

// TestIPv6Only: an IPv6Only host has no IPv4 address or route (a datagram
// to the server's IPv4 address cannot leave) and reaches the server over
// IPv6, behind a router and on the public segment.
func TestIPv6Only(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab6(t, "only")
	srv4, srv := openServer(t, l), openServer6(t, l)
	nat := addSite(t, l, "nat", SiteConfig{NAT: NATPortRestricted, IPv6: IPv6Only})
	none := addSite(t, l, "none", SiteConfig{NAT: NATNone, IPv6: IPv6Only})
	if none.PublicIP.IsValid() || !nat.PublicIP.IsValid() {
		t.Errorf("PublicIP: NATNone %v, NAT %v", none.PublicIP, nat.PublicIP)
	}
	if d := nat.Config.Describe(); !strings.Contains(d, "IPv6 only") {
		t.Errorf("Describe() = %q", d)
	}
	for _, h := range []*Host{nat.Hosts[0], none.Hosts[0]} {
		if h.IP.IsValid() || !h.IP6.IsValid() {
			t.Fatalf("%s: IP %v IP6 %v", h.Name, h.IP, h.IP6)
		}
		for _, args := range [][]string{{"-4", "-o", "addr", "show", "scope", "global"}, {"-4", "route"}} {
			out, err := h.Command(t.Context(), "ip", args...).CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) != 0 {
				t.Errorf("%s: ip %v: %v %q, want nothing", h.Name, args, err, out)
			}
		}
		c4 := udp(t, h, "0.0.0.0:0")
		if _, err := c4.WriteToUDPAddrPort([]byte("v4"), srv4.A1); err == nil {
			if _, ok, _ := await(srv4.a1, "v4", 300*time.Millisecond); ok {
				t.Errorf("%s: IPv4 reached the server", h.Name)
			}
		}
		c := udp(t, h, ":0") // udp6 on an IPv6-only host
		if !localAP(c).Addr().Is6() {
			t.Errorf("%s: ListenUDP(\":0\") bound %v, want IPv6", h.Name, localAP(c))
		}
		if m := mapped(t, c, srv.A1, srv.a1); m != h.AddrPort6(localAP(c).Port()) {
			t.Errorf("%s: source %v", h.Name, m)
		}
	}
}

// TestIPv6HolePunch: hosts behind two stateful firewalls (one of them
// behind a carrier NAT too) reach each other directly once both have sent:
// the first datagram opens its sender's firewall and is dropped by the
// peer's, the peer's answer is then a reply.
func TestIPv6HolePunch(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab6(t, "punch6")
	a := addSite(t, l, "a", SiteConfig{NAT: NATSymmetric, IPv6: IPv6Dual})
	b := addSite(t, l, "b", SiteConfig{NAT: NATPortRestricted, IPv6: IPv6Only})
	c := addSite(t, l, "c", SiteConfig{NAT: NATPortRestricted, Outer: NATSymmetric, IPv6: IPv6Dual})
	for _, pair := range [][2]*Site{{a, b}, {a, c}, {c, b}} {
		x, y := pair[0].Hosts[0], pair[1].Hosts[0]
		cx, cy := udp6(t, x), udp6(t, y)
		X, Y := x.AddrPort6(localAP(cx).Port()), y.AddrPort6(localAP(cy).Port())
		if reaches(t, cx, Y, cy) {
			t.Errorf("%s -> %s: arrived before %s sent", x.Name, y.Name, y.Name)
		}
		if from, ok := reachesFrom(t, cy, X, cx); !ok || from != Y {
			t.Errorf("%s -> %s after %s sent: arrived %v from %v, want %v", y.Name, x.Name, x.Name, ok, from, Y)
		}
		if from, ok := reachesFrom(t, cx, Y, cy); !ok || from != X {
			t.Errorf("%s -> %s after punching: arrived %v from %v, want %v", x.Name, y.Name, ok, from, X)
		}
	}
}

// TestIPv6Impair: BlockUDP, loss and BlockAddr apply to IPv6; neighbour
// discovery passes 1000‰ loss, and traffic flows at once after it.
func TestIPv6Impair(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab6(t, "impair6")
	srv := openServer6(t, l)
	ln, err := l.Server().Listen("tcp6", netip.AddrPortFrom(server6Addr1, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	tcpEcho(t, ln)
	s := addSite(t, l, "s", SiteConfig{NAT: NATPortRestricted, IPv6: IPv6Dual})
	h := s.Hosts[0]
	c := udp6(t, h)
	m := mapped(t, c, srv.A1, srv.a1)

	// BlockUDP.
	if err := s.BlockUDP(true); err != nil {
		t.Fatal(err)
	}
	if reaches(t, c, srv.A1, srv.a1) || reaches(t, srv.a1, m, c) {
		t.Error("IPv6 UDP passes while blocked")
	}
	if !echoes(t, h, ln.Addr().(*net.TCPAddr).AddrPort(), 5*time.Second) {
		t.Error("IPv6 TCP fails while only UDP is blocked")
	}
	if err := s.BlockUDP(false); err != nil {
		t.Fatal(err)
	}
	if !reaches(t, c, srv.A1, srv.a1) || !reaches(t, srv.a1, m, c) {
		t.Error("IPv6 UDP still blocked after BlockUDP(false)")
	}

	// Loss: 300‰ drops about that many, 1000‰ all, and neighbour
	// discovery still works then: with every neighbour cache on the path
	// flushed, the router and the core resolve their next hops.
	if err := s.SetLoss(300); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	up := countDelivered(t, c, srv.A1, srv.a1, n)
	t.Logf("300‰ loss: delivered up %d/%d", up, n)
	if up < 640 || up > 760 { // Binomial(1000, 0.7): mean 700, sd 14.5
		t.Errorf("300‰ loss: %d of %d delivered", up, n)
	}
	if err := s.SetLoss(1000); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{s.Routers[0].Namespace, l.PublicNamespace(), l.Server().Namespace} {
		if out, err := exec.Command(ipTool(t), "-n", ns, "-6", "neigh", "flush", "all").CombinedOutput(); err != nil {
			t.Fatalf("neigh flush in %s: %v: %s", ns, err, out)
		}
	}
	if up, down := countDelivered(t, c, srv.A1, srv.a1, 50), countDelivered(t, srv.a1, m, c, 50); up != 0 || down != 0 {
		t.Errorf("1000‰ loss: delivered up %d, down %d, want none", up, down)
	}
	for _, nb := range []struct {
		ns   string
		addr netip.Addr
	}{{s.Routers[0].Namespace, server6Addr1}, {l.PublicNamespace(), s.Routers[0].IP6}} {
		out, _ := exec.Command(ipTool(t), "-n", nb.ns, "-6", "neigh", "show", nb.addr.String()).CombinedOutput()
		if !strings.Contains(string(out), "lladdr") || strings.Contains(string(out), "FAILED") {
			t.Errorf("1000‰ loss: neighbour %v not resolved in %s: %q", nb.addr, nb.ns, out)
		}
	}
	if err := s.SetLoss(0); err != nil {
		t.Fatal(err)
	}
	if up, down := countDelivered(t, c, srv.A1, srv.a1, 50), countDelivered(t, srv.a1, m, c, 50); up != 50 || down != 50 {
		t.Errorf("loss off: delivered up %d/50, down %d/50", up, down)
	}

	// BlockAddr: the server's primary IPv6 address, not its alternate.
	if err := s.BlockAddr(server6Addr1, true); err != nil {
		t.Fatal(err)
	}
	if reaches(t, c, srv.A1, srv.a1) || reaches(t, srv.a1, m, c) {
		t.Error("traffic with a blocked IPv6 address passes")
	}
	if mb := mapped(t, c, srv.B1, srv.b1); !reaches(t, srv.b1, mb, c) {
		t.Error("the unblocked alternate address lost")
	}
	if err := s.BlockAddr(server6Addr1, false); err != nil {
		t.Fatal(err)
	}
	if !reaches(t, c, srv.A1, srv.a1) || !reaches(t, srv.a1, m, c) {
		t.Error("still blocked after BlockAddr(false)")
	}
	v4 := addSite(t, l, "v4", SiteConfig{NAT: NATPortRestricted})
	if err := v4.BlockAddr(server6Addr1, true); err == nil {
		t.Error("BlockAddr with an IPv6 address accepted on a site without IPv6")
	}
}

// TestIPv6Outer: behind a carrier NAT (CGNAT IPv4, native IPv6) a
// dual-stack host reaches the server over IPv4 through both NATs and over
// IPv6 with its own address; the home router's firewall filters inbound,
// the carrier forwards IPv6 as it is.
func TestIPv6Outer(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab6(t, "outer6")
	srv4, srv := openServer(t, l), openServer6(t, l)
	s := addSite(t, l, "dbl", SiteConfig{NAT: NATPortRestricted, Outer: NATSymmetric, IPv6: IPv6Dual, Hosts: 2})
	if s.Routers[1].IP6 != netip.MustParseAddr("2001:db8:100::20") || s.Routers[0].IP6 != netip.MustParseAddr("2001:db8:1:1::2") {
		t.Errorf("router addresses: carrier %v, home %v", s.Routers[1].IP6, s.Routers[0].IP6)
	}
	for _, h := range s.Hosts {
		c4 := udp(t, h, ":0")
		if m := mapped(t, c4, srv4.A1, srv4.a1); m.Addr() != s.PublicIP || !reaches(t, srv4.a1, m, c4) {
			t.Errorf("%s: IPv4 via both NATs: source %v", h.Name, m)
		}
		c := udp6(t, h)
		me := h.AddrPort6(localAP(c).Port())
		if reaches(t, srv.a1, me, c) {
			t.Errorf("%s: unsolicited IPv6 passed", h.Name)
		}
		if m := mapped(t, c, srv.A1, srv.a1); m != me {
			t.Errorf("%s: IPv6 source %v, want %v", h.Name, m, me)
		}
		if !reaches(t, srv.a1, me, c) {
			t.Errorf("%s: IPv6 reply lost", h.Name)
		}
		if reaches(t, srv.a2, me, c) {
			t.Errorf("%s: IPv6 from A:p2 passed", h.Name)
		}
	}
}

// TestIPv6Hops: IPv6 loses Lab.Hops of hop limit on the public segment,
// bridged (to the server) or routed by the core (site to site), one more
// per router; a datagram with hop limit 2 opens its sender's firewall and
// dies on the segment (priming).
func TestIPv6Hops(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab6(t, "hops6")
	srv := openServer6(t, l)
	a := addSite(t, l, "a", SiteConfig{NAT: NATPortRestricted, IPv6: IPv6Dual})
	b := addSite(t, l, "b", SiteConfig{NAT: NATPortRestricted, IPv6: IPv6Dual, IPv6Open: true})
	ca, cb := udp6(t, a.Hosts[0]), udp6(t, b.Hosts[0])
	A, B := a.Hosts[0].AddrPort6(localAP(ca).Port()), b.Hosts[0].AddrPort6(localAP(cb).Port())
	arrives := func(from *net.UDPConn, hl int, to netip.AddrPort, rcv *net.UDPConn) (int, bool) {
		t.Helper()
		if err := ipv6.NewPacketConn(from).SetHopLimit(hl); err != nil {
			t.Fatal(err)
		}
		pc := ipv6.NewPacketConn(rcv)
		if err := pc.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
			t.Fatal(err)
		}
		token := []byte("hl:" + newNonce())
		for range probeTries {
			if _, err := from.WriteToUDPAddrPort(token, to); err != nil {
				t.Fatal(err)
			}
			rcv.SetReadDeadline(time.Now().Add(probeWait))
			buf := make([]byte, 1500)
			for {
				n, cm, _, err := pc.ReadFrom(buf)
				if err != nil {
					break
				}
				if string(buf[:n]) == string(token) && cm != nil {
					return cm.HopLimit, true
				}
			}
		}
		return 0, false
	}
	hops := l.Hops()
	for _, tc := range []struct {
		name    string
		from    *net.UDPConn
		to      netip.AddrPort
		rcv     *net.UDPConn
		routers int
	}{
		{"a -> server (bridged)", ca, srv.A1, srv.a1, 1},
		{"a -> b (routed by the core)", ca, B, cb, 2},
	} {
		if _, ok := arrives(tc.from, hops+tc.routers, tc.to, tc.rcv); ok {
			t.Errorf("%s: hop limit %d arrived", tc.name, hops+tc.routers)
		}
		if got, ok := arrives(tc.from, hops+tc.routers+1, tc.to, tc.rcv); !ok || got != 1 {
			t.Errorf("%s: hop limit %d: arrived %v with %d, want 1", tc.name, hops+tc.routers+1, ok, got)
		}
		if got, ok := arrives(tc.from, 64, tc.to, tc.rcv); !ok || got != 64-hops-tc.routers {
			t.Errorf("%s: hop limit 64: arrived %v with %d, want %d", tc.name, ok, got, 64-hops-tc.routers)
		}
	}
	// The server's reply to a goes through the core: the same hops.
	if got, ok := arrives(srv.a1, 64, A, ca); !ok || got != 64-hops-1 {
		t.Errorf("server -> a: hop limit 64: arrived %v with %d, want %d", ok, got, 64-hops-1)
	}

	// Priming: fresh sockets; a's datagram with hop limit 2 passes a's
	// router and dies on the segment (b's open firewall would let it in);
	// b's datagram is then a reply to it.
	ca, cb = udp6(t, a.Hosts[0]), udp6(t, b.Hosts[0])
	A, B = a.Hosts[0].AddrPort6(localAP(ca).Port()), b.Hosts[0].AddrPort6(localAP(cb).Port())
	if _, ok := arrives(ca, 2, B, cb); ok {
		t.Error("the priming datagram reached b")
	}
	if from, ok := reachesFrom(t, cb, A, ca); !ok || from != B {
		t.Errorf("after a primed, b's datagram reached a: %v from %v", ok, from)
	}
}

// TestIPv6Disabled: without Options.IPv6 nothing has IPv6 and sites
// asking for it are refused; in a dual-stack lab a site without IPv6 keeps
// it off in its namespaces.
func TestIPv6Disabled(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab(t, "nov6")
	if l.IPv6() || l.ServerAddrs6() != nil || l.Server().IP6.IsValid() {
		t.Errorf("IPv6 %v, ServerAddrs6 %v, server IP6 %v", l.IPv6(), l.ServerAddrs6(), l.Server().IP6)
	}
	for _, cfg := range []SiteConfig{
		{NAT: NATPortRestricted, IPv6: IPv6Dual},
		{NAT: NATNone, IPv6: IPv6Only},
		{NAT: NATPortRestricted, IPv6Open: true},
	} {
		if _, err := l.AddSite("v6", cfg); err == nil {
			t.Errorf("AddSite(%+v) accepted without Options.IPv6", cfg)
		}
	}
	s := addSite(t, l, "s", SiteConfig{NAT: NATPortRestricted, Outer: NATPortRestricted})
	n := addSite(t, l, "n", SiteConfig{NAT: NATNone})
	for _, h := range []*Host{l.Server(), s.Hosts[0], s.Routers[0], s.Routers[1], n.Hosts[0], {Namespace: l.PublicNamespace()}} {
		if v, err := readSysctl(h.Namespace, "net/ipv6/conf/all/disable_ipv6"); err != nil || v != "1" {
			t.Errorf("%s: disable_ipv6 = %q (%v), want 1", h.Namespace, v, err)
		}
		if h.IP6.IsValid() {
			t.Errorf("%s: IP6 %v", h.Name, h.IP6)
		}
	}

	l6 := newLab6(t, "mixed")
	s4 := addSite(t, l6, "v4", SiteConfig{NAT: NATPortRestricted})
	s6 := addSite(t, l6, "v6", SiteConfig{NAT: NATPortRestricted, IPv6: IPv6Dual})
	for ns, want := range map[string]string{
		s4.Hosts[0].Namespace: "1", s4.Routers[0].Namespace: "1",
		s6.Hosts[0].Namespace: "0", s6.Routers[0].Namespace: "0",
		l6.PublicNamespace(): "0", l6.Server().Namespace: "0",
	} {
		if v, err := readSysctl(ns, "net/ipv6/conf/all/disable_ipv6"); err != nil || v != want {
			t.Errorf("%s: disable_ipv6 = %q (%v), want %s", ns, v, err, want)
		}
	}
	if s4.Hosts[0].IP6.IsValid() || s4.Prefix6.IsValid() {
		t.Errorf("a site without IPv6 has %v, %v", s4.Hosts[0].IP6, s4.Prefix6)
	}
}

// TestIPv6Cleanup: a dual-stack lab leaves the root namespace as it was
// and nothing behind after Close; a failed AddSite removes the core's
// route to the site too, and the index then works again.
func TestIPv6Cleanup(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	requireAvailable(t)
	before := rootSnapshot(t)
	h := &failHook{}
	l, err := New(Options{Name: "clean6", IPv6: true, hook: h.hook})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	prefix := l.Prefix()
	srv := openServer6(t, l)
	addSite(t, l, "a", SiteConfig{NAT: NATPortRestricted, IPv6: IPv6Dual})
	routes := func() string {
		out, err := exec.Command(ipTool(t), "-n", l.PublicNamespace(), "-6", "route").CombinedOutput()
		if err != nil {
			t.Fatalf("ip route: %v: %s", err, out)
		}
		return string(out)
	}
	for _, at := range [][]string{
		{"-pub", "route add 2001:db8:2::/48"},
		{"-b-cgn", "route add 2001:db8:2::/64"},
		{"-pub", "nft"}, // the site's bridge table, last
	} {
		h.arm(at...)
		if _, err := l.AddSite("b", SiteConfig{NAT: NATPortRestricted, Outer: NATPortRestricted, IPv6: IPv6Dual}); err == nil || h.hit == "" {
			t.Fatalf("AddSite succeeded or failure at %q not injected: %v", at, err)
		}
		if left := namespacesWith(t, prefix+"clean6-b-"); len(left) != 0 {
			t.Errorf("failure at %q: namespaces left: %v", h.hit, left)
		}
		if r := routes(); strings.Contains(r, "2001:db8:2::/48") {
			t.Errorf("failure at %q: the core's route left:\n%s", h.hit, r)
		}
	}
	b := addSite(t, l, "b", SiteConfig{NAT: NATPortRestricted, Outer: NATPortRestricted, IPv6: IPv6Dual})
	cb := udp6(t, b.Hosts[0])
	if m := mapped(t, cb, srv.A1, srv.a1); !reaches(t, srv.a1, m, cb) {
		t.Error("site b added after failures does not work over IPv6")
	}
	addSite(t, l, "n", SiteConfig{NAT: NATNone, IPv6: IPv6Only, Hosts: 2})
	addSite(t, l, "o", SiteConfig{NAT: NATSymmetric, IPv6: IPv6Only, IPv6Open: true, LossPermille: 10})
	if mid := rootSnapshot(t); mid != before {
		t.Errorf("root namespace changed while the lab runs:\nbefore:\n%s\nnow:\n%s", before, mid)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if left := namespacesWith(t, prefix); len(left) != 0 {
		t.Errorf("namespaces left after Close: %v", left)
	}
	if after := rootSnapshot(t); after != before {
		t.Errorf("root namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
