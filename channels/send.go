package channels

import (
	"time"
)

// Send queues data on channel with flags. It returns ErrInvalidFlags,
// ErrTooLarge, ErrQueueFull, or the Conn's end error. Data is copied; the
// caller may reuse it at once. Without FlushHint the message may wait up to
// Config.NagleDelay to share a datagram.
func (c *Conn) Send(channel uint16, data []byte, flags Flags) error {
	return c.send(channel, data, flags, true)
}

// Queue is Send that leaves the writing to the Conn's timer goroutine, a
// moment later: a caller holding a lock of its own does not write to the
// Link under it. Messages queued and sent keep the order of the calls.
func (c *Conn) Queue(channel uint16, data []byte, flags Flags) error {
	return c.send(channel, data, flags, false)
}

func (c *Conn) send(channel uint16, data []byte, flags Flags, write bool) error {
	if err := flags.Validate(); err != nil {
		return err
	}
	k := flags.kind()
	limit := c.maxUnrel
	if k == kindReliable {
		limit = c.cfg.MaxReliableSize
	}
	if len(data) > limit {
		return ErrTooLarge
	}
	c.mu.Lock()
	if c.closed {
		err := c.closeErr
		c.mu.Unlock()
		return err
	}
	sc := c.sendChannelLocked(channel)
	if !c.admitLocked(sc, len(data)) {
		c.stats.queueFull++
		c.mu.Unlock()
		return ErrQueueFull
	}
	now := time.Now()
	c.enqueueLocked(sc, k, data, now)
	if flags&FlushHint != 0 || c.cfg.NagleDelay == 0 {
		c.flushReq = true
	} else if c.nagleDeadline.IsZero() {
		c.nagleDeadline = now.Add(c.cfg.NagleDelay)
	}
	var b *batch
	if write {
		b = c.buildLocked(now)
	}
	c.armLocked(now)
	c.writeUnlock(b)
	return nil
}

// Flush sends everything queued now, as FlushHint does, without a message.
func (c *Conn) Flush() error {
	c.mu.Lock()
	if c.closed {
		err := c.closeErr
		c.mu.Unlock()
		return err
	}
	now := time.Now()
	if c.unsentMsgs > 0 {
		c.flushReq = true
	}
	b := c.buildLocked(now)
	c.armLocked(now)
	c.writeUnlock(b)
	return nil
}

// sendChannelLocked returns channel's send state, made on first use.
func (c *Conn) sendChannelLocked(channel uint16) *sendChannel {
	sc := c.sendChans[channel]
	if sc == nil {
		sc = &sendChannel{id: channel, prio: c.channelPriority(channel)}
		c.sendChans[channel] = sc
	}
	return sc
}

// admitLocked reports whether n more bytes on sc fit the send queue
// (Config.SendQueueBytes and ChannelQueueBytes say how).
func (c *Conn) admitLocked(sc *sendChannel, n int) bool {
	if sc.queuedBytes+n > c.cfg.ChannelQueueBytes {
		return false
	}
	if c.queuedBytes+n <= c.cfg.SendQueueBytes {
		return true
	}
	busy := c.busyChans
	if sc.queuedBytes == 0 {
		busy++
	}
	// Past the bound: a channel below its fair share still gets in, up to
	// twice the bound (one channel holds at most the bound itself, so
	// the others always have that much).
	return sc.queuedBytes+n <= c.cfg.SendQueueBytes/busy && c.queuedBytes+n <= 2*c.cfg.SendQueueBytes
}

func (c *Conn) enqueueLocked(sc *sendChannel, k kind, data []byte, now time.Time) {
	channel := sc.id
	m := c.newMsgLocked(len(data))
	m.kind, m.channel, m.sc, m.queuedAt = k, channel, sc, now.UnixNano()
	m.data = append(m.data[:0], data...)
	m.frag = len(data) > c.fragSize
	m.nfrags = 1
	if m.frag {
		m.nfrags = int(fragCount(uint64(len(data)), uint64(c.fragSize)))
	}
	switch k {
	case kindReliable:
		m.seq = sc.relSeq
		sc.relSeq++
		m.acked.reset(m.nfrags)
		m.queued.reset(m.nfrags)
		m.extra.reset(m.nfrags)
		sc.queue.push(m)
		if sc.queue.len() == 1 {
			c.newChans++
		}
		c.scheduleLocked(sc)
		c.creditBlocked = false
	case kindSequenced:
		m.seq = sc.seqdSeq
		sc.seqdSeq++
		c.unrel.push(m)
	default:
		m.seq = sc.unseqSeq
		sc.unseqSeq++
		c.unrel.push(m)
	}
	if sc.queuedBytes == 0 && len(data) > 0 {
		c.busyChans++
	}
	sc.queuedBytes += len(data)
	c.queuedBytes += len(data)
	c.queuedMsgs++
	c.unsentBytes += len(data)
	c.unsentMsgs++
	c.stats.msgsSent++
}

