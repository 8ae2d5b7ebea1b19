package p2p

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/nat"
)

// TestSTUNServersDeadFirst: with a rendezvous server that has no second
// address, the mapping test runs against Config.STUNServers, and a dead
// first one does not stop it: the live second one is used.
func TestSTUNServersDeadFirst(t *testing.T) {
	leakcheck.Check(t)
	srv := startRendezvous(t)
	dead, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) // bound, never read
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	live := startRendezvous(t) // any STUN server will do
	n := loopbackNode(t, "127.0.0.1", Config{Rendezvous: srv.Addr().String(),
		STUNServers: []string{dead.LocalAddr().String(), live.Addr().String()}})
	waitFor(t, 10*time.Second, "the mapping test", func() bool {
		return n.trav.Behaviour().Mapping == nat.MappingEndpointIndependent
	})
	if b := n.trav.Behaviour(); b.Mapped != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), addrOf(n).Port()) {
		t.Errorf("mapped %v, node at %v", b.Mapped, addrOf(n))
	}
	n.Close()
}
