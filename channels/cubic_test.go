package channels

import (
	"math"
	"testing"
	"time"
)

const cubicMSS = 1200

var cubicBase = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func cubicAt(d time.Duration) time.Time { return cubicBase.Add(d) }

func cubicRTT(srtt time.Duration) *rttStats {
	r := newRTTStats(srtt)
	r.update(srtt, 0, 0)
	return &r
}

// cubicAfterLoss returns a controller in congestion avoidance that has just
// reduced from w packets at cubicBase.
func cubicAfterLoss(t *testing.T, w int) *cubic {
	t.Helper()
	c := newCubic(cubicMSS)
	c.window = w * cubicMSS
	if !c.onCongestion(cubicBase, cubicBase) {
		t.Fatal("first loss did not reduce")
	}
	return c
}

type cubicSample struct {
	elapsed time.Duration // since the first ack
	window  int
}

// cubicRun acks a full window each round trip, one MSS at a time spread
// evenly, always window-limited, for d from start. Every packet acked was
// sent one RTT before its ack.
func cubicRun(t *testing.T, c *cubic, rtt *rttStats, start time.Time, d time.Duration) []cubicSample {
	t.Helper()
	srtt := rtt.smoothed
	var out []cubicSample
	for round := start; round.Before(start.Add(d)); round = round.Add(srtt) {
		n := c.window / c.mss
		for j := range n {
			now := round.Add(srtt * time.Duration(j) / time.Duration(n))
			c.onAck(now, now.Add(-srtt), c.mss, c.window, rtt)
			if c.window > c.maxWindow() {
				t.Fatalf("window %d over maxWindow %d", c.window, c.maxWindow())
			}
		}
		out = append(out, cubicSample{round.Add(srtt).Sub(start), c.window})
	}
	return out
}

func TestCubicInitialWindow(t *testing.T) {
	tests := []struct{ mss, want int }{
		{100, 1000},
		{1200, 12000},
		{1472, 14720},
		{1500, 14720},
		{9000, 18000},
	}
	for _, tt := range tests {
		if got := initialWindow(tt.mss); got != tt.want {
			t.Errorf("initialWindow(%d) = %d, want %d", tt.mss, got, tt.want)
		}
		c := newCubic(tt.mss)
		if c.window != tt.want || c.ssthresh != math.MaxInt || !c.inSlowStart() {
			t.Errorf("newCubic(%d): window %d ssthresh %d, want %d and unbounded slow start", tt.mss, c.window, c.ssthresh, tt.want)
		}
	}
}

func TestCubicSlowStart(t *testing.T) {
	rtt := cubicRTT(100 * time.Millisecond)
	tests := []struct {
		name     string
		inFlight int
		want     int
	}{
		{"window limited", 6000, 13200},
		{"fully used", 12000, 13200},
		{"application limited", 5999, 12000},
		{"idle", 0, 12000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCubic(cubicMSS)
			c.onAck(cubicAt(time.Second), cubicAt(900*time.Millisecond), cubicMSS, tt.inFlight, rtt)
			if c.window != tt.want {
				t.Fatalf("window %d, want %d", c.window, tt.want)
			}
		})
	}

	t.Run("doubles per round trip", func(t *testing.T) {
		c := newCubic(cubicMSS)
		now := cubicAt(time.Second)
		for round := range 5 {
			w := c.window
			for range w / cubicMSS {
				c.onAck(now, now.Add(-rtt.smoothed), cubicMSS, c.window, rtt)
			}
			if c.window != 2*w {
				t.Fatalf("round %d: window %d, want %d", round, c.window, 2*w)
			}
			now = now.Add(rtt.smoothed)
		}
	})
}

func TestCubicCwndLimited(t *testing.T) {
	c := newCubic(cubicMSS)
	c.window = 100 * cubicMSS
	// Slow start: half the window in flight counts.
	if c.cwndLimited(50*cubicMSS-1) || !c.cwndLimited(50*cubicMSS) {
		t.Fatal("slow start limit is not half the window")
	}
	c.ssthresh = 50 * cubicMSS
	// Congestion avoidance: within 3 MSS of the window counts.
	if c.cwndLimited(97*cubicMSS-1) || !c.cwndLimited(97*cubicMSS) {
		t.Fatal("congestion avoidance limit is not window - 3 MSS")
	}
}

