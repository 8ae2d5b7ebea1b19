package channels

import (
	"math/rand/v2"
	"time"
)

// BBR constants (BBR v1, draft-cardwell-iccrg-bbr-congestion-control-00,
// and Linux's tcp_bbr.c where the draft leaves a choice).
const (
	bbrHighGain      = 2.885 // 2/ln 2: doubles the sending rate each round in Startup
	bbrDrainGain     = 1 / bbrHighGain
	bbrCwndGain      = 2.0
	bbrBwRounds      = 10 // the bandwidth filter's window, in round trips
	bbrFullBwGrowth  = 1.25
	bbrFullBwRounds  = 3
	bbrMinRTTWindow  = 10 * time.Second
	bbrProbeRTTTime  = 200 * time.Millisecond
	bbrMinCwndPkts   = 4
	bbrPacingMargin  = 0.99 // pace 1 % below the estimate so queues drain
	bbrExtraAckedWin = 5    // rounds of the ack aggregation filter, in two halves
	bbrMaxAggrTime   = 100 * time.Millisecond
)

// bbrCycle is ProbeBW's pacing gains, one phase per min RTT: probe for more
// bandwidth, drain what the probe queued, cruise.
var bbrCycle = [...]float64{1.25, 0.75, 1, 1, 1, 1, 1, 1}

type bbrMode uint8

const (
	bbrStartup bbrMode = iota
	bbrDrain
	bbrProbeBW
	bbrProbeRTT
)

// bbr is the default congestion controller: BBR v1 with Linux's ack
// aggregation allowance. It paces at the bottleneck bandwidth it measures
// (the highest delivery rate of the last ten round trips) and bounds what
// is in flight by twice the bandwidth-delay product. Loss is not a
// congestion signal to it: a path that drops a fifth of the packets at
// random still delivers four fifths of its bandwidth, which a loss-based
// controller (CUBIC) never gets near, and a queue that overflows shows in
// the delivery rate anyway. Scheduling delay that bunches acknowledgements
// (a busy machine) does not shrink the estimate either: each sample's
// interval is the longer of its send and ack intervals, and the ack
// aggregation allowance keeps the window from running dry between bunches.
// It is not safe for concurrent use.
type bbr struct {
	mss  int
	cwnd int
	mode bbrMode

	pacingGain, cwndGain float64
	pacing               float64 // bytes per second; 0 until the first estimate

	bw                 maxFilter     // delivery rate, bytes per second, by round
	minRTT             time.Duration // 0 until the first sample
	minRTTAt           time.Time
	probeRTTDone       time.Time
	probeRTTRoundDone  bool
	priorCwnd          int
	roundCount         uint64
	nextRoundDelivered uint64
	roundStart         bool
	filled             bool // Startup found the bottleneck
	fullBw             float64
	fullBwCount        int
	cycleIdx           int
	cycleAt            time.Time
	lossInEvent        bool
	srtt               time.Duration // the Conn's smoothed RTT, for the window

	// Random loss (see lossFactor): this round's bytes and smallest RTT
	// sample, and the smoothed loss rate of rounds that showed no queue.
	roundAcked, roundLost int
	roundMinRTT           time.Duration
	lossRate              float64
	lastRoundLoss         float64 // the share of the last round's bytes lost

	// Delivery rate estimation (draft-cheng-iccrg-delivery-rate-estimation).
	delivered       uint64 // bytes acknowledged, ever
	deliveredAt     time.Time
	firstSentAt     time.Time
	appLimitedUntil uint64 // delivered count that ends an app-limited stretch; 0: none
	rs              rateSample
	ackedInEvent    int

	// Ack aggregation (Linux bbr_update_ack_aggregation).
	ackEpochAt     time.Time
	ackEpochAcked  uint64
	extraAcked     [2]uint64
	extraIdx       int
	extraAckedRnds int
}

// rateSample is what an acknowledgement event says of the delivery rate:
// the newest packet it acknowledged, and what had been delivered when that
// packet was sent.
type rateSample struct {
	valid          bool
	priorDelivered uint64
	sendElapsed    time.Duration
	ackElapsed     time.Duration
	appLimited     bool
	rtt            time.Duration
}

func newBBR(mss int) *bbr {
	b := &bbr{mss: mss, cwnd: initialWindow(mss)}
	b.enterStartup()
	return b
}

