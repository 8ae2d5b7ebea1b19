package channels

import (
	"time"
)

// HandleDatagram processes a datagram from the peer. b is not retained; the
// caller may reuse it when HandleDatagram returns. Messages that become
// deliverable are passed to Config.Deliver before it returns, unless another
// HandleDatagram call is delivering at the time: that call then delivers
// them, after the ones before them, before it returns. Concurrent calls
// (several readers of one peer) never wait for one another's Deliver. It
// returns ErrMalformed, ErrDuplicate or ErrFlowControl for a datagram
// dropped (and counted) as such, or the Conn's end error.
func (c *Conn) HandleDatagram(b []byte) error {
	c.mu.Lock()
	if c.closed {
		err := c.closeErr
		c.mu.Unlock()
		return err
	}
	now := time.Now()
	err := c.receiveLocked(b, now)
	var out *batch
	if !c.closed {
		out = c.buildLocked(now)
		c.armLocked(now)
	}
	if c.delivering || len(c.deliveries) == 0 {
		c.writeUnlock(out) // the deliverer, if any, takes what was queued
		return err
	}
	// This call delivers: its own messages, then whatever other calls queue
	// meanwhile. Its messages' window was given back as they were queued,
	// so the acknowledgement just built carries it, as before any queueing.
	c.delivering = true
	msgs := c.deliveries
	c.deliveries = c.spare
	c.spare = nil
	c.writeUnlock(out)
	c.deliverQueue(msgs)
	return err
}

// deliverQueue hands msgs to Deliver with no lock held, then the messages
// other HandleDatagram calls queued meanwhile, until the queue is empty; the
// caller has set delivering.
func (c *Conn) deliverQueue(msgs []Message) {
	var cost uint64 // receive window held by msgs
	for {
		c.deliver(msgs)
		clear(msgs)
		c.mu.Lock()
		var out *batch
		if cost > 0 {
			now := time.Now()
			c.releaseWindow(cost)
			// Acknowledgements sent while these messages waited carried
			// the older limit: a sender stalled on it hears the new one
			// within MaxAckDelay, if no MAX_DATA goes at once.
			if !c.ackPending && !c.closed {
				c.ackPending = true
				c.ackDeadline = now.Add(c.cfg.MaxAckDelay)
			}
			out = c.buildLocked(now)
			c.armLocked(now)
		}
		if len(c.deliveries) == 0 {
			c.delivering = false
			c.spare = msgs[:0]
			c.writeUnlock(out)
			return
		}
		msgs, c.deliveries = c.deliveries, msgs[:0]
		cost, c.heldCost, c.queuedUnrel = c.heldCost, 0, 0
		c.writeUnlock(out)
	}
}

func (c *Conn) deliver(msgs []Message) {
	if c.cfg.Deliver == nil {
		return
	}
	for _, m := range msgs {
		c.cfg.Deliver(m)
	}
}

func (c *Conn) receiveLocked(b []byte, now time.Time) error {
	c.stats.pktsIn++
	c.stats.bytesIn += uint64(len(b))
	pnTrunc, pnLen, err := c.parser.parse(b)
	if err != nil {
		c.stats.malformed++
		return err
	}
	largest, any := c.recv.largest()
	pn := decodePN(largest, any, pnTrunc, pnLen)
	if c.recv.seen(pn) {
		c.stats.duplicates++
		return ErrDuplicate
	}
	if c.parser.hasAck && c.parser.ackRanges[0].hi >= c.nextPN {
		c.stats.malformed++ // acknowledges a packet never sent
		return ErrMalformed
	}
	charge, arena, err := c.precheck()
	if err != nil {
		c.stats.tooLarge++
		return err
	}
	if c.charged+charge > c.maxDataLimit() {
		c.stats.flowControl++
		return ErrFlowControl
	}
	c.recv.add(pn)
	c.lastRecv = now
	if !any || pn > largest {
		c.largestRecvAt = now
	}
	var buf []byte
	if arena > 0 {
		buf = make([]byte, arena)
	}
	eliciting := false
	for i := range c.parser.frames {
		f := &c.parser.frames[i]
		switch f.typ {
		case frameTypeAck:
			c.onAckFrame(now, c.parser.ackRanges, f.ackDelay, f.maxData)
		case frameTypeMaxData:
			eliciting = true
			if f.value > c.peerMaxData {
				c.peerMaxData = f.value
				c.creditBlocked = false
			}
		case frameTypePing:
			eliciting = true
		case frameTypeClose:
			c.closeLocked(ErrPeerClosed)
			return nil
		default:
			eliciting = true
			buf = c.onMsgFrame(f, buf, now)
		}
	}
	if eliciting {
		c.scheduleAck(pn, largest, any, now)
	}
	return nil
}