func TestCubicCongestionEvent(t *testing.T) {
	c := newCubic(cubicMSS)
	c.window = 100 * cubicMSS
	t0 := cubicAt(time.Second)
	if !c.onCongestion(t0, t0.Add(-50*time.Millisecond)) {
		t.Fatal("loss did not reduce the window")
	}
	if c.window != 84000 || c.ssthresh != 84000 || c.wMax != 120000 || c.inSlowStart() {
		t.Fatalf("window %d ssthresh %d wMax %v, want 84000 84000 120000", c.window, c.ssthresh, c.wMax)
	}

	losses := []struct {
		name   string
		now    time.Time
		sentAt time.Time
		reduce bool
		window float64 // within a byte: 0.7*w is truncated
	}{
		{"sent before recovery", t0.Add(10 * time.Millisecond), t0.Add(-time.Millisecond), false, 84000},
		{"sent at recovery start", t0.Add(20 * time.Millisecond), t0, false, 84000},
		{"sent after recovery start", t0.Add(200 * time.Millisecond), t0.Add(time.Nanosecond), true, 58800},
		{"in the new recovery", t0.Add(300 * time.Millisecond), t0.Add(150 * time.Millisecond), false, 58800},
	}
	for _, l := range losses {
		if got := c.onCongestion(l.now, l.sentAt); got != l.reduce || math.Abs(float64(c.window)-l.window) > 1 {
			t.Fatalf("%s: reduced %v window %d, want %v %v", l.name, got, c.window, l.reduce, l.window)
		}
	}

	// Acks of packets sent before recovery began do not grow the window.
	rtt := cubicRTT(100 * time.Millisecond)
	w := c.window
	c.onAck(t0.Add(time.Second), t0.Add(200*time.Millisecond), cubicMSS, c.window, rtt)
	if c.window != w {
		t.Fatalf("ack in recovery grew the window from %d to %d", w, c.window)
	}
	// One sent after it does, in congestion avoidance.
	c.onAck(t0.Add(time.Second), t0.Add(201*time.Millisecond), cubicMSS, c.window, rtt)
	if c.window <= w {
		t.Fatalf("ack after recovery did not grow the window (%d)", c.window)
	}
}

func TestCubicMinimumWindow(t *testing.T) {
	c := newCubic(cubicMSS)
	c.window = 2 * cubicMSS
	c.onCongestion(cubicAt(time.Second), cubicAt(time.Second))
	if c.window != 2*cubicMSS || c.ssthresh != 2*cubicMSS {
		t.Fatalf("window %d ssthresh %d, want the 2 MSS floor", c.window, c.ssthresh)
	}
}

func TestCubicFastConvergence(t *testing.T) {
	tests := []struct {
		name       string
		second     int // window in MSS at the second loss
		wantWMax   float64
		wantWindow int
	}{
		{"below previous wMax", 80, 80 * cubicMSS * (1 + cubicBeta) / 2, 56 * cubicMSS},
		{"equal to previous wMax", 100, 100 * cubicMSS, 70 * cubicMSS},
		{"above previous wMax", 120, 120 * cubicMSS, 84 * cubicMSS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cubicAfterLoss(t, 100)
			c.window = tt.second * cubicMSS
			if !c.onCongestion(cubicAt(time.Second), cubicAt(500*time.Millisecond)) {
				t.Fatal("second loss did not reduce")
			}
			if math.Abs(c.wMax-tt.wantWMax) > 1e-6 || c.window != tt.wantWindow {
				t.Fatalf("wMax %v window %d, want %v %d", c.wMax, c.window, tt.wantWMax, tt.wantWindow)
			}
			// K follows the lowered wMax.
			rtt := cubicRTT(100 * time.Millisecond)
			now := cubicAt(2 * time.Second)
			c.onAck(now, now.Add(-100*time.Millisecond), cubicMSS, c.window, rtt)
			wantK := math.Cbrt((tt.wantWMax - float64(tt.wantWindow)) / cubicMSS / cubicC)
			if math.Abs(c.k-wantK) > 1e-9 {
				t.Fatalf("K = %v, want %v", c.k, wantK)
			}
		})
	}
}

