package p2p

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

// TestRelayServerRotation: each failed allocation moves to the next
// usable TURN server, UDP first, then TCP, then TLS (only with RelayTLS).
func TestRelayServerRotation(t *testing.T) {
	leakcheck.Check(t)
	n := tcpNode(t)
	srv := func(tr relay.Transport, port uint16) rendezvous.TURNServer {
		return rendezvous.TURNServer{Transport: tr, Addr: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port)}
	}
	servers := []rendezvous.TURNServer{srv(relay.TLS, 1), srv(relay.TCP, 2), srv(relay.UDP, 3), srv(relay.UDP, 4)}
	r := n.trav.relay
	r.mu.Lock()
	defer r.mu.Unlock()
	r.turn = &rendezvous.TURN{Servers: servers}
	var got []uint16
	for r.failures = range 4 {
		s, ok := r.pickServerLocked()
		if !ok {
			t.Fatal("no server picked")
		}
		got = append(got, s.Addr.Port())
	}
	if want := []uint16{3, 4, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("picked %v, want %v (no TLS without RelayTLS)", got, want)
	}
}
