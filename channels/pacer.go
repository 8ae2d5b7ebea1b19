package channels

import (
	"math"
	"time"
)

// minPacingDelay is the shortest wait the pacer asks for. Shorter timers
// cost more than they smooth, so below it the pacer lets a burst out; the
// burst is bounded by maxBurst.
const minPacingDelay = time.Millisecond

// pacer spreads packets over time with a token bucket refilled at the
// pacing rate, holding at most a burst of max(10 packets, 2 ms of rate).
// It is not safe for concurrent use.
type pacer struct {
	mss        int
	rate       float64 // bytes per second
	budget     float64 // tokens at lastSent
	lastSent   time.Time
	hasStarted bool
}

func newPacer(mss int) pacer { return pacer{mss: mss} }

func (p *pacer) maxBurst() float64 {
	return max(10*float64(p.mss), p.rate*2*minPacingDelay.Seconds())
}

func (p *pacer) setRate(bytesPerSecond float64) { p.rate = bytesPerSecond }

func (p *pacer) available(now time.Time) float64 {
	if !p.hasStarted {
		return p.maxBurst()
	}
	b := p.budget + p.rate*now.Sub(p.lastSent).Seconds()
	return min(b, p.maxBurst())
}

func (p *pacer) onSent(now time.Time, bytes int) {
	p.budget = max(p.available(now)-float64(bytes), 0)
	p.lastSent = now
	p.hasStarted = true
}

// nextSend returns when a full packet may be sent: a time not after now
// means at once.
func (p *pacer) nextSend(now time.Time) time.Time {
	avail := p.available(now)
	if avail >= float64(p.mss) || p.rate <= 0 {
		return now
	}
	wait := time.Duration(math.Ceil((float64(p.mss) - avail) / p.rate * 1e9))
	return now.Add(max(wait, minPacingDelay))
}