// Recycling of sent messages: at most maxFreeMsgs are kept (dropped when
// the Conn goes idle), each with a data buffer of at most maxRecycledData.
const (
	maxFreeMsgs     = 1024
	maxRecycledData = 4 << 10
)

// newMsgLocked returns a message with room for n bytes of data: a recycled
// one, or one carved from the Conn's slabs, so queueing many messages costs
// a fraction of an allocation each. A slab is freed by the GC once none of
// its messages is referenced.
func (c *Conn) newMsgLocked(n int) *outMsg {
	var m *outMsg
	if k := len(c.freeMsgs); k > 0 {
		m = c.freeMsgs[k-1]
		c.freeMsgs = c.freeMsgs[:k-1]
	} else {
		if len(c.msgSlab) == 0 {
			c.msgSlab = make([]outMsg, msgSlabLen)
		}
		m = &c.msgSlab[0]
		c.msgSlab = c.msgSlab[1:]
	}
	if cap(m.data) < n {
		m.data = c.carveLocked(n)
	}
	return m
}

// carveLocked returns an empty buffer of capacity n, from the data slab
// when n is small.
func (c *Conn) carveLocked(n int) []byte {
	if n > maxCarved {
		return make([]byte, 0, n)
	}
	n = max(n, minCarved)
	if cap(c.dataSlab)-len(c.dataSlab) < n {
		c.dataSlab = make([]byte, 0, dataSlabLen)
	}
	start := len(c.dataSlab)
	c.dataSlab = c.dataSlab[:start+n]
	return c.dataSlab[start : start : start+n]
}

// Slab sizes for queued messages.
const (
	msgSlabLen  = 64
	dataSlabLen = 16 << 10
	minCarved   = 16
	maxCarved   = 1 << 10
)

// releaseMsgLocked drops a message that is done: acknowledged (reliable) or
// sent (unreliable).
func (c *Conn) releaseMsgLocked(m *outMsg) {
	c.queuedBytes -= len(m.data)
	c.queuedMsgs--
	if sc := m.sc; sc != nil {
		sc.queuedBytes -= len(m.data)
		if sc.queuedBytes == 0 && len(m.data) > 0 {
			c.busyChans--
		}
		m.sc = nil
	}
	c.signalQueueLocked()
	m.gen++
	m.nextFrag, m.nacked, m.charged = 0, 0, false
	if cap(m.data) > maxRecycledData {
		m.data = nil
	} else {
		m.data = m.data[:0]
	}
	if len(c.freeMsgs) < maxFreeMsgs {
		c.freeMsgs = append(c.freeMsgs, m)
	}
}

// dataReady reports whether unsent data may go now rather than wait for
// more to share its datagram.
func (c *Conn) dataReady(now time.Time) bool {
	return c.flushReq || c.unsentBytes+4*c.unsentMsgs >= c.fragSize ||
		(!c.nagleDeadline.IsZero() && !now.Before(c.nagleDeadline))
}

// newDataWaiting reports whether there is unsent data that nothing but
// Nagle, pacing or the congestion window holds back.
func (c *Conn) newDataWaiting() bool {
	return c.unrel.len() > 0 || (c.newChans > 0 && !c.creditBlocked)
}

// canSendData reports whether congestion control and pacing let an
// ack-eliciting data packet out now. Probes bypass both.
func (c *Conn) canSendData(now time.Time) bool {
	if c.probes > 0 {
		return true
	}
	return c.inFlight < c.cc.congestionWindow() && !c.pacer.nextSend(now).After(now)
}