func (b *bbr) congestionWindow() int { return b.cwnd }
func (b *bbr) minWindow() int        { return bbrMinCwndPkts * b.mss }
func (b *bbr) maxWindow() int        { return maxCongestionWindowPackets * b.mss }
func (b *bbr) undoReduction()        {}

func (b *bbr) enterStartup() {
	b.mode, b.pacingGain, b.cwndGain = bbrStartup, bbrHighGain, bbrHighGain
}

func (b *bbr) enterProbeBW(now time.Time) {
	b.mode, b.pacingGain, b.cwndGain = bbrProbeBW, 1, bbrCwndGain
	// Start in a cruising phase at random, so flows sharing a bottleneck
	// do not probe in step.
	b.cycleIdx = 2 + rand.IntN(len(bbrCycle)-2)
	b.cycleAt = now
	b.pacingGain = bbrCycle[b.cycleIdx]
}

// bdp is the bandwidth-delay product times gain, in bytes; 0 without an
// estimate.
func (b *bbr) bdp(gain float64) int {
	if b.minRTT == 0 || b.bw.get() == 0 {
		return 0
	}
	return int(gain * b.bw.get() * b.pathRTT().Seconds())
}

// onSent records in p what the rate estimate needs when p is acknowledged;
// inFlight is what was in flight before p.
func (b *bbr) onSent(now time.Time, p *sentPacket, inFlight int) {
	if inFlight == 0 {
		b.firstSentAt, b.deliveredAt = now, now
	}
	p.delivered = b.delivered
	p.deliveredAt = b.deliveredAt
	p.firstSentAt = b.firstSentAt
	p.appLimited = b.appLimitedUntil != 0
}

// onAppLimited marks the send stretch application-limited: the sender had
// nothing more to send though the window had room. Samples taken until
// what is in flight now is delivered say nothing of the path's bandwidth
// unless they exceed the estimate.
func (b *bbr) onAppLimited(inFlight int) {
	if inFlight < b.cwnd {
		b.appLimitedUntil = max(b.delivered+uint64(inFlight), 1)
	}
}

// onPacketAcked takes one newly acknowledged packet of an acknowledgement
// event.
func (b *bbr) onPacketAcked(now time.Time, p *sentPacket, _ int, rtt *rttStats) {
	b.srtt = rtt.smoothed
	b.delivered += uint64(p.size)
	b.deliveredAt = now
	b.ackedInEvent += p.size
	if b.rs.valid && p.delivered < b.rs.priorDelivered {
		return // an older packet than the event's newest
	}
	b.rs = rateSample{
		valid:          true,
		priorDelivered: p.delivered,
		sendElapsed:    p.sentAt.Sub(p.firstSentAt),
		ackElapsed:     now.Sub(p.deliveredAt),
		appLimited:     p.appLimited,
		rtt:            now.Sub(p.sentAt),
	}
	b.firstSentAt = p.sentAt
}

// onLoss counts the bytes of a packet declared lost, and onSpurious takes
// them back when it is acknowledged after all (reordering, not loss).
func (b *bbr) onLoss(bytes int)     { b.roundLost += bytes }
func (b *bbr) onSpurious(bytes int) { b.roundLost = max(b.roundLost-bytes, 0) }

// onCongestion notes a loss. BBR does not cut its window for it; the
// ProbeBW cycle ends a probe that caused one.
func (b *bbr) onCongestion(_, _ time.Time) bool {
	b.lossInEvent = true
	return false
}

// onPersistentCongestion: nothing got through for a while (RFC 9002
// §7.6). The window collapses and regrows as acknowledgements return.
func (b *bbr) onPersistentCongestion(time.Time) {
	b.cwnd = b.minWindow()
}