// precheck walks the parsed message frames before any is applied and
// returns the receive window that reliable ones newly take, and the bytes
// needed to copy out unfragmented messages.
func (c *Conn) precheck() (charge uint64, arena int, err error) {
	var seen [8]struct {
		ch  uint16
		seq uint64
	}
	nseen := 0
	for i := range c.parser.frames {
		f := &c.parser.frames[i]
		if f.typ&frameTypeMsgMask != frameTypeMsg {
			continue
		}
		if !f.frag {
			arena += len(f.data)
		}
		if f.kind != kindReliable {
			continue
		}
		if f.frag && f.total > uint64(c.cfg.MaxReliableSize) {
			return 0, 0, ErrTooLarge
		}
		rc := c.recvChans[f.channel]
		if rc != nil && (f.seq < rc.nextRel || rc.pending[f.seq] != nil) {
			continue // already charged
		}
		if f.frag {
			dup := false
			for _, s := range seen[:nseen] {
				dup = dup || (s.ch == f.channel && s.seq == f.seq)
			}
			if dup {
				continue
			}
			if nseen < len(seen) {
				seen[nseen].ch, seen[nseen].seq = f.channel, f.seq
				nseen++
			}
			charge += msgCost(int(f.total))
			continue
		}
		charge += msgCost(len(f.data))
	}
	return charge, arena, nil
}

// scheduleAck decides when to acknowledge an ack-eliciting packet: at once
// when it arrived out of order or enough are waiting, otherwise within
// MaxAckDelay.
func (c *Conn) scheduleAck(pn, prevLargest uint64, any bool, now time.Time) {
	c.elicitingUnack++
	c.elicitingTotal++
	threshold := ackEveryLate
	if c.elicitingTotal < ackEarlyPackets {
		threshold = ackEveryEarly
	}
	immediate := (any && pn != prevLargest+1) || c.elicitingUnack >= threshold
	deadline := now.Add(c.cfg.MaxAckDelay)
	if immediate {
		deadline = now
	}
	if !c.ackPending || deadline.Before(c.ackDeadline) {
		c.ackDeadline = deadline
	}
	c.ackPending = true
}

// Acknowledgement frequency: every second packet at first, so slow start is
// fed quickly, then every tenth (ack decimation, as Chromium's QUIC does),
// and always within MaxAckDelay.
const (
	ackEveryEarly   = 2
	ackEveryLate    = 10
	ackEarlyPackets = 100
)

// take copies data into the front of arena and returns the copy (capacity
// capped at its length) and the rest of arena.
func take(arena, data []byte) ([]byte, []byte) {
	n := copy(arena, data)
	return arena[:n:n], arena[n:]
}

func (c *Conn) recvChan(ch uint16) *recvChannel {
	rc := c.recvChans[ch]
	if rc == nil {
		rc = &recvChannel{}
		c.recvChans[ch] = rc
	}
	return rc
}

// onMsgFrame applies a message frame and returns what is left of arena.
func (c *Conn) onMsgFrame(f *frame, arena []byte, now time.Time) []byte {
	rc := c.recvChan(f.channel)
	switch f.kind {
	case kindReliable:
		return c.onReliable(rc, f, arena)
	case kindSequenced:
		if f.seq < rc.nextSeqd {
			c.stats.stale++
			if !f.frag {
				_, arena = take(arena, f.data)
			}
			return arena
		}
	}
	if !f.frag {
		var data []byte
		data, arena = take(arena, f.data)
		if f.kind == kindSequenced {
			rc.nextSeqd = f.seq + 1
		}
		c.queueDelivery(f.channel, f.kind, data)
		return arena
	}
	m := c.partial(f, now)
	if m == nil || !m.addFragment(int(f.index), f.data) || !m.complete {
		return arena
	}
	c.removePartial(m)
	if f.kind == kindSequenced {
		if f.seq < rc.nextSeqd {
			c.stats.stale++
			return arena
		}
		rc.nextSeqd = f.seq + 1
	}
	c.queueDelivery(f.channel, f.kind, m.data)
	return arena
}

