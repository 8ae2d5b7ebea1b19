package channels

import (
	"fmt"
	"slices"
)

// Priority places a channel's reliable data in the send scheduler, as
// GameNetworkingSockets' lanes do. The zero value is the default: level 0,
// weight 1.
//
// Levels are strict: while a channel of a lower Level has reliable data
// (new or to retransmit) that fits the datagram and the peer's window, no
// channel of a higher Level sends any. Channels of one Level share what is
// left by Weight, in bytes, by deficit round robin: a channel of weight 3
// gets three times the bytes of one of weight 1 while both have data. With
// every channel at the default they take equal turns, so a bulk transfer
// on one channel never holds up another.
//
// Unreliable messages are not scheduled by channel: they go first, oldest
// first, since they are worth sending only within
// Config.UnreliableMaxWait.
type Priority struct {
	Level  int // lower goes first
	Weight int // 0 means 1; at most MaxWeight
}

// MaxWeight is the largest Priority.Weight (GameNetworkingSockets' lane
// weights are 16-bit too).
const MaxWeight = 1 << 16

func (p Priority) validate() error {
	if p.Weight < 0 || p.Weight > MaxWeight {
		return fmt.Errorf("%w: weight %d outside [0, %d]", ErrInvalidPriority, p.Weight, MaxWeight)
	}
	return nil
}

func (p Priority) weight() int { return max(p.Weight, 1) }

// level is the round robin of the scheduled channels of one
// Priority.Level.
type level struct {
	prio int
	rr   []*sendChannel // channels with reliable data to send
	pos  int            // whose turn it is
}

// SetChannelPriority sets channel's place in the send scheduler; it takes
// effect with the next datagram. It returns ErrInvalidPriority for a weight
// out of range.
func (c *Conn) SetChannelPriority(channel uint16, p Priority) error {
	if err := p.validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.closeErr
	}
	sc := c.sendChannelLocked(channel)
	was := sc.scheduled
	if was {
		c.unscheduleLocked(sc) // out of its old level
	}
	sc.prio = p
	if was {
		c.scheduleLocked(sc)
	}
	return nil
}

// channelPriority is the priority a channel starts with.
func (c *Conn) channelPriority(channel uint16) Priority {
	if c.cfg.ChannelPriority == nil {
		return Priority{}
	}
	p := c.cfg.ChannelPriority(channel)
	if p.validate() != nil {
		p.Weight = min(max(p.Weight, 1), MaxWeight) // Config.ChannelPriority says so
	}
	return p
}

// scheduleLocked puts sc in its level's round robin, if it is not there.
func (c *Conn) scheduleLocked(sc *sendChannel) {
	if sc.scheduled {
		return
	}
	sc.scheduled = true
	sc.deficit = 0
	i, found := slices.BinarySearchFunc(c.levels, sc.prio.Level, func(l *level, prio int) int { return l.prio - prio })
	if !found {
		c.levels = slices.Insert(c.levels, i, &level{prio: sc.prio.Level})
	}
	l := c.levels[i]
	l.rr = append(l.rr, sc)
	c.scheduled++
}

// unscheduleLocked takes sc out of its level's round robin.
func (c *Conn) unscheduleLocked(sc *sendChannel) {
	for li, l := range c.levels {
		if l.prio != sc.prio.Level {
			continue
		}
		if i := slices.Index(l.rr, sc); i >= 0 {
			c.removeLocked(li, i)
		}
		return
	}
}

// removeLocked takes the channel at index i out of level li, dropping the
// level once it is empty.
func (c *Conn) removeLocked(li, i int) {
	l := c.levels[li]
	sc := l.rr[i]
	sc.scheduled = false
	sc.deficit = 0
	l.rr = slices.Delete(l.rr, i, i+1)
	if i < l.pos {
		l.pos--
	}
	c.scheduled--
	if len(l.rr) == 0 {
		c.levels = slices.Delete(c.levels, li, li+1)
	}
}

// appendReliable adds reliable data: the levels in order, and within a
// level the channels by deficit round robin, each channel's
// retransmissions before its new data. So neither a large message nor the
// losses of one channel hold up the others of its level.
func (c *Conn) appendReliable(buf []byte, limit int, sp *sentPacket) []byte {
	creditStalls := 0 // channels held back by the peer's window
	for li := 0; li < len(c.levels) && len(buf)+minFrameRoom <= limit; {
		n := len(c.levels)
		var cs int
		buf, cs = c.appendLevel(li, buf, limit, sp)
		creditStalls += cs
		if len(c.levels) == n {
			li++ // else the level emptied and the next one moved into its place
		}
	}
	if c.scheduled > 0 && creditStalls == c.scheduled {
		// Every channel waits for window credit from the peer.
		c.creditBlocked = true
		c.stats.creditBlocked++
		if c.inFlight == 0 {
			c.pendingPing = true // draw an ACK carrying the peer's limit
		}
	}
	c.noteDrainedLocked()
	return buf
}