// buildLocked builds the datagrams that may be sent now, up to maxBatch.
func (c *Conn) buildLocked(now time.Time) *batch {
	if c.closed {
		return nil
	}
	var b *batch
	for {
		if b != nil && len(b.dgrams) == maxBatch {
			// More may be sendable: the timer work goes on.
			c.armed = now
			c.timers.earlier(c, now)
			return b
		}
		canData := c.canSendData(now)
		wantData := canData && (c.retxCount > 0 || (c.newDataWaiting() && c.dataReady(now)))
		wantCtl := c.pendingClose || c.pendingPing || c.pendingMaxData || c.probes > 0
		wantAck := c.ackPending && (wantData || wantCtl || !now.Before(c.ackDeadline))
		if !wantData && !wantCtl && !wantAck {
			if canData && c.retxCount == 0 {
				c.cc.onAppLimited(c.inFlight) // the window has room the sender cannot use
			}
			return b
		}
		if b == nil {
			b = getBatch()
		}
		buf := b.next(c.bufSize)
		d, ok := c.buildPacket(buf, now, canData)
		if !ok {
			return b
		}
		b.dgrams = append(b.dgrams, d)
		if c.pendingClose {
			c.pendingClose = false
			return b
		}
	}
}

// buildPacket fills one datagram. canData says whether data frames may be
// added. It reports false when nothing worth sending was written.
func (c *Conn) buildPacket(buf []byte, now time.Time, canData bool) ([]byte, bool) {
	h := c.cfg.Headroom
	buf = buf[:h]
	pn := c.nextPN
	buf = appendHeader(buf, pn)
	limit := h + c.cfg.MaxDatagramSize

	hasAck := false
	if c.ackPending {
		ackLimit := limit - len(buf)
		if canData && (c.retxCount > 0 || c.newDataWaiting()) {
			ackLimit = ackReserve
		}
		ranges := c.recv.appendDescending(c.ackScratch[:0], maxAckRanges)
		c.ackScratch = ranges
		delay := now.Sub(c.largestRecvAt)
		n := len(buf)
		buf = appendAck(buf, ranges, delay, c.maxDataLimit(), ackLimit)
		hasAck = len(buf) > n
	}
	if c.pendingClose {
		buf = append(buf, frameTypeClose, 0)
		return c.finishPacket(buf, now, pn, hasAck, false, 0, nil)
	}

	sp := c.history.push(pn)
	var control uint8
	if c.pendingMaxData {
		c.sentMaxData = c.maxDataLimit()
		buf = append(buf, frameTypeMaxData)
		buf = appendVarint(buf, c.sentMaxData)
		control |= ctlMaxData
		c.pendingMaxData = false
	}
	dataStart := len(buf)
	if canData {
		buf = c.appendUnreliable(buf, limit, now)
		buf = c.appendReliable(buf, limit, sp)
		if len(buf) > dataStart && !c.cfg.NoRedundancy {
			buf = c.appendRedundant(buf, limit, sp, now)
		}
	}
	eliciting := len(buf) > dataStart || control != 0
	if !eliciting && (c.pendingPing || c.probes > 0) {
		buf = append(buf, frameTypePing)
		control |= ctlPing
		eliciting = true
	}
	if !eliciting && !hasAck {
		c.history.n-- // nothing written: give the slot back
		return nil, false
	}
	return c.finishPacket(buf, now, pn, hasAck, eliciting, control, sp)
}

// finishPacket records a built packet and updates sender state.
func (c *Conn) finishPacket(buf []byte, now time.Time, pn uint64, hasAck, eliciting bool, control uint8, sp *sentPacket) ([]byte, bool) {
	c.nextPN++
	size := len(buf) + c.cfg.Tailroom
	if sp == nil {
		sp = c.history.push(pn)
	}
	sp.sentAt = now
	sp.size = size
	sp.eliciting = eliciting
	sp.control = control
	if eliciting {
		c.cc.onSent(now, sp, c.inFlight)
		c.inFlight += size
		c.lastEliciting = now
		c.pacer.onSent(now, size)
		c.pendingPing = false
		if c.probes > 0 {
			c.probes--
		}
	} else {
		sp.state = pktAcked // nothing to wait for
		c.trimLocked(now)
	}
	if hasAck {
		c.ackPending = false
		c.elicitingUnack = 0
		c.ackDeadline = time.Time{}
	}
	c.stats.pktsOut++
	c.stats.bytesOut += uint64(size)
	return buf, true
}

// msgFrameLen is the encoded length of fragment i of m (the whole message
// when m is not fragmented).
func (c *Conn) msgFrameLen(m *outMsg, i, n int) int {
	if m.frag {
		return fragHeaderLen(m.channel, m.seq, uint64(len(m.data)), uint64(c.fragSize), uint64(i), n) + n
	}
	return msgHeaderLen(m.kind, m.channel, m.seq, n) + n
}