// TestCubicCurve follows the window after a loss from 100 MSS with a long
// RTT, where the cubic curve rather than the Reno estimate governs.
func TestCubicCurve(t *testing.T) {
	const srtt = 200 * time.Millisecond
	c := cubicAfterLoss(t, 100)
	rtt := cubicRTT(srtt)
	wMax := 100.0 * cubicMSS
	k := math.Cbrt(100 * (1 - cubicBeta) / cubicC) // about 4.22 s
	kDur := time.Duration(k * float64(time.Second))

	start := cubicAt(srtt + time.Nanosecond) // first packet sent after the loss
	samples := cubicRun(t, c, rtt, start, kDur+4*time.Second)
	if math.Abs(c.k-k) > 1e-9 {
		t.Fatalf("K = %v, want %v", c.k, k)
	}
	wCubic := func(e time.Duration) float64 {
		d := e.Seconds() - k
		return cubicC*d*d*d*cubicMSS + wMax
	}
	prev := 0
	for _, s := range samples {
		w := float64(s.window)
		// Each ack aims one RTT ahead on the curve and the target is reached
		// within that RTT, so the window sits on the curve at the present.
		if want := wCubic(s.elapsed); math.Abs(w-want) > cubicMSS {
			t.Fatalf("at %v: window %.2f MSS, want within 1 MSS of the cubic curve's %.2f",
				s.elapsed, w/cubicMSS, want/cubicMSS)
		}
		if s.window < prev {
			t.Fatalf("at %v: window shrank from %d to %d", s.elapsed, prev, s.window)
		}
		prev = s.window
	}
	at := func(e time.Duration) float64 {
		for _, s := range samples {
			if s.elapsed >= e {
				return float64(s.window) / cubicMSS
			}
		}
		t.Fatalf("no sample at %v", e)
		return 0
	}
	if w := at(kDur / 2); w > 98 || w < 94 {
		t.Errorf("window %.1f MSS at K/2, want about 96 (concave approach)", w)
	}
	if w := at(kDur); math.Abs(w-100) > 2 {
		t.Errorf("window %.1f MSS at K, want about wMax 100", w)
	}
	if w := at(kDur + 3*time.Second); w < 108 {
		t.Errorf("window %.1f MSS at K+3s, want over wMax (about 110.8)", w)
	}
	// Growth slows into the plateau and speeds up after it.
	early := at(time.Second) - at(0)
	plateau := at(kDur+500*time.Millisecond) - at(kDur-500*time.Millisecond)
	late := at(kDur+4*time.Second) - at(kDur+3*time.Second)
	if plateau >= early || plateau >= late {
		t.Errorf("growth per second: %.1f early, %.1f at K, %.1f late; want least at K", early, plateau, late)
	}
}

// TestCubicRenoFriendly uses a short RTT, where Reno's per-RTT growth
// outpaces the cubic curve (RFC 9438 §4.3).
func TestCubicRenoFriendly(t *testing.T) {
	const srtt = 10 * time.Millisecond
	c := cubicAfterLoss(t, 100)
	rtt := cubicRTT(srtt)
	start := cubicAt(srtt + time.Nanosecond)
	samples := cubicRun(t, c, rtt, start, time.Second)
	k := math.Cbrt(100 * (1 - cubicBeta) / cubicC)

	byRound := func(r int) float64 { return float64(samples[r-1].window) / cubicMSS }
	// Below wMax the estimate grows by alpha = 3(1-b)/(1+b) MSS per RTT.
	if got, want := byRound(30), 70+30*cubicAlpha; math.Abs(got-want) > 1.5 {
		t.Errorf("after 30 RTTs: window %.2f MSS, want about %.2f", got, want)
	}
	cub := 100 + cubicC*math.Pow(0.31-k, 3)
	if byRound(30) < cub+5 {
		t.Errorf("after 30 RTTs: window %.2f MSS is not above the cubic curve %.2f", byRound(30), cub)
	}
	// Past wMax alpha becomes 1: one MSS per RTT.
	if got := byRound(100) - byRound(80); math.Abs(got-20) > 1.5 {
		t.Errorf("growth over 20 RTTs past wMax: %.2f MSS, want about 20", got)
	}
	if c.wEst < c.wMax {
		t.Fatalf("wEst %v did not pass wMax %v", c.wEst, c.wMax)
	}
	if math.Abs(float64(c.window)-c.wEst) > 1 {
		t.Fatalf("window %d does not follow the Reno estimate %.1f", c.window, c.wEst)
	}
}

