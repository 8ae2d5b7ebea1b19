package channels

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestMaxFilter: the windowed max keeps the best sample while it is in
// the window, then falls to a sample of the window (Nichols' filter keeps
// three of them, not every one), and a new best replaces everything.
func TestMaxFilter(t *testing.T) {
	var m maxFilter
	samples := []float64{5, 3, 4, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	for r, v := range samples {
		got := m.update(10, uint64(r), v)
		inWindow := 0.0
		for k := max(0, r-10); k <= r; k++ {
			inWindow = max(inWindow, samples[k])
		}
		switch {
		case r <= 10 && got != 5:
			t.Errorf("round %d: max %v, want 5 (round 0's, in the window)", r, got)
		case r > 10 && (got > inWindow || got < v):
			t.Errorf("round %d: max %v, want a sample of the window (best %v)", r, got, inWindow)
		}
	}
	if got := m.update(10, 13, 9); got != 9 {
		t.Errorf("a new best: %v, want 9", got)
	}
	if got := m.update(10, 100, 0.5); got != 0.5 {
		t.Errorf("after a long gap: %v, want the new sample", got)
	}
}

// TestBBRKeepsItsEstimateWhileAppLimited: after a bulk transfer measured a
// 2 MB/s bottleneck, twenty seconds of game traffic (a small message every
// 16 ms, far below the rate) do not wear the estimate down, so the next
// burst goes out at the path's rate, not the trickle's; and the min RTT
// stays fresh without ProbeRTT being needed to find it.
func TestBBRKeepsItsEstimateWhileAppLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := simConfig{seed: 3, delay: 25 * time.Millisecond, rate: 2e6}
		p := newPair(t, path, path, Config{}, Config{})
		msg := make([]byte, 64<<10)
		for range 32 {
			for p.a.Send(1, msg, Reliable) != nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
		if !p.rb.waitFor(time.Minute, func() bool { return p.rb.count[1] == 32 }) {
			t.Fatal("bulk transfer did not finish")
		}
		estimate := func() (float64, time.Duration) {
			p.a.mu.Lock()
			defer p.a.mu.Unlock()
			b := p.a.cc.(*bbr)
			return b.bw.get(), b.minRTT
		}
		before, _ := estimate()
		for range 20 * 60 {
			if err := p.a.Send(2, []byte("state"), Reliable|FlushHint); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second / 60)
		}
		after, minRTT := estimate()
		t.Logf("bandwidth estimate %.0f KB/s after the bulk transfer, %.0f KB/s after 20 s of game traffic; min RTT %v", before/1e3, after/1e3, minRTT)
		if before < 1.5e6 {
			t.Errorf("estimate %.0f KB/s after a transfer through a 2 MB/s bottleneck", before/1e3)
		}
		if after < 0.9*before {
			t.Errorf("game traffic wore the estimate down from %.0f to %.0f KB/s", before/1e3, after/1e3)
		}
		if minRTT < 50*time.Millisecond || minRTT > 60*time.Millisecond {
			t.Errorf("min RTT %v, want the path's 50 ms", minRTT)
		}
	})
}