func (c *Conn) appendFrame(buf []byte, m *outMsg, i int, data []byte) []byte {
	return appendMsg(buf, m.kind, m.frag, m.channel, m.seq, uint64(len(m.data)), uint64(c.fragSize), uint64(i), data, true)
}

// appendUnreliable adds queued unreliable messages, oldest first, dropping
// those that waited longer than UnreliableMaxWait.
func (c *Conn) appendUnreliable(buf []byte, limit int, now time.Time) []byte {
	expired := now.UnixNano() - int64(c.cfg.UnreliableMaxWait)
	for c.unrel.len() > 0 {
		m := c.unrel.peek()
		i := m.nextFrag
		if i == 0 && m.queuedAt < expired {
			c.stats.unreliableExpired++
			c.dropUnsentUnreliable(m)
			continue
		}
		data := m.fragment(i, c.fragSize)
		if len(buf)+c.msgFrameLen(m, i, len(data)) > limit {
			break
		}
		buf = c.appendFrame(buf, m, i, data)
		m.nextFrag++
		c.unsentBytes -= len(data)
		if m.nextFrag == m.nfrags {
			c.unrel.pop()
			c.unsentMsgs--
			c.releaseMsgLocked(m)
		}
	}
	c.noteDrainedLocked()
	return buf
}

// dropUnsentUnreliable removes m, the head of the unreliable queue, unsent.
func (c *Conn) dropUnsentUnreliable(m *outMsg) {
	c.unrel.pop()
	c.unsentMsgs--
	c.unsentBytes -= len(m.data)
	c.releaseMsgLocked(m)
}

// Redundancy limits: fragments up to maxRedundantFrame bytes, from packets
// sent at least redundantMinAge ago (a copy sent at the same moment shares
// the original's fate) and at most one smoothed RTT ago (older ones are for
// loss detection), looking back at most redundantScan packets.
const (
	maxRedundantFrame = 256
	redundantMinAge   = time.Millisecond
	redundantScan     = 8
)

// appendRedundant fills the room left in a datagram that carries new data
// with one more copy of small reliable fragments sent recently and not yet
// acknowledged. A game's datagrams are mostly empty, so this costs no extra
// datagrams, and a single lost one then delays its messages by one send
// interval instead of a round trip. Each fragment gets at most one copy.
func (c *Conn) appendRedundant(buf []byte, limit int, sp *sentPacket, now time.Time) []byte {
	newest := now.Add(-redundantMinAge)
	oldest := now.Add(-c.rtt.smoothed)
	for i, scanned := c.history.n-2, 0; i >= 0 && scanned < redundantScan; i, scanned = i-1, scanned+1 {
		p := c.history.slot(i)
		if p.sentAt.Before(oldest) {
			break
		}
		if p.state != pktOutstanding || p.sentAt.After(newest) {
			continue
		}
		for _, f := range p.frames {
			m, j := f.msg, int(f.frag)
			if f.gen != m.gen || m.acked.has(j) || m.queued.has(j) || m.extra.has(j) {
				continue
			}
			data := m.fragment(j, c.fragSize)
			if len(data) > maxRedundantFrame {
				continue
			}
			if len(buf)+c.msgFrameLen(m, j, len(data)) > limit {
				return buf
			}
			m.extra.set(j)
			buf = c.appendFrame(buf, m, j, data)
			sp.frames = append(sp.frames, f)
			c.stats.redundant++
		}
	}
	return buf
}

// minFrameRoom is the least space worth trying to fill with another frame.
const minFrameRoom = 8

// noteDrainedLocked resets Nagle state once no unsent data is left.
func (c *Conn) noteDrainedLocked() {
	if c.unsentMsgs == 0 {
		c.flushReq = false
		c.nagleDeadline = time.Time{}
	}
}

// maxDataLimit is the cumulative reliable window this end grants the peer.
func (c *Conn) maxDataLimit() uint64 { return c.released + uint64(c.cfg.ReceiveWindow) }

