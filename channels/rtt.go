package channels

import "time"

// timerGranularity is RFC 9002's kGranularity: the floor for loss delays and
// RTT variance in the probe timeout.
const timerGranularity = time.Millisecond

// rttStats estimates round-trip time as RFC 9002 §5 does, plus jitter in the
// manner of RFC 3550 §6.4.1 (mean deviation of successive samples).
// The zero value is not ready; use newRTTStats.
type rttStats struct {
	latest, smoothed, variance, min time.Duration
	jitter                          time.Duration
	hasSample                       bool
}

func newRTTStats(initial time.Duration) rttStats {
	return rttStats{smoothed: initial, variance: initial / 2}
}

// update adds a sample: latest is the time from sending the largest newly
// acknowledged packet to receiving its acknowledgement, ackDelay what the
// peer reported holding it, capped at maxAckDelay.
func (r *rttStats) update(latest, ackDelay, maxAckDelay time.Duration) {
	if latest <= 0 {
		latest = time.Microsecond
	}
	if !r.hasSample {
		r.hasSample = true
		r.latest, r.min, r.smoothed, r.variance = latest, latest, latest, latest/2
		return
	}
	prev := r.latest
	r.latest = latest
	r.min = min(r.min, latest)
	ackDelay = min(ackDelay, maxAckDelay)
	adjusted := latest
	if latest >= r.min+ackDelay {
		adjusted = latest - ackDelay
	}
	r.variance = (3*r.variance + absDuration(r.smoothed-adjusted)) / 4
	r.smoothed = (7*r.smoothed + adjusted) / 8
	r.jitter += (absDuration(latest-prev) - r.jitter) / 16
}

// pto is the probe timeout before backoff (RFC 9002 §6.2.1).
func (r *rttStats) pto(maxAckDelay time.Duration) time.Duration {
	return r.smoothed + max(4*r.variance, timerGranularity) + maxAckDelay
}

// lossDelay is the time threshold for declaring a packet lost (RFC 9002
// §6.1.2): (8+steps)/8 of the larger of the smoothed and latest RTT. steps
// starts at 1 (RFC 9002's 9/8) and grows when reordering made a loss
// declaration spurious.
func (r *rttStats) lossDelay(steps int) time.Duration {
	return max(max(r.latest, r.smoothed)*time.Duration(8+steps)/8, timerGranularity)
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
