package nat_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/rendezvous"
)

// An external test package: package rendezvous, the RFC 5780 server here,
// imports nat.

// TestDiscover runs mapping and filtering discovery against a local
// RFC 5780 server (127.0.0.1 and 127.0.0.2): no NAT, so
// endpoint-independent everything.
func TestDiscover(t *testing.T) {
	leakcheck.Check(t)
	var p1 uint16
	var srv *rendezvous.Server
	for range 20 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
		if err != nil {
			t.Skipf("no 127.0.0.2: %v", err)
		}
		p1 = uint16(c.LocalAddr().(*net.UDPAddr).Port)
		c.Close()
		s, err := rendezvous.Listen(rendezvous.ServerConfig{}, []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p1)},
			[]netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), p1+1)})
		if err == nil {
			srv = s
			break
		}
	}
	if srv == nil {
		t.Skip("no free ports")
	}
	defer srv.Close()
	c, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer c.Close()
	st := nat.NewSTUN(func(b []byte, to netip.AddrPort) error { _, err := c.WriteToUDPAddrPort(b, to); return err })
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if nat.IsSTUN(buf[:n]) {
				st.Handle(buf[:n], from)
			}
		}
	}()
	b, err := nat.Discover(context.Background(), st, srv.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.Mapped != c.LocalAddr().(*net.UDPAddr).AddrPort() || b.Mapping != nat.MappingEndpointIndependent || b.Alternate.Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("%+v", b)
	}
	c.Close()
	<-done

	fc, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer fc.Close()
	if f := nat.DiscoverFiltering(context.Background(), fc, srv.Addr()); f != nat.FilteringEndpointIndependent {
		t.Fatalf("filtering %v, want %v", f, nat.FilteringEndpointIndependent)
	}
	// The socket is still usable: DiscoverFiltering stopped reading it.
	fc.SetReadDeadline(time.Time{})
	if _, err := fc.WriteToUDPAddrPort([]byte("x"), fc.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	fc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := fc.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "x" {
		t.Fatalf("read after DiscoverFiltering: %q, %v", buf[:n], err)
	}
}