// onAckFrame processes an ACK frame: ranges are descending.
func (c *Conn) onAckFrame(now time.Time, ranges []pnRange, ackDelay time.Duration, maxData uint64) {
	if maxData > c.peerMaxData {
		c.peerMaxData = maxData
		c.creditBlocked = false
	}
	largest := ranges[0].hi
	if !c.hasAcked || largest > c.largestAcked {
		c.largestAcked, c.hasAcked = largest, true
	}
	if p := c.history.get(largest); p != nil && p.state == pktOutstanding && p.eliciting {
		c.rtt.update(now.Sub(p.sentAt), ackDelay, c.cfg.MaxAckDelay)
	}
	prior := c.inFlight
	newly := false
	for _, r := range ranges {
		lo := max(r.lo, c.history.firstPN)
		for pn := lo; pn <= r.hi; pn++ {
			p := c.history.get(pn)
			if p == nil {
				break
			}
			switch p.state {
			case pktOutstanding:
				newly = true
				c.onPacketAcked(now, p, prior)
			case pktLost:
				c.onSpuriousLoss(p)
			}
		}
	}
	if !newly {
		return
	}
	c.ptoCount = 0
	c.detectLostLocked(now)
	c.cc.onAckEvent(now, c.inFlight)
	c.trimLocked(now)
	c.pacer.setRate(c.cc.pacingRate(c.rtt.smoothed))
}

// trimLocked drops resolved packets from the sent history, keeping lost ones
// long enough for a late acknowledgement to show the loss was spurious.
func (c *Conn) trimLocked(now time.Time) {
	c.history.trim(now.Add(-2 * (c.rtt.smoothed + c.rtt.lossDelay(c.reorderSteps))))
}

// onSpuriousLoss handles the acknowledgement of a packet declared lost: it
// was reordered or delayed, not lost. Its fragments count as delivered, the
// loss thresholds widen so the same reordering is tolerated next time (as
// RACK does), and a window reduction it caused is undone.
func (c *Conn) onSpuriousLoss(p *sentPacket) {
	p.state = pktAcked
	c.stats.spurious++
	c.cc.onSpurious(p.size)
	c.ackFrames(p)
	if p.lostGap > 0 {
		c.pktThreshold = min(max(c.pktThreshold, uint64(p.lostGap)+1), maxPacketThreshold)
	} else {
		c.reorderSteps = min(c.reorderSteps+1, maxReorderSteps)
	}
	if c.hasTrigger && p.pn == c.recoveryTrigger {
		c.cc.undoReduction()
		c.hasTrigger = false
	}
}

func (c *Conn) onPacketAcked(now time.Time, p *sentPacket, priorInFlight int) {
	p.state = pktAcked
	if !p.eliciting {
		return
	}
	c.inFlight -= p.size
	c.stats.pktsAcked++
	c.cc.onPacketAcked(now, p, priorInFlight, &c.rtt)
	c.ackFrames(p)
}

// ackFrames marks p's reliable fragments acknowledged and releases messages
// that are complete.
func (c *Conn) ackFrames(p *sentPacket) {
	for _, f := range p.frames {
		m := f.msg
		if f.gen != m.gen {
			continue
		}
		if m.acked.set(int(f.frag)) {
			m.nacked++
			if m.nacked == m.nfrags {
				c.releaseMsgLocked(m)
			}
		}
	}
}

// detectLostLocked declares packets lost by the packet and time thresholds
// of RFC 9002 §6.1 and arms lossTime for the ones not yet past it.
func (c *Conn) detectLostLocked(now time.Time) {
	c.lossTime = time.Time{}
	if !c.hasAcked {
		return
	}
	lossDelay := c.rtt.lossDelay(c.reorderSteps)
	lostBefore := now.Add(-lossDelay)
	var lastLost time.Time
	var lastLostPN uint64
	runStart := time.Time{} // start of the current run of lost eliciting packets
	persistent := false
	pcDuration := c.persistentDuration()
	for pn := c.history.firstPN; pn < c.largestAcked; pn++ {
		p := c.history.get(pn)
		if p == nil {
			break
		}
		if p.state == pktAcked {
			runStart = time.Time{}
			continue
		}
		if p.state != pktOutstanding || !p.eliciting {
			continue
		}
		byTime := !p.sentAt.After(lostBefore)
		if byTime || c.largestAcked >= pn+c.pktThreshold {
			p.lostGap = 0
			if !byTime {
				p.lostGap = uint32(min(c.largestAcked-pn, 1<<31))
			}
			c.onPacketLost(p)
			lastLost, lastLostPN = p.sentAt, pn
			if runStart.IsZero() {
				runStart = p.sentAt
			} else if c.rtt.hasSample && p.sentAt.Sub(runStart) > pcDuration {
				persistent = true
			}
			continue
		}
		runStart = time.Time{}
		if t := p.sentAt.Add(lossDelay); c.lossTime.IsZero() || t.Before(c.lossTime) {
			c.lossTime = t
		}
	}
	if lastLost.IsZero() {
		return
	}
	if c.cc.onCongestion(now, lastLost) {
		c.recoveryTrigger, c.hasTrigger = lastLostPN, true
	}
	if persistent {
		c.cc.onPersistentCongestion(now)
	}
}