func TestCubicApplicationLimited(t *testing.T) {
	rtt := cubicRTT(100 * time.Millisecond)
	c := cubicAfterLoss(t, 100) // window 70 MSS
	now := cubicAt(time.Second)
	c.onAck(now, now.Add(-100*time.Millisecond), cubicMSS, c.window, rtt)
	if !c.epochStart.Equal(now) {
		t.Fatalf("epoch started at %v, want %v", c.epochStart, now)
	}
	w := c.window
	// Under window - 3 MSS in flight: no growth, and the epoch ends so idle
	// time does not count toward the curve.
	for i := range 100 {
		now = now.Add(100 * time.Millisecond)
		c.onAck(now, now.Add(-100*time.Millisecond), cubicMSS, c.window-3*cubicMSS-1, rtt)
		if c.window != w || !c.epochStart.IsZero() {
			t.Fatalf("ack %d while application limited: window %d epoch %v", i, c.window, c.epochStart)
		}
	}
	// Ten seconds on, K is past. Counting the idle time would aim at the
	// 1.5x clamp and grow by acked/2; a fresh epoch grows by tens of bytes.
	c.onAck(now, now.Add(-100*time.Millisecond), cubicMSS, c.window, rtt)
	if !c.epochStart.Equal(now) {
		t.Fatal("epoch did not restart")
	}
	if c.window-w > 100 {
		t.Fatalf("window jumped from %d to %d after idle time", w, c.window)
	}
}

func TestCubicUndo(t *testing.T) {
	t0 := cubicAt(time.Second)
	t.Run("restores once", func(t *testing.T) {
		c := newCubic(cubicMSS)
		c.window, c.ssthresh = 100*cubicMSS, 200*cubicMSS
		before := *c
		c.onCongestion(t0, t0)
		c.undoReduction()
		if c.window != before.window || c.ssthresh != before.ssthresh || c.wMax != before.wMax ||
			!c.recoveryStart.Equal(before.recoveryStart) || c.undoValid {
			t.Fatalf("after undo: window %d ssthresh %d wMax %v recovery %v undoValid %v; want %d %d %v %v false",
				c.window, c.ssthresh, c.wMax, c.recoveryStart, c.undoValid,
				before.window, before.ssthresh, before.wMax, before.recoveryStart)
		}
		// Recovery is over: the same loss may reduce again.
		if !c.onCongestion(t0.Add(time.Millisecond), t0) {
			t.Fatal("no reduction after undo")
		}
		c.undoReduction()
		c.window = 90 * cubicMSS
		snap := *c
		c.undoReduction()
		if *c != snap {
			t.Fatal("a second undo changed the state")
		}
	})
	t.Run("keeps growth since", func(t *testing.T) {
		c := newCubic(cubicMSS)
		c.window = 100 * cubicMSS
		c.onCongestion(t0, t0)
		c.window = 110 * cubicMSS
		c.undoReduction()
		if c.window != 110*cubicMSS || c.wMax != 0 {
			t.Fatalf("window %d wMax %v, want 110 MSS kept and wMax restored to 0", c.window, c.wMax)
		}
	})
	t.Run("only the last reduction", func(t *testing.T) {
		c := newCubic(cubicMSS)
		c.window = 100 * cubicMSS
		c.onCongestion(t0, t0)
		c.onCongestion(t0.Add(time.Second), t0.Add(500*time.Millisecond))
		c.undoReduction()
		if c.window != 70*cubicMSS || c.ssthresh != 70*cubicMSS {
			t.Fatalf("window %d ssthresh %d, want the first reduction's 70 MSS", c.window, c.ssthresh)
		}
	})
	t.Run("no reduction to undo", func(t *testing.T) {
		c := newCubic(cubicMSS)
		snap := *c
		c.undoReduction()
		if *c != snap {
			t.Fatal("undo without a reduction changed the state")
		}
	})
}

func TestCubicPersistentCongestion(t *testing.T) {
	t0 := cubicAt(time.Second)
	rtt := cubicRTT(100 * time.Millisecond)
	t.Run("collapses", func(t *testing.T) {
		c := newCubic(cubicMSS)
		c.window = 100 * cubicMSS
		c.onCongestion(t0, t0)
		c.onPersistentCongestion(t0)
		if c.window != 2*cubicMSS || c.wMax != 0 || !c.epochStart.IsZero() {
			t.Fatalf("window %d wMax %v, want 2 MSS and 0", c.window, c.wMax)
		}
		// Below ssthresh again: packets sent after the collapse slow start.
		c.onAck(t0.Add(time.Second), t0.Add(time.Millisecond), cubicMSS, c.window, rtt)
		if c.window != 3*cubicMSS {
			t.Fatalf("window %d, want slow start to 3 MSS", c.window)
		}
		// Undo reaches back past the collapse to before the loss.
		c.undoReduction()
		if c.window != 100*cubicMSS || c.ssthresh != math.MaxInt {
			t.Fatalf("undo: window %d ssthresh %d, want 100 MSS and unbounded", c.window, c.ssthresh)
		}
	})
	t.Run("without a prior reduction", func(t *testing.T) {
		c := newCubic(cubicMSS)
		c.window, c.ssthresh = 100*cubicMSS, 50*cubicMSS
		c.onPersistentCongestion(t0)
		if c.window != 2*cubicMSS {
			t.Fatalf("window %d, want 2 MSS", c.window)
		}
		c.undoReduction()
		if c.window != 100*cubicMSS || c.ssthresh != 50*cubicMSS {
			t.Fatalf("undo: window %d ssthresh %d, want 100 and 50 MSS", c.window, c.ssthresh)
		}
	})
}