// onAckEvent updates the model once the packets an ACK frame acknowledged
// have gone through onPacketAcked, with inFlight what is in flight after
// them (and after the losses the frame revealed).
func (b *bbr) onAckEvent(now time.Time, inFlight int) {
	acked := b.ackedInEvent
	b.ackedInEvent = 0
	loss := b.lossInEvent
	b.lossInEvent = false
	if !b.rs.valid {
		return
	}
	rs := b.rs
	b.rs.valid = false
	if b.appLimitedUntil != 0 && b.delivered > b.appLimitedUntil {
		b.appLimitedUntil = 0
	}
	b.roundAcked += acked
	if rs.rtt > 0 && (b.roundMinRTT == 0 || rs.rtt < b.roundMinRTT) {
		b.roundMinRTT = rs.rtt
	}
	b.roundStart = false
	if rs.priorDelivered >= b.nextRoundDelivered {
		b.nextRoundDelivered = b.delivered
		b.roundCount++
		b.roundStart = true
		b.endRound()
	}
	b.sampleBandwidth(rs)
	b.updateAckAggregation(now, acked)
	b.checkFullPipe(rs)
	b.checkDrain(now, inFlight)
	b.updateCycle(now, inFlight, loss)
	b.updateMinRTT(now, rs.rtt, inFlight)
	b.setPacing()
	b.setCwnd(acked)
}

// Loss compensation: the random-loss rate is counted up to half the
// packets, and a round counts as queue-free while its smallest RTT sample
// is within a quarter (and 2 ms) of the min RTT.
const (
	bbrMaxLossComp   = 0.5
	bbrQueueFreeFrac = 0.25
	bbrQueueFreeMin  = 2 * time.Millisecond
	// Loss over twice the random-loss rate plus this is the bottleneck's
	// (far above what random loss varies by): it ends Startup once growth
	// stalls, and a ProbeBW probe.
	bbrLossExcess = 0.05
)

// endRound folds the round's loss into the random-loss rate: a round whose
// packets saw no queue lost them to something other than congestion (a
// lossy radio link, a policer upstream of nothing), so BBR sends enough
// more that what arrives still matches the bandwidth. A round that saw a
// queue lost them to it: no compensation, and what there was halves, so a
// flow that overruns a bottleneck backs off at once.
func (b *bbr) endRound() {
	total := b.roundAcked + b.roundLost
	b.lastRoundLoss = 0
	if total > 0 {
		b.lastRoundLoss = float64(b.roundLost) / float64(total)
	}
	if total > 0 && b.minRTT > 0 && b.roundMinRTT > 0 {
		queueFree := b.minRTT + max(time.Duration(float64(b.minRTT)*bbrQueueFreeFrac), bbrQueueFreeMin)
		if b.roundMinRTT <= queueFree {
			sample := float64(b.roundLost) / float64(total)
			b.lossRate += (sample - b.lossRate) / 4
		} else {
			b.lossRate /= 2
		}
	}
	b.roundAcked, b.roundLost, b.roundMinRTT = 0, 0, 0
}

// roundLossHigh reports that the round so far lost far more than random
// loss explains.
func (b *bbr) roundLossHigh() bool {
	total := b.roundAcked + b.roundLost
	return total > 0 && float64(b.roundLost)/float64(total) > 2*b.lossRate+bbrLossExcess
}

// lossFactor scales the sending rate and window for random loss: the
// delivery rate BBR measures is what arrived, so on a path that drops a
// fraction p at random, pacing at it sends (1-p) of the path's rate, the
// next measurement is lower again, and BBR spirals down (past p = 20 %,
// where ProbeBW's 1.25 gain no longer makes up for it).
//
// It makes up half the loss, not all of it. Where the loss is the
// bottleneck's own (a shallow queue overflowing, which delay alone cannot
// tell from random loss), full compensation would feed itself: sending
// more raises the loss, which raises the compensation. At half, sending
// above the bottleneck's rate has no equilibrium, so the flow settles
// below it; a path with 20 % random loss still gets 0.8/0.9 of its rate
// sent.
func (b *bbr) lossFactor() float64 {
	return 1 / (1 - min(b.lossRate, bbrMaxLossComp)/2)
}

func (b *bbr) sampleBandwidth(rs rateSample) {
	interval := max(rs.sendElapsed, rs.ackElapsed)
	if interval <= 0 || (b.minRTT > 0 && interval < b.minRTT) {
		return // ack compression or too short to say anything
	}
	rate := float64(b.delivered-rs.priorDelivered) / interval.Seconds()
	if !rs.appLimited || rate >= b.bw.get() {
		b.bw.update(bbrBwRounds, b.roundCount, rate)
	}
}

