package channels

import (
	"math"
	"time"
)

// CUBIC constants (RFC 9438 §4).
const (
	cubicC    = 0.4
	cubicBeta = 0.7
	// cubicAlpha makes the Reno-friendly estimate grow as fast as Reno
	// would with the same average window (RFC 9438 §4.3).
	cubicAlpha = 3 * (1 - cubicBeta) / (1 + cubicBeta)

	maxCongestionWindowPackets = 10000
)

// cubic is the congestion controller: CUBIC (RFC 9438) for congestion
// avoidance, slow start, and the recovery and persistent-congestion rules of
// RFC 9002 §7. Windows are in bytes. It is not safe for concurrent use.
type cubic struct {
	mss      int
	window   int
	ssthresh int

	// recoveryStart is when the current recovery period began: losses of
	// packets sent before it do not reduce the window again.
	recoveryStart time.Time

	// Congestion avoidance epoch (RFC 9438 §4.2).
	epochStart time.Time // zero: a new epoch starts at the next ack
	wMax       float64   // window the cubic curve aims back for, in bytes
	cwndPrior  float64   // window just before the last reduction, in bytes
	k          float64   // seconds to grow back to wMax
	wEst       float64   // Reno-friendly estimate, in bytes

	// undo is the state before the last reduction, restored if the loss
	// that caused it proves spurious (the packet is acknowledged after all).
	undo      cubicState
	undoValid bool
}

// cubicState is what onCongestion changes, saved for undo.
type cubicState struct {
	window, ssthresh int
	recoveryStart    time.Time
	epochStart       time.Time
	wMax, cwndPrior  float64
	k, wEst          float64
}

func (c *cubic) save() cubicState {
	return cubicState{c.window, c.ssthresh, c.recoveryStart, c.epochStart, c.wMax, c.cwndPrior, c.k, c.wEst}
}

func newCubic(mss int) *cubic {
	return &cubic{
		mss:      mss,
		window:   initialWindow(mss),
		ssthresh: math.MaxInt,
	}
}

func (c *cubic) congestionWindow() int              { return c.window }
func (c *cubic) onSent(time.Time, *sentPacket, int) {}
func (c *cubic) onAppLimited(int)                   {}
func (c *cubic) onSpurious(int)                     {}
func (c *cubic) onLoss(int)                         {}
func (c *cubic) onAckEvent(time.Time, int)          {}
func (c *cubic) onPacketAcked(now time.Time, p *sentPacket, prior int, rtt *rttStats) {
	c.onAck(now, p.sentAt, p.size, prior, rtt)
}

// initialWindow is RFC 9002 §7.2's initial window.
func initialWindow(mss int) int { return min(10*mss, max(14720, 2*mss)) }

func (c *cubic) minWindow() int { return 2 * c.mss }
func (c *cubic) maxWindow() int { return maxCongestionWindowPackets * c.mss }

func (c *cubic) inSlowStart() bool { return c.window < c.ssthresh }

func (c *cubic) inRecovery(sentAt time.Time) bool {
	return !c.recoveryStart.IsZero() && !sentAt.After(c.recoveryStart)
}

// cwndLimited reports whether the sender was using its window, the
// condition for growing it (RFC 9002 §7.8). In slow start half the window
// counts, since the window doubles each round trip.
func (c *cubic) cwndLimited(inFlight int) bool {
	if c.inSlowStart() {
		return 2*inFlight >= c.window
	}
	return inFlight+3*c.mss >= c.window
}

// onAck grows the window for acked bytes of a packet sent at sentAt, while
// priorInFlight bytes were in flight before the ack was processed.
func (c *cubic) onAck(now, sentAt time.Time, acked, priorInFlight int, rtt *rttStats) {
	if c.inRecovery(sentAt) {
		return
	}
	if !c.cwndLimited(priorInFlight) {
		// Application limited: do not grow, and do not let idle time count
		// as time in the epoch (RFC 9438 §5.8).
		c.epochStart = time.Time{}
		return
	}
	if c.inSlowStart() {
		c.window = min(c.window+acked, c.maxWindow())
		return
	}
	c.congestionAvoidance(now, acked, rtt)
}

