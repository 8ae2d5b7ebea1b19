package rendezvous

import (
	"net"
	"testing"

	"github.com/pion/stun/v3"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestSTUNLargeRequests: a request padded past a 1500-byte buffer
// (turnutils_natdiscovery -P adds 1500 bytes of PADDING: 1524 in all) and
// one of exactly 2048 bytes are read whole and answered with every
// attribute; a datagram longer than 2048 bytes is dropped and counted
// (Oversized), not parsed cut short.
func TestSTUNLargeRequests(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, true)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, size := range []int{1524, maxDatagram} {
		req := stunRequest(t, size, 0)
		if len(req) != size {
			t.Fatalf("request of %d bytes, want %d", len(req), size)
		}
		m, _, ok := stunExchange(t, conn, req, s.Addr())
		if !ok {
			t.Fatalf("no answer to a %d-byte request", size)
		}
		var xa stun.XORMappedAddress
		var other stun.OtherAddress
		var origin stun.ResponseOrigin
		if xa.GetFrom(m) != nil || other.GetFrom(m) != nil || origin.GetFrom(m) != nil || stun.Fingerprint.Check(m) != nil {
			t.Errorf("%d-byte request: attributes missing from %v", size, m)
		}
	}

	before := s.Stats()
	conn.WriteToUDPAddrPort(stunRequest(t, 3000, 0), s.Addr())
	// The bare request after it is answered once the server has read both
	// (one socket, one reader, in order).
	if _, _, ok := stunExchange(t, conn, stunRequest(t, 0, 0), s.Addr()); !ok {
		t.Fatal("no answer to the request after the oversized one")
	}
	after := s.Stats()
	if after.Oversized != before.Oversized+1 || after.STUNAnswered != before.STUNAnswered+1 || after.STUNDropped != before.STUNDropped {
		t.Fatalf("oversized %d→%d, answered %d→%d, STUN dropped %d→%d; want one oversized, one answered",
			before.Oversized, after.Oversized, before.STUNAnswered, after.STUNAnswered, before.STUNDropped, after.STUNDropped)
	}
}