// appendLevel adds the reliable data of level li that fits. It reports how
// many of the level's channels the peer's window held back.
//
// Deficit round robin, in bytes: a channel's turn adds weight × fragment
// size to its deficit and lasts until the deficit is spent, across
// datagrams. When the channel's next frame does not fit what is left of a
// datagram, the others of its level fill the rest (fillLevel) and the turn
// goes on in the next datagram; what they sent is charged to them, so the
// shares hold whatever the sizes of the messages.
func (c *Conn) appendLevel(li int, buf []byte, limit int, sp *sentPacket) ([]byte, int) {
	l := c.levels[li]
	stalls := 0       // channels in a row whose turn passed with nothing sent
	creditStalls := 0 // of those, the ones held back by the peer's window
	for len(l.rr) > 0 && stalls < len(l.rr) && len(buf)+minFrameRoom <= limit {
		if l.pos >= len(l.rr) {
			l.pos = 0
		}
		sc := l.rr[l.pos]
		if sc.deficit <= 0 {
			sc.deficit += sc.prio.weight() * c.fragSize // its turn begins
			if sc.deficit <= 0 {
				// It sent its share already, filling others' datagrams.
				// Not a stall: its deficit grew, so its turn comes.
				stalls, creditStalls = 0, 0
				l.pos++
				continue
			}
		}
		n, st := c.appendChannelFrame(sc, buf, limit, sp)
		switch st {
		case frameEmpty:
			c.removeLocked(li, l.pos)
			if len(l.rr) == 0 {
				return buf, creditStalls
			}
			continue
		case frameCredit:
			stalls++
			creditStalls++
			sc.deficit = 0 // a turn it cannot use is not saved up
			l.pos++
			continue
		case frameNoRoom:
			return c.fillLevel(li, buf, limit, sp), creditStalls
		}
		sc.deficit -= len(n) - len(buf)
		buf = n
		stalls, creditStalls = 0, 0
		if sc.deficit <= 0 {
			l.pos++ // its turn is over
		}
	}
	return buf, creditStalls
}

// fillLevel adds to what is left of a datagram frames of level li's
// channels other than the one whose turn it is, in turn order.
func (c *Conn) fillLevel(li int, buf []byte, limit int, sp *sentPacket) []byte {
	l := c.levels[li]
	for k := 1; k < len(l.rr) && len(buf)+minFrameRoom <= limit; k++ {
		sc := l.rr[(l.pos+k)%len(l.rr)]
		for len(buf)+minFrameRoom <= limit {
			n, st := c.appendChannelFrame(sc, buf, limit, sp)
			if st != frameAdded {
				break // emptied channels leave at their turn
			}
			// Its debt is bounded by one turn, so it sits out at most one.
			sc.deficit = max(sc.deficit-(len(n)-len(buf)), -sc.prio.weight()*c.fragSize)
			buf = n
		}
	}
	return buf
}

// frameStatus is what appendChannelFrame did.
type frameStatus int

const (
	frameAdded  frameStatus = iota
	frameEmpty              // the channel has nothing left to send
	frameNoRoom             // its next frame does not fit the datagram
	frameCredit             // its next message waits for the peer's window
)

// appendChannelFrame adds sc's next reliable frame: a retransmission, or
// else the next fragment of its oldest message not fully sent.
func (c *Conn) appendChannelFrame(sc *sendChannel, buf []byte, limit int, sp *sentPacket) ([]byte, frameStatus) {
	if f, ok := c.nextRetxLocked(sc); ok {
		m, i := f.msg, int(f.frag)
		data := m.fragment(i, c.fragSize)
		if len(buf)+c.msgFrameLen(m, i, len(data)) > limit {
			return buf, frameNoRoom
		}
		sc.retx.pop()
		c.retxCount--
		m.queued.clear(i)
		sp.frames = append(sp.frames, f)
		c.stats.retransmits++
		return c.appendFrame(buf, m, i, data), frameAdded
	}
	if sc.queue.len() == 0 {
		return buf, frameEmpty // its retransmissions were stale: nothing left
	}
	m := sc.queue.peek()
	i := m.nextFrag
	data := m.fragment(i, c.fragSize)
	if len(buf)+c.msgFrameLen(m, i, len(data)) > limit {
		return buf, frameNoRoom
	}
	if !m.charged {
		cost := msgCost(len(m.data))
		if c.sentCharge+cost > c.peerMaxData {
			return buf, frameCredit
		}
		c.sentCharge += cost
		m.charged = true
	}
	buf = c.appendFrame(buf, m, i, data)
	sp.frames = append(sp.frames, sentFrame{msg: m, gen: m.gen, frag: uint32(i)})
	m.nextFrag++
	c.unsentBytes -= len(data)
	if m.nextFrag == m.nfrags {
		c.unsentMsgs--
		sc.queue.pop()
		if sc.queue.len() == 0 {
			c.newChans--
		}
	}
	return buf, frameAdded
}

// nextRetxLocked returns sc's oldest fragment to retransmit that still
// needs it, dropping stale entries (acknowledged meanwhile, or of a
// message since released).
func (c *Conn) nextRetxLocked(sc *sendChannel) (sentFrame, bool) {
	for sc.retx.len() > 0 {
		f := sc.retx.peek()
		if f.gen == f.msg.gen && !f.msg.acked.has(int(f.frag)) {
			return f, true
		}
		sc.retx.pop()
		c.retxCount--
	}
	return sentFrame{}, false
}
