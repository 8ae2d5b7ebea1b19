package p2p

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

// TestRelayServerRotation: each failed allocation moves to the next
// usable TURN server, UDP first, then TCP, then TLS (only with RelayTLS);
// no UDP when the node's own UDP is blocked.
func TestRelayServerRotation(t *testing.T) {
	srv := func(tr relay.Transport, port uint16) rendezvous.TURNServer {
		return rendezvous.TURNServer{Transport: tr, Addr: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port)}
	}
	servers := []rendezvous.TURNServer{srv(relay.TLS, 1), srv(relay.TCP, 2), srv(relay.UDP, 3), srv(relay.UDP, 4)}
	var got []uint16
	for failures := range 4 {
		s, ok := pickServer(servers, failures, false, false)
		if !ok {
			t.Fatal("no server picked")
		}
		got = append(got, s.Addr.Port())
	}
	if want := []uint16{3, 4, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("picked %v, want %v (no TLS without RelayTLS)", got, want)
	}
	got = got[:0]
	for failures := range 3 {
		s, _ := pickServer(servers, failures, true, true)
		got = append(got, s.Addr.Port())
	}
	if want := []uint16{2, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("UDP blocked, with RelayTLS: picked %v, want %v (TCP, then TLS)", got, want)
	}
	if _, ok := pickServer(servers[2:], 0, true, true); ok {
		t.Error("UDP blocked: a UDP-only list gave a server")
	}
}