func (c *cubic) congestionAvoidance(now time.Time, acked int, rtt *rttStats) {
	mss := float64(c.mss)
	cwnd := float64(c.window)
	if c.epochStart.IsZero() {
		c.epochStart = now
		if c.wMax < cwnd {
			c.wMax = cwnd
			c.k = 0
		} else {
			c.k = math.Cbrt((c.wMax - cwnd) / mss / cubicC)
		}
		c.wEst = cwnd
	}
	t := now.Sub(c.epochStart).Seconds()

	// Reno-friendly estimate (RFC 9438 §4.3): it grows with alpha until it
	// reaches the window before the reduction, then as Reno does.
	alpha := cubicAlpha
	if c.wEst >= c.cwndPrior {
		alpha = 1
	}
	c.wEst += alpha * float64(acked) / cwnd * mss

	var next float64
	if c.wCubic(t) < c.wEst {
		next = c.wEst // Reno-friendly region
	} else {
		// Concave and convex regions (§4.4, §4.5): aim for the curve one
		// RTT ahead, at most 1.5 times the window.
		target := min(max(c.wCubic(t+rtt.smoothed.Seconds()), cwnd), 1.5*cwnd)
		next = cwnd + (target-cwnd)/cwnd*float64(acked)
	}
	c.window = min(max(int(next), c.window), c.maxWindow())
}

// wCubic is W_cubic(t) of RFC 9438 §4.2, in bytes.
func (c *cubic) wCubic(t float64) float64 {
	d := t - c.k
	return cubicC*d*d*d*float64(c.mss) + c.wMax
}

// onCongestion reduces the window for a loss of a packet sent at sentAt;
// one reduction per recovery period (RFC 9002 §7.3.2). It reports whether it
// reduced the window.
func (c *cubic) onCongestion(now, sentAt time.Time) bool {
	if c.inRecovery(sentAt) {
		return false
	}
	c.undo, c.undoValid = c.save(), true
	c.recoveryStart = now
	cwnd := float64(c.window)
	c.cwndPrior = cwnd
	// Fast convergence (RFC 9438 §4.7).
	if cwnd < c.wMax {
		c.wMax = cwnd * (1 + cubicBeta) / 2
	} else {
		c.wMax = cwnd
	}
	c.ssthresh = max(int(cwnd*cubicBeta), c.minWindow())
	c.window = c.ssthresh
	c.epochStart = time.Time{}
	return true
}

// undoReduction restores the state before the last reduction, once: the
// loss that caused it was spurious (reordering, not congestion).
func (c *cubic) undoReduction() {
	if !c.undoValid {
		return
	}
	u := c.undo
	c.window, c.ssthresh, c.recoveryStart, c.epochStart = max(c.window, u.window), u.ssthresh, u.recoveryStart, u.epochStart
	c.wMax, c.cwndPrior, c.k, c.wEst = u.wMax, u.cwndPrior, u.k, u.wEst
	c.undoValid = false
}

// onPersistentCongestion collapses the window (RFC 9002 §7.6.2).
func (c *cubic) onPersistentCongestion(now time.Time) {
	if !c.undoValid {
		c.undo, c.undoValid = c.save(), true
	}
	c.window = c.minWindow()
	c.recoveryStart = now
	c.epochStart = time.Time{}
	c.wMax = 0
}

// pacingRate is the rate, in bytes per second, at which the window may be
// spread over a round trip: twice the window per RTT in slow start, 1.25
// times after, as Linux paces.
func (c *cubic) pacingRate(srtt time.Duration) float64 {
	if srtt <= 0 {
		srtt = time.Millisecond
	}
	gain := 1.25
	if c.inSlowStart() {
		gain = 2
	}
	return gain * float64(c.window) / srtt.Seconds()
}
