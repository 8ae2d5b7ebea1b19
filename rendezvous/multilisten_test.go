package rendezvous

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// haveIPv6Loopback skips the test when ::1 cannot be bound.
func haveIPv6Loopback(t *testing.T) {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback (::1): %v", err)
	}
	c.Close()
}

// freePort6 is a UDP port free on ::1 when asked.
func freePort6(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback (::1): %v", err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// dualStackServer listens on 127.0.0.1 with an RFC 5780 alternate at
// 127.0.0.2 (four sockets), and on ::1 alone: loopback has no second IPv6
// address for an IPv6 alternate (TestSTUNAnswersStayInFamily covers that
// with addresses that need no interface).
func dualStackServer(t *testing.T, cfg ServerConfig) *Server {
	t.Helper()
	haveIPv6Loopback(t)
	p1, p2 := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.2")
	v4 := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p1)
	v6 := netip.AddrPortFrom(netip.IPv6Loopback(), freePort6(t))
	alt := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), p2)
	s, err := Listen(cfg, []netip.AddrPort{v4, v6}, []netip.AddrPort{alt})
	if err != nil {
		t.Skipf("cannot listen: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if got := s.Addrs(); len(got) != 2 || got[0] != v4 || got[1] != v6 {
		t.Fatalf("Addrs %v, want [%v %v]", got, v4, v6)
	}
	if got := s.Alternates(); len(got) != 2 || got[0] != alt || got[1].IsValid() {
		t.Fatalf("Alternates %v, want [%v none]", got, alt)
	}
	return s
}

// TestListenDualStack: one server on 127.0.0.1 (RFC 5780, alternate
// 127.0.0.2) and ::1 at once. STUN over each family names that family's
// mapped address, and OTHER-ADDRESS only where the family has an
// alternate; a CHANGE-REQUEST over IPv6, which has none, is refused rather
// than answered from an IPv4 socket. An IPv4 and an IPv6 client register,
// and an introduction between them hands each the other's address.
func TestListenDualStack(t *testing.T) {
	leakcheck.Check(t)
	s := dualStackServer(t, ServerConfig{TTL: 5 * time.Second})
	v4, v6 := s.Addrs()[0], s.Addrs()[1]

	c4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	c6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer c6.Close()
	var xa stun.XORMappedAddress
	var other stun.OtherAddress
	m, from, ok := stunExchange(t, c4, stunRequest(t, 100, 0), v4)
	if !ok || from != v4 || xa.GetFrom(m) != nil || other.GetFrom(m) != nil {
		t.Fatalf("IPv4: %v from %v", m, from)
	}
	if me := c4.LocalAddr().(*net.UDPAddr).AddrPort(); xa.Port != int(me.Port()) || !xa.IP.Equal(net.IPv4(127, 0, 0, 1)) || other.Port != int(s.Alternates()[0].Port()) || !other.IP.Equal(net.IPv4(127, 0, 0, 2)) {
		t.Errorf("IPv4: mapped %v (client %v), other %v", xa, me, other)
	}
	m, from, ok = stunExchange(t, c6, stunRequest(t, 100, 0), v6)
	if !ok || from != v6 || xa.GetFrom(m) != nil {
		t.Fatalf("IPv6: %v from %v", m, from)
	}
	if me := c6.LocalAddr().(*net.UDPAddr).AddrPort(); xa.Port != int(me.Port()) || !xa.IP.Equal(net.IPv6loopback) {
		t.Errorf("IPv6: mapped %v, client %v", xa, me)
	}
	if other.GetFrom(m) == nil {
		t.Errorf("IPv6: OTHER-ADDRESS %v, but IPv6 has no alternate", other)
	}
	before := s.Stats()
	if _, _, ok := stunExchange(t, c6, stunRequest(t, 100, changeIPFlag|changePortFlag), v6); ok {
		t.Error("IPv6: a CHANGE-REQUEST was answered, with no IPv6 alternate")
	}
	if s.Stats().STUNDropped != before.STUNDropped+1 {
		t.Error("IPv6: the refused CHANGE-REQUEST was not counted")
	}

	a := startClientAt(t, "127.0.0.1", v4, nil, nil)
	b := startClientAt(t, "::1", v6, nil, nil)
	registerAll(t, a, b)
	if obs, _ := b.Registered(); obs != b.addr {
		t.Errorf("IPv6 client registered as %v, is %v", obs, b.addr)
	}
	b.consent.Store(true)
	a.Introduce(b.pub, time.Now())
	run(t, 10*time.Second, func() bool {
		pa, _, _ := a.snapshot()
		pb, _, _ := b.snapshot()
		return len(pa) > 0 && len(pb) > 0
	}, a, b)
	pa, _, _ := a.snapshot()
	pb, _, _ := b.snapshot()
	if pa[0].Observed != b.addr || pb[0].Observed != a.addr {
		t.Errorf("introduced: A told %v (B at %v), B told %v (A at %v)", pa[0].Observed, b.addr, pb[0].Observed, a.addr)
	}
}

