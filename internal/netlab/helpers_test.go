package netlab

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

// newLab makes a lab that the test's cleanup closes, or skips the test
// with a message starting "netlab unavailable:" (CI, with
// GAMEWIRE_REQUIRE_LAB=1, fails it instead).
func newLab(t *testing.T, name string) *Lab {
	t.Helper()
	return NewForTest(t, Options{Name: name})
}

func requireAvailable(t *testing.T) {
	t.Helper()
	Require(t)
}

func addSite(t *testing.T, l *Lab, name string, cfg SiteConfig) *Site {
	t.Helper()
	s, err := l.AddSite(name, cfg)
	if err != nil {
		t.Fatalf("AddSite %s: %v", name, err)
	}
	return s
}

// udp opens a UDP socket on h that the test's cleanup closes.
func udp(t *testing.T, h *Host, laddr string) *net.UDPConn {
	t.Helper()
	c, err := h.ListenUDP(laddr)
	if err != nil {
		t.Fatalf("ListenUDP %s on %s: %v", laddr, h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// serverSockets opens A:p1, A:p2 and B:p1 on the lab's server.
type serverSockets struct {
	a1, a2, b1 *net.UDPConn
	A1, A2, B1 netip.AddrPort
}

func openServer(t *testing.T, l *Lab) serverSockets {
	t.Helper()
	return openServerOn(t, l, serverAddr1, serverAddr2)
}

// openServer6 opens A:p1, A:p2 and B:p1 on the server's IPv6 addresses.
func openServer6(t *testing.T, l *Lab) serverSockets {
	t.Helper()
	return openServerOn(t, l, server6Addr1, server6Addr2)
}

func openServerOn(t *testing.T, l *Lab, A, B netip.Addr) serverSockets {
	t.Helper()
	var s serverSockets
	for range 20 {
		a1 := udp(t, l.Server(), netip.AddrPortFrom(A, 0).String())
		b1, err := l.Server().ListenUDP(netip.AddrPortFrom(B, localAP(a1).Port()).String())
		if err == nil {
			t.Cleanup(func() { b1.Close() })
			s.a1, s.b1 = a1, b1
			break
		}
	}
	if s.a1 == nil {
		t.Fatal("cannot open A:p1 and B:p1")
	}
	s.a2 = udp(t, l.Server(), netip.AddrPortFrom(A, 0).String())
	s.A1, s.A2, s.B1 = localAP(s.a1), localAP(s.a2), localAP(s.b1)
	return s
}

// mapped sends from c to dst (received by rcv) until one datagram gets
// through and returns the source rcv saw; it fails the test if none does.
func mapped(t *testing.T, c *net.UDPConn, dst netip.AddrPort, rcv *net.UDPConn) netip.AddrPort {
	t.Helper()
	from, ok, err := exchange(c, dst, rcv, "map:"+newNonce(), probeFirstTries)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("nothing from %v reached %v", localAP(c), dst)
	}
	return from
}

// reaches reports whether a datagram sent from c to dst arrives at rcv
// (up to three tries).
func reaches(t *testing.T, c *net.UDPConn, dst netip.AddrPort, rcv *net.UDPConn) bool {
	t.Helper()
	_, ok, err := exchange(c, dst, rcv, "reach:"+newNonce(), probeTries)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// namespacesWith lists named network namespaces containing s.
func namespacesWith(t *testing.T, s string) []string {
	t.Helper()
	all, err := listNetns("")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range all {
		if strings.Contains(n, s) {
			out = append(out, n)
		}
	}
	return out
}
