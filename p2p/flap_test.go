package p2p

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestDualStackNoFlapping: two dual-stack nodes on one machine connect over
// IPv4, then one side moves to IPv6, so each receives the other's packets
// from an address it does not send to.
// They settle on one path and stay there while traffic flows both ways.
// (Each used to follow the other's source address on every packet: tens
// of thousands of path changes a second, and dropped events.)
func TestDualStackNoFlapping(t *testing.T) {
	leakcheck.Check(t)
	a, err := New(Config{ListenAddr: "[::]:0"})
	if err != nil {
		t.Skipf("no dual-stack socket here: %v", err)
	}
	defer a.Close()
	b, err := New(Config{ListenAddr: "[::]:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	port := func(n *Node) uint16 { return addrOfConn(n.main.pc).Port() }
	a.AddPeerAddr(b.PeerID(), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port(b)))
	b.AddPeerAddr(a.PeerID(), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port(a)))
	a.SendP2PPacket(b.PeerID(), []byte("hi"), SendReliable, 0)
	b.SendP2PPacket(a.PeerID(), []byte("hi"), SendReliable, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range []*Node{a, b} {
		if _, err := n.Receive(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	// b's side moves to IPv6 (as when a check validated that path on one
	// side only): a now hears b from an address it does not send to.
	s := b.lookupSession(a.PeerID())
	r := *s.current()
	r.Remote = netip.AddrPortFrom(netip.IPv6Loopback(), port(a))
	b.paths.Establish(s.paths, r, 0) // as when the session was established on that path
	b.paths.Sync()
	stop := time.Now().Add(2 * time.Second)
	for i := 0; time.Now().Before(stop); i++ {
		a.SendP2PPacket(b.PeerID(), []byte{byte(i)}, SendUnreliable, 1)
		b.SendP2PPacket(a.PeerID(), []byte{byte(i)}, SendUnreliable, 1)
		time.Sleep(2 * time.Millisecond)
	}
	sa, sb := a.Stats(), b.Stats()
	if changes := sa.PathChanges + sb.PathChanges; changes > 2 || sa.EventsDropped+sb.EventsDropped > 0 {
		t.Fatalf("%d path changes in 2 s of traffic, %d events dropped", changes, sa.EventsDropped+sb.EventsDropped)
	}
	ra, _ := a.GetP2PSessionState(b.PeerID())
	rb, _ := b.GetP2PSessionState(a.PeerID())
	t.Logf("a sends to %v, b to %v; %d path changes", ra.RemoteAddr, rb.RemoteAddr, sa.PathChanges+sb.PathChanges)
}
