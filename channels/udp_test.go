package channels

import (
	"bytes"
	"testing"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestLoopbackUDP runs two Conns over real UDP sockets: every send type on
// several channels, a fragmented reliable message, and a clean shutdown
// that leaves no goroutine behind.
func TestLoopbackUDP(t *testing.T) {
	leakcheck.Check(t)
	p := newUDPPair(t, Config{MaxUnreliableSize: 4000})
	defer p.close()
	big := bytes.Repeat([]byte("0123456789"), 30000)
	want := 3*200 + 1
	p.target.Store(int64(want))
	for i := range 200 {
		p.a.Send(1, payload(1, i, 100), Reliable)
		p.a.Send(2, payload(2, i, 3000), Unreliable)
		p.a.Send(3, payload(3, i, 64), Unsequenced|FlushHint)
	}
	p.a.Send(4, big, Reliable|FlushHint)
	// Loopback rarely drops; unreliable loss would show up as a timeout
	// here, and is unlikely at this rate with 4 MiB socket buffers.
	p.waitAll(t)
	s := p.a.Stats()
	if s.PacketsSent == 0 || s.SmoothedRTT <= 0 || s.SmoothedRTT > DefaultInitialRTT {
		t.Errorf("stats %+v", s)
	}
}