// TestListenUnspecifiedBothFamilies: 0.0.0.0 and [::] at the same port
// are two sockets (the IPv6 one IPv6-only), each answering its own
// family.
func TestListenUnspecifiedBothFamilies(t *testing.T) {
	leakcheck.Check(t)
	port := freePort6(t)
	s, err := Listen(ServerConfig{}, []netip.AddrPort{
		netip.AddrPortFrom(netip.IPv4Unspecified(), port), netip.AddrPortFrom(netip.IPv6Unspecified(), port),
	}, nil)
	if err != nil {
		t.Fatalf("0.0.0.0 and [::] at port %d: %v", port, err)
	}
	defer s.Close()
	for _, tc := range []struct {
		network string
		ip      net.IP
	}{{"udp4", net.IPv4(127, 0, 0, 1)}, {"udp6", net.IPv6loopback}} {
		c, err := net.ListenUDP(tc.network, &net.UDPAddr{IP: tc.ip})
		if err != nil {
			t.Fatal(err)
		}
		m, from, ok := stunExchange(t, c, stunRequest(t, 0, 0), netip.AddrPortFrom(netip.MustParseAddr(tc.ip.String()), port))
		c.Close()
		var xa stun.XORMappedAddress
		if !ok || xa.GetFrom(m) != nil || !xa.IP.Equal(tc.ip) || from.Addr().Is4() != (tc.network == "udp4") {
			t.Errorf("%s: %v from %v", tc.network, m, from)
		}
	}
}

// TestListenPairing: alternates pair with primary addresses of their own
// family, in order; bad pairings are refused with ErrListen.
func TestListenPairing(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		primary, alternate []netip.AddrPort
	}{
		{nil, nil},
		{[]netip.AddrPort{ap("127.0.0.1:3478")}, []netip.AddrPort{ap("[::1]:3479")}},                           // no IPv6 primary
		{[]netip.AddrPort{ap("127.0.0.1:3478")}, []netip.AddrPort{ap("127.0.0.2:3479"), ap("127.0.0.3:3480")}}, // one too many
		{[]netip.AddrPort{ap("127.0.0.1:3478")}, []netip.AddrPort{ap("127.0.0.1:3479")}},                       // the same IP
		{[]netip.AddrPort{ap("127.0.0.1:3478")}, []netip.AddrPort{ap("127.0.0.2:3478")}},                       // the same port
		{[]netip.AddrPort{ap("0.0.0.0:3478")}, []netip.AddrPort{ap("127.0.0.2:3479")}},                         // unspecified
		{[]netip.AddrPort{ap("127.0.0.1:0")}, []netip.AddrPort{ap("127.0.0.2:3479")}},                          // port zero
		{[]netip.AddrPort{{}}, nil},
	} {
		if s, err := Listen(ServerConfig{}, tc.primary, tc.alternate); !errors.Is(err, ErrListen) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Listen(%v, %v): %v, want ErrListen", tc.primary, tc.alternate, err)
		}
	}
}

// captureConn records what the server writes, and where.
type captureConn struct {
	net.PacketConn
	mu     sync.Mutex
	writes []captured
}

type captured struct {
	b  []byte
	to netip.AddrPort
}

func (c *captureConn) WriteTo(b []byte, to net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, captured{append([]byte(nil), b...), to.(*net.UDPAddr).AddrPort()})
	return len(b), nil
}