func TestCubicMaxWindow(t *testing.T) {
	rtt := cubicRTT(10 * time.Millisecond)
	maxW := maxCongestionWindowPackets * cubicMSS
	t.Run("slow start", func(t *testing.T) {
		c := newCubic(cubicMSS)
		c.window = maxW - 100
		now := cubicAt(time.Second)
		c.onAck(now, now.Add(-time.Millisecond), 10*cubicMSS, c.window, rtt)
		if c.window != maxW {
			t.Fatalf("window %d, want capped at %d", c.window, maxW)
		}
	})
	t.Run("congestion avoidance", func(t *testing.T) {
		rtt := cubicRTT(500 * time.Millisecond) // few rounds of 10000 acks
		c := newCubic(cubicMSS)
		c.window = maxW / 2
		c.onCongestion(cubicBase, cubicBase)
		c.wMax = 4 * float64(maxW) // a curve aiming far above the cap
		// cubicRun fails if the window passes the cap on any ack.
		cubicRun(t, c, rtt, cubicAt(rtt.smoothed+time.Nanosecond), 10*time.Second)
		if c.window != maxW {
			t.Fatalf("window %d, want to reach the cap %d", c.window, maxW)
		}
	})
}

func TestCubicPacingRate(t *testing.T) {
	tests := []struct {
		name     string
		window   int
		ssthresh int
		srtt     time.Duration
		want     float64
	}{
		{"slow start", 12000, math.MaxInt, 100 * time.Millisecond, 240000},
		{"congestion avoidance", 12000, 12000, 100 * time.Millisecond, 150000},
		{"above ssthresh", 24000, 12000, 50 * time.Millisecond, 600000},
		{"zero srtt is 1ms", 12000, math.MaxInt, 0, 24e6},
		{"negative srtt is 1ms", 12000, 12000, -time.Second, 15e6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCubic(cubicMSS)
			c.window, c.ssthresh = tt.window, tt.ssthresh
			if got := c.pacingRate(tt.srtt); math.Abs(got-tt.want) > 1e-6*tt.want {
				t.Fatalf("pacingRate = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestCubicRenoAlphaAfterFastConvergence: RFC 9438 §4.3 raises alpha to 1
// once W_est reaches cwnd_prior, the window before the reduction. Fast
// convergence lowers wMax below cwnd_prior, so switching at wMax would speed
// growth exactly when fast convergence means to slow it (the bug fixed in
// NTAP/rfc8312bis#146 before publication).
func TestCubicRenoAlphaAfterFastConvergence(t *testing.T) {
	const srtt = 10 * time.Millisecond // short: the Reno estimate governs
	c := cubicAfterLoss(t, 100)
	c.window = 80 * cubicMSS // cwnd_prior of the next reduction
	c.onCongestion(cubicAt(time.Second), cubicAt(500*time.Millisecond))
	if c.window != 56*cubicMSS || c.wMax != 68*cubicMSS {
		t.Fatalf("window %d wMax %v, want 56 and 68 MSS", c.window, c.wMax)
	}
	rtt := cubicRTT(srtt)
	samples := cubicRun(t, c, rtt, cubicAt(time.Second+srtt+time.Nanosecond), 40*srtt)
	// W_est stays below cwnd_prior (80 MSS) for the 40 RTTs, so it grows
	// by alpha per RTT throughout; the cubic curve is near 60 MSS.
	got := float64(samples[39].window) / cubicMSS
	if want := 56 + 40*cubicAlpha; math.Abs(got-want) > 1.5 {
		t.Fatalf("after 40 RTTs: window %.2f MSS, want about %.2f (alpha %.3f until cwnd_prior 80 MSS)", got, want, cubicAlpha)
	}
}