func (b *bbr) updateAckAggregation(now time.Time, acked int) {
	if acked <= 0 {
		return
	}
	if b.roundStart {
		b.extraAckedRnds++
		if b.extraAckedRnds >= bbrExtraAckedWin {
			b.extraAckedRnds = 0
			b.extraIdx = 1 - b.extraIdx
			b.extraAcked[b.extraIdx] = 0
		}
	}
	expected := uint64(b.bw.get() * now.Sub(b.ackEpochAt).Seconds())
	if b.ackEpochAcked <= expected || b.ackEpochAt.IsZero() {
		// Acknowledgements at or below the estimated rate: a new epoch.
		b.ackEpochAcked, b.ackEpochAt, expected = 0, now, 0
	}
	b.ackEpochAcked += uint64(acked)
	extra := min(b.ackEpochAcked-expected, uint64(b.cwnd))
	b.extraAcked[b.extraIdx] = max(b.extraAcked[b.extraIdx], extra)
}

// aggregationAllowance is the window added for acknowledgements that
// arrive in bunches, at most 100 ms of the bandwidth.
func (b *bbr) aggregationAllowance() int {
	if !b.filled {
		return 0
	}
	extra := float64(max(b.extraAcked[0], b.extraAcked[1]))
	return int(min(extra, b.bw.get()*bbrMaxAggrTime.Seconds()))
}

func (b *bbr) checkFullPipe(rs rateSample) {
	if b.filled || !b.roundStart || rs.appLimited {
		return
	}
	if bw := b.bw.get(); bw >= b.fullBw*bbrFullBwGrowth {
		b.fullBw, b.fullBwCount = bw, 0
		return
	}
	b.fullBwCount++
	// A round that lost far more than the random-loss rate explains while
	// the rate stopped growing: Startup overran the bottleneck's queue; three
	// more rounds at 2.885 times its rate would overrun a shallow one many
	// times over.
	if b.fullBwCount >= bbrFullBwRounds || b.lastRoundLoss > 2*b.lossRate+bbrLossExcess {
		b.filled = true
	}
}

func (b *bbr) checkDrain(now time.Time, inFlight int) {
	if b.mode == bbrStartup && b.filled {
		b.mode, b.pacingGain, b.cwndGain = bbrDrain, bbrDrainGain, bbrHighGain
	}
	if b.mode == bbrDrain && inFlight <= b.bdp(1) {
		b.enterProbeBW(now)
	}
}

func (b *bbr) updateCycle(now time.Time, inFlight int, loss bool) {
	if b.mode != bbrProbeBW {
		return
	}
	full := now.Sub(b.cycleAt) > b.pathRTT()
	next := full
	switch g := b.pacingGain; {
	case g > 1:
		// A probe lasts until it has put its extra in flight, or caused
		// loss beyond the random rate.
		next = full && (loss && b.roundLossHigh() || inFlight >= b.bdp(g))
	case g < 1:
		next = full || inFlight <= b.bdp(1)
	}
	if next {
		b.cycleIdx = (b.cycleIdx + 1) % len(bbrCycle)
		b.cycleAt = now
		b.pacingGain = bbrCycle[b.cycleIdx]
	}
}

func (b *bbr) updateMinRTT(now time.Time, rtt time.Duration, inFlight int) {
	expired := !b.minRTTAt.IsZero() && now.Sub(b.minRTTAt) > bbrMinRTTWindow
	if rtt > 0 && (b.minRTT == 0 || rtt < b.minRTT || expired) {
		b.minRTT, b.minRTTAt = rtt, now
	}
	if expired && b.mode != bbrProbeRTT {
		b.mode, b.pacingGain, b.cwndGain = bbrProbeRTT, 1, 1
		b.priorCwnd = max(b.priorCwnd, b.cwnd)
		b.probeRTTDone = time.Time{}
	}
	if b.mode != bbrProbeRTT {
		return
	}
	switch {
	case b.probeRTTDone.IsZero() && inFlight <= b.minWindow():
		// Drained to the floor: hold it 200 ms and a round, so the queue
		// the path holds empties and the min RTT is seen afresh.
		b.probeRTTDone = now.Add(bbrProbeRTTTime)
		b.probeRTTRoundDone = false
		b.nextRoundDelivered = b.delivered
	case !b.probeRTTDone.IsZero():
		if b.roundStart {
			b.probeRTTRoundDone = true
		}
		if b.probeRTTRoundDone && now.After(b.probeRTTDone) {
			b.minRTTAt = now
			b.cwnd = max(b.cwnd, b.priorCwnd)
			b.priorCwnd = 0
			if b.filled {
				b.enterProbeBW(now)
			} else {
				b.enterStartup()
			}
		}
	}
}