// TestSTUNAnswersStayInFamily: with an RFC 5780 group in each family
// (addresses no interface needs: the sockets are fakes), an IPv6 request's
// OTHER-ADDRESS is the IPv6 alternate, and its CHANGE-REQUEST answers
// leave from the IPv6 group's sockets; IPv4 likewise.
func TestSTUNAnswersStayInFamily(t *testing.T) {
	ap := netip.MustParseAddrPort
	addrs := []netip.AddrPort{
		ap("203.0.113.10:3478"), ap("203.0.113.11:3479"), ap("203.0.113.10:3479"), ap("203.0.113.11:3478"),
		ap("[2001:db8::10]:3478"), ap("[2001:db8::11]:3479"), ap("[2001:db8::10]:3479"), ap("[2001:db8::11]:3478"),
	}
	conns := make([]*captureConn, len(addrs))
	pcs := make([]net.PacketConn, len(addrs))
	for i := range conns {
		conns[i] = &captureConn{}
		pcs[i] = conns[i]
	}
	s := newServer(ServerConfig{Conns: pcs})
	s.addrs, s.groups = addrs, groupSockets(addrs)
	for _, tc := range []struct {
		src   netip.AddrPort
		in    int // the socket the request arrives at
		flags byte
		out   int // the socket the answer must leave from
		other netip.AddrPort
	}{
		{ap("198.51.100.7:4000"), 0, 0, 0, addrs[1]},
		{ap("198.51.100.7:4000"), 0, changeIPFlag | changePortFlag, 1, addrs[1]},
		{ap("[2001:db8:7::7]:4000"), 4, 0, 4, addrs[5]},
		{ap("[2001:db8:7::7]:4000"), 4, changeIPFlag | changePortFlag, 5, addrs[5]},
		{ap("[2001:db8:7::7]:4000"), 4, changePortFlag, 6, addrs[5]},
		{ap("[2001:db8:7::7]:4000"), 4, changeIPFlag, 7, addrs[5]},
		{ap("[2001:db8:7::7]:4000"), 7, 0, 7, addrs[6]}, // other relative to where it arrived
	} {
		for _, c := range conns {
			c.writes = nil
		}
		s.handle(origin{sock: tc.in, addr: tc.src}, stunRequest(t, 100, tc.flags))
		for i, c := range conns {
			if (len(c.writes) > 0) != (i == tc.out) {
				t.Fatalf("%v at %v, change %#x: socket %d (%v) wrote %d answers; want one from socket %d",
					tc.src, addrs[tc.in], tc.flags, i, addrs[i], len(c.writes), tc.out)
			}
		}
		w := conns[tc.out].writes[0]
		m := &stun.Message{Raw: w.b}
		var xa stun.XORMappedAddress
		var other stun.OtherAddress
		if w.to != tc.src || m.Decode() != nil || xa.GetFrom(m) != nil || other.GetFrom(m) != nil {
			t.Fatalf("%v: answer %v to %v", tc.src, m, w.to)
		}
		if got := netip.AddrPortFrom(netip.MustParseAddr(other.IP.String()), uint16(other.Port)); got != tc.other {
			t.Errorf("%v at %v: OTHER-ADDRESS %v, want %v", tc.src, addrs[tc.in], got, tc.other)
		}
	}
}

// startTURNClientAt starts a client that allows relay on a socket at ip,
// reporting the TURN section of its registrations.
func startTURNClientAt(t *testing.T, ip string, srv netip.AddrPort, onTURN func(*TURN)) *testClient {
	t.Helper()
	network := "udp4"
	if netip.MustParseAddr(ip).Is6() {
		network = "udp6"
	}
	conn, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	priv, pub := newKeypair(t)
	tc := &testClient{conn: conn, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), pub: pub}
	tc.Client = NewClient(ClientConfig{Server: srv, Private: priv, Public: pub,
		Send:         func(b []byte, to netip.AddrPort) { conn.WriteToUDPAddrPort(b, to) },
		RelayAllowed: func() bool { return true },
		OnTURN:       onTURN,
	})
	tc.wg.Add(1)
	go func() {
		defer tc.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			tc.Handle(buf[:n], from)
		}
	}()
	t.Cleanup(func() { conn.Close(); tc.wg.Wait() })
	return tc
}
