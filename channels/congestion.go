package channels

import "time"

// CongestionControl names a congestion controller (Config.CongestionControl).
type CongestionControl uint8

const (
	// BBR, the default, paces at the bottleneck bandwidth it measures and
	// does not take random loss for congestion: a bulk transfer over a
	// lossy path keeps most of the path's rate, and a busy machine's
	// bunched acknowledgements do not throttle it.
	BBR CongestionControl = iota
	// CUBIC (RFC 9438) cuts its window by 30 % on each round
	// trip with a loss, as TCP does: fair to TCP on shared links, slow on
	// lossy ones.
	CUBIC
)

// congestionController is what the sender asks of congestion control.
// Windows are in bytes. It belongs to the Conn and runs under its lock.
type congestionController interface {
	congestionWindow() int
	// pacingRate is the rate to pace at, in bytes per second.
	pacingRate(srtt time.Duration) float64
	// onSent is told of an ack-eliciting packet p as it goes out, with
	// inFlight what was in flight before it.
	onSent(now time.Time, p *sentPacket, inFlight int)
	// onAppLimited: the sender ran out of data with inFlight in flight.
	onAppLimited(inFlight int)
	// onPacketAcked takes each packet an ACK frame newly acknowledges,
	// then onAckEvent the frame as a whole.
	onPacketAcked(now time.Time, p *sentPacket, priorInFlight int, rtt *rttStats)
	onAckEvent(now time.Time, inFlight int)
	// onCongestion is told of a loss of a packet sent at sentAt and
	// reports whether it reduced the window (undoReduction reverses that
	// if the loss proves spurious).
	onCongestion(now, sentAt time.Time) bool
	// onLoss counts the bytes of each packet declared lost, onSpurious
	// those of one acknowledged after all.
	onLoss(bytes int)
	onSpurious(bytes int)
	undoReduction()
	onPersistentCongestion(now time.Time)
}

func newController(cc CongestionControl, mss int) congestionController {
	if cc == CUBIC {
		return newCubic(mss)
	}
	return newBBR(mss)
}
