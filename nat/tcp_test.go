package nat

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestDialTCPFromListenerPort: a connection dialed from a listener's
// address leaves from the listener's port (what the peer's NAT and
// listener see), while the listener keeps accepting.
func TestDialTCPFromListenerPort(t *testing.T) {
	a, err := ListenTCP("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := ListenTCP("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	accepted := make(chan net.Conn, 2)
	for _, l := range []net.Listener{a, b} {
		go func() {
			if c, err := l.Accept(); err == nil {
				accepted <- c
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialTCP(ctx, "tcp4", a.Addr().String(), b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, want := netip.MustParseAddrPort(c.LocalAddr().String()), netip.MustParseAddrPort(a.Addr().String()); got != want {
		t.Errorf("dialed from %v, want the listener's %v", got, want)
	}
	var at net.Conn
	select {
	case at = <-accepted:
	case <-ctx.Done():
		t.Fatal("b accepted nothing")
	}
	defer at.Close()
	if at.RemoteAddr().String() != a.Addr().String() {
		t.Errorf("b sees %v, want a's listener address %v", at.RemoteAddr(), a.Addr())
	}
	// a still accepts: dialing from its port did not take it over.
	c2, err := net.DialTimeout("tcp4", a.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	select {
	case x := <-accepted:
		x.Close()
	case <-ctx.Done():
		t.Fatal("a stopped accepting")
	}
}