// onReliable applies a reliable message frame.
func (c *Conn) onReliable(rc *recvChannel, f *frame, arena []byte) []byte {
	if f.seq < rc.nextRel {
		c.stats.duplicateMsgs++
		if !f.frag {
			_, arena = take(arena, f.data)
		}
		return arena
	}
	m := rc.pending[f.seq]
	if m == nil {
		if !f.frag {
			var data []byte
			data, arena = take(arena, f.data)
			cost := msgCost(len(data))
			c.charged += cost
			if f.seq == rc.nextRel {
				rc.nextRel++
				c.delivered(cost)
				c.queueDelivery(f.channel, kindReliable, data)
				c.deliverInOrder(f.channel, rc)
				return arena
			}
			m = &rxMsg{data: data, complete: true, cost: cost}
		} else {
			m = newRxFragmented(int(f.total), int(f.size))
			m.cost = msgCost(int(f.total))
			c.charged += m.cost
		}
		if rc.pending == nil {
			rc.pending = make(map[uint64]*rxMsg)
		}
		rc.pending[f.seq] = m
	} else if !f.frag {
		c.stats.duplicateMsgs++
		_, arena = take(arena, f.data)
		return arena
	}
	if f.frag && (m.nfrags == 0 || len(m.data) != int(f.total) || m.size != int(f.size)) {
		c.stats.malformed++ // fragments disagree about the message
		return arena
	}
	if f.frag && !m.addFragment(int(f.index), f.data) {
		c.stats.duplicateMsgs++
	}
	if f.seq == rc.nextRel {
		c.deliverInOrder(f.channel, rc)
	}
	return arena
}

// deliverInOrder delivers complete messages from nextRel on.
func (c *Conn) deliverInOrder(ch uint16, rc *recvChannel) {
	for len(rc.pending) > 0 {
		m := rc.pending[rc.nextRel]
		if m == nil || !m.complete {
			return
		}
		delete(rc.pending, rc.nextRel)
		rc.nextRel++
		c.delivered(m.cost)
		c.queueDelivery(ch, kindReliable, m.data)
	}
	rc.pending = nil // let an emptied map go
}

// delivered gives the window share of a message queued for delivery back,
// unless the application gives it back itself (ReleaseOnRead). While
// another call is delivering, the share is held until the message has been
// delivered, which keeps the delivery queue within the receive window.
func (c *Conn) delivered(cost uint64) {
	switch {
	case c.cfg.ReleaseOnRead:
	case c.delivering:
		c.heldCost += cost
	default:
		c.releaseWindow(cost)
	}
}

// releaseWindow gives window back to the peer, and sends a MAX_DATA frame
// when enough has been given back that a sender waiting for it should hear
// at once.
func (c *Conn) releaseWindow(cost uint64) {
	c.released = min(c.released+cost, c.charged)
	if c.maxDataLimit()-c.sentMaxData >= uint64(c.cfg.ReceiveWindow)/2 {
		c.pendingMaxData = true
	}
}

// queueDelivery queues a message for Deliver. An unreliable message that
// would take the unreliable bytes queued behind a delivery under way past
// ReassemblyBytes is dropped and counted instead.
func (c *Conn) queueDelivery(ch uint16, k kind, data []byte) {
	if c.delivering && k != kindReliable {
		if c.queuedUnrel+len(data) > c.cfg.ReassemblyBytes {
			c.stats.deliveryDrops++
			return
		}
		c.queuedUnrel += len(data)
	}
	c.stats.msgsRecv++
	c.deliveries = append(c.deliveries, Message{Channel: ch, Flags: Flags(k), Data: data})
}

// partialTTL is how long a fragmented unreliable message may stay
// incomplete before it is dropped.
const partialTTL = 3 * time.Second

// partialOverhead is charged per partial message against ReassemblyBytes on
// top of its size, bounding the count of tiny ones.
const partialOverhead = 128

// partial returns the reassembly state for an unreliable fragment, creating
// it within the reassembly budget, or nil when the fragment is dropped.
func (c *Conn) partial(f *frame, now time.Time) *rxMsg {
	for _, m := range c.partials {
		if m.channel == f.channel && m.kind == f.kind && m.seq == f.seq {
			if len(m.data) != int(f.total) || m.size != int(f.size) {
				c.stats.malformed++
				return nil
			}
			return m
		}
	}
	if int(f.total) > c.maxUnrel {
		c.stats.tooLarge++
		return nil
	}
	cost := int(f.total) + partialOverhead
	for len(c.partials) > 0 && (c.partialBytes+cost > c.cfg.ReassemblyBytes ||
		now.UnixNano()-c.partials[0].born > int64(partialTTL)) {
		c.stats.reassemblyDrops++
		c.removePartial(c.partials[0])
	}
	if c.partialBytes+cost > c.cfg.ReassemblyBytes {
		c.stats.reassemblyDrops++
		return nil
	}
	m := newRxFragmented(int(f.total), int(f.size))
	m.channel, m.kind, m.seq, m.born = f.channel, f.kind, f.seq, now.UnixNano()
	c.partials = append(c.partials, m)
	c.partialBytes += cost
	return m
}

func (c *Conn) removePartial(m *rxMsg) {
	for i, p := range c.partials {
		if p == m {
			c.partials = append(c.partials[:i], c.partials[i+1:]...)
			c.partialBytes -= len(m.data) + partialOverhead
			return
		}
	}
}