func (b *bbr) setPacing() {
	if b.pacing == 0 && b.minRTT > 0 {
		// As Linux: from the initial window over the first RTT, so one
		// small exchange's delivery rate does not pace what follows.
		b.pacing = bbrHighGain * float64(b.cwnd) / b.minRTT.Seconds()
	}
	bw := b.bw.get()
	if bw == 0 {
		return
	}
	rate := b.pacingGain * bw * bbrPacingMargin * b.lossFactor()
	if b.filled || rate > b.pacing {
		b.pacing = rate
	}
}

// pathRTT is the RTT the model works with: the smoothed RTT, between the
// min RTT and twice it. BBR uses the min RTT, which on a path whose delay
// varies (a radio link's jitter, a busy machine's scheduling) is well
// below the average: the window holds less than the average RTT needs, so
// it, not the pacing, sets the rate, and ProbeBW's probes end before their
// extra data has been acknowledged, so they cannot raise the estimate.
// Pacing still sets the rate, so the larger window does not build a
// queue.
func (b *bbr) pathRTT() time.Duration {
	return min(max(b.srtt, b.minRTT), 2*b.minRTT)
}

func (b *bbr) setCwnd(acked int) {
	target := int(float64(b.bdp(b.cwndGain)) * b.lossFactor())
	if target == 0 {
		target = initialWindow(b.mss)
	}
	target += 3*b.mss + b.aggregationAllowance()
	switch {
	case b.filled:
		b.cwnd = min(b.cwnd+acked, target)
	case b.cwnd < target || b.delivered < uint64(initialWindow(b.mss)):
		b.cwnd += acked
	}
	b.cwnd = min(max(b.cwnd, b.minWindow()), b.maxWindow())
	if b.mode == bbrProbeRTT {
		b.cwnd = min(b.cwnd, b.minWindow())
	}
}

// pacingRate is the rate packets are paced at, in bytes per second: the
// estimate times the phase's gain, or before any estimate the initial
// window over the RTT, times Startup's gain.
func (b *bbr) pacingRate(srtt time.Duration) float64 {
	if b.pacing > 0 {
		return b.pacing
	}
	if srtt <= 0 {
		srtt = time.Millisecond
	}
	return bbrHighGain * float64(b.cwnd) / srtt.Seconds()
}

// maxFilter is a windowed maximum, kept as the best three samples of
// successive parts of the window (Kathleen Nichols' algorithm, as Linux's
// lib/win_minmax.c). Time is in rounds.
type maxFilter struct{ s [3]filterSample }

type filterSample struct {
	t uint64
	v float64
}

func (m *maxFilter) get() float64 { return m.s[0].v }

func (m *maxFilter) reset(t uint64, v float64) {
	s := filterSample{t, v}
	m.s = [3]filterSample{s, s, s}
}

// update adds sample v at time t to a window of win and returns the max.
func (m *maxFilter) update(win, t uint64, v float64) float64 {
	n := filterSample{t, v}
	if v >= m.s[0].v || t-m.s[2].t > win {
		m.reset(t, v) // a new max, or nothing in the window
		return v
	}
	if v >= m.s[1].v {
		m.s[1], m.s[2] = n, n
	} else if v >= m.s[2].v {
		m.s[2] = n
	}
	dt := t - m.s[0].t
	switch {
	case dt > win:
		// The best is out of the window: the second becomes the best.
		m.s[0], m.s[1], m.s[2] = m.s[1], m.s[2], n
		if t-m.s[0].t > win {
			m.s[0], m.s[1], m.s[2] = m.s[1], m.s[2], n
		}
	case m.s[1].t == m.s[0].t && dt > win/4:
		// A quarter of the window passed with no second choice: take one.
		m.s[1], m.s[2] = n, n
	case m.s[2].t == m.s[1].t && dt > win/2:
		m.s[2] = n
	}
	return m.s[0].v
}