// Loss thresholds. The packet threshold starts at RFC 9002's
// kPacketThreshold and the time threshold at 9/8 RTT; both widen when
// reordering made a declared loss spurious.
const (
	initialPacketThreshold = 3
	maxPacketThreshold     = 64
	initialReorderSteps    = 1 // lossDelay = (8+steps)/8 RTT
	maxReorderSteps        = 8 // up to 2 RTT
)

// persistentDuration is RFC 9002 §7.6.1's persistent congestion duration.
func (c *Conn) persistentDuration() time.Duration {
	return 3 * c.rtt.pto(c.cfg.MaxAckDelay)
}

func (c *Conn) onPacketLost(p *sentPacket) {
	p.state = pktLost
	c.inFlight -= p.size
	c.cc.onLoss(p.size)
	c.stats.pktsLost++
	c.requeueFrames(p)
	if p.control&ctlMaxData != 0 {
		c.pendingMaxData = true
	}
}

// requeueFrames queues p's reliable fragments that are neither acknowledged
// nor already queued, each on its channel's retransmission queue.
func (c *Conn) requeueFrames(p *sentPacket) {
	for _, f := range p.frames {
		m := f.msg
		i := int(f.frag)
		if f.gen != m.gen || m.acked.has(i) || m.sc == nil || !m.queued.set(i) {
			continue
		}
		m.sc.retx.push(f)
		c.retxCount++
		c.scheduleLocked(m.sc)
	}
}

// ptoTime is when the probe timeout fires, zero when nothing is in flight.
func (c *Conn) ptoTime() time.Time {
	if c.inFlight == 0 {
		return time.Time{}
	}
	d := c.rtt.pto(c.cfg.MaxAckDelay) << min(c.ptoCount, 16)
	return c.lastEliciting.Add(d)
}

// nextDeadlineLocked is the earliest time the timer goroutine has work.
func (c *Conn) nextDeadlineLocked(now time.Time) time.Time {
	d := c.lastRecv.Add(c.cfg.IdleTimeout)
	if c.inFlight == 0 {
		d = minTime(d, c.lastEliciting.Add(c.cfg.KeepaliveInterval))
	}
	if c.ackPending {
		d = minTime(d, c.ackDeadline)
	}
	if !c.lossTime.IsZero() {
		d = minTime(d, c.lossTime)
	} else if t := c.ptoTime(); !t.IsZero() {
		d = minTime(d, t)
	}
	if c.pendingPing || c.pendingMaxData || c.probes > 0 {
		return now
	}
	if c.inFlight < c.cc.congestionWindow() && (c.retxCount > 0 || c.newDataWaiting()) {
		t := c.pacer.nextSend(now)
		if c.retxCount == 0 && !c.dataReady(now) {
			t = maxTime(t, c.nagleDeadline)
		}
		d = minTime(d, t)
	}
	return d
}

// onTimerLocked handles whatever is due at now and builds what to send.
func (c *Conn) onTimerLocked(now time.Time) *batch {
	if !now.Before(c.lastRecv.Add(c.cfg.IdleTimeout)) {
		c.closeLocked(ErrTimeout)
		return nil
	}
	c.stats.roll(now)
	if !c.lossTime.IsZero() {
		if !now.Before(c.lossTime) {
			c.detectLostLocked(now)
			c.trimLocked(now)
		}
	} else if t := c.ptoTime(); !t.IsZero() && !now.Before(t) {
		c.onPTOLocked()
	}
	// Keepalive when idle; with data in flight the probe timeout does it.
	if c.inFlight == 0 && !now.Before(c.lastEliciting.Add(c.cfg.KeepaliveInterval)) {
		c.pendingPing = true
		if c.queuedMsgs == 0 {
			c.dropRecycledLocked() // idle
		}
	}
	return c.buildLocked(now)
}

// onPTOLocked sends probes (RFC 9002 §6.2.4): the oldest unacknowledged
// reliable data again, or a ping when there is none.
func (c *Conn) onPTOLocked() {
	c.ptoCount++
	c.stats.ptos++
	c.probes = 2
	for pn := c.history.firstPN; pn < c.nextPN; pn++ {
		p := c.history.get(pn)
		if p == nil {
			break
		}
		if p.state == pktOutstanding && len(p.frames) > 0 {
			c.requeueFrames(p)
			return
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
