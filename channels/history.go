package channels

import (
	"sort"
	"time"
)

// maxRecvRanges bounds the received-packet ranges remembered. Past it the
// oldest range is forgotten and every packet number below its end is
// treated as already received, so memory stays bounded under any reordering
// and duplicate detection stays exact (never lets a duplicate through).
const maxRecvRanges = 128

// recvHistory remembers which packet numbers arrived. The zero value is an
// empty history.
type recvHistory struct {
	ranges []pnRange // ascending, disjoint, not adjacent
	floor  uint64    // everything below floor counts as received
}

func (h *recvHistory) largest() (uint64, bool) {
	if len(h.ranges) == 0 {
		return 0, false
	}
	return h.ranges[len(h.ranges)-1].hi, true
}

// seen reports whether pn was received (or is below the floor).
func (h *recvHistory) seen(pn uint64) bool {
	if pn < h.floor {
		return true
	}
	i := h.search(pn)
	return i < len(h.ranges) && h.ranges[i].lo <= pn
}

// search returns the index of the first range with hi >= pn.
func (h *recvHistory) search(pn uint64) int {
	n := len(h.ranges)
	if n > 0 && h.ranges[n-1].hi < pn {
		return n // the common case: pn extends the newest range
	}
	return sort.Search(n, func(i int) bool { return h.ranges[i].hi >= pn })
}

// add records pn, which must not have been seen.
func (h *recvHistory) add(pn uint64) {
	i := h.search(pn)
	switch {
	case i > 0 && h.ranges[i-1].hi+1 == pn:
		h.ranges[i-1].hi = pn
		if i < len(h.ranges) && h.ranges[i].lo == pn+1 {
			h.ranges[i-1].hi = h.ranges[i].hi
			h.ranges = append(h.ranges[:i], h.ranges[i+1:]...)
		}
	case i < len(h.ranges) && h.ranges[i].lo == pn+1:
		h.ranges[i].lo = pn
	default:
		h.ranges = append(h.ranges, pnRange{})
		copy(h.ranges[i+1:], h.ranges[i:])
		h.ranges[i] = pnRange{pn, pn}
	}
	if len(h.ranges) > maxRecvRanges {
		h.floor = h.ranges[0].hi + 1
		h.ranges = append(h.ranges[:0], h.ranges[1:]...)
	}
}

// appendDescending appends up to n of the newest ranges, largest first, for
// an ACK frame.
func (h *recvHistory) appendDescending(dst []pnRange, n int) []pnRange {
	for i := len(h.ranges) - 1; i >= 0 && n > 0; i, n = i-1, n-1 {
		dst = append(dst, h.ranges[i])
	}
	return dst
}

// Packet states in the sent history.
const (
	pktOutstanding uint8 = iota
	pktAcked
	pktLost
)

// Control frames a packet carried, to repeat them if it is lost.
const (
	ctlPing uint8 = 1 << iota
	ctlMaxData
)

// sentPacket is what the sender remembers of a packet until it is
// acknowledged or declared lost.
type sentPacket struct {
	pn        uint64
	sentAt    time.Time
	size      int // bytes counted by congestion control
	eliciting bool
	state     uint8
	control   uint8
	lostGap   uint32 // declared lost this many packets below the largest acked; 0: by time
	// What BBR's delivery rate estimate needs (bbr.onSent).
	appLimited  bool
	delivered   uint64
	deliveredAt time.Time
	firstSentAt time.Time
	frames      []sentFrame // reliable fragments carried, to resend on loss
}

// sentFrame names one reliable fragment. gen guards against the message
// having been recycled since: a stale reference is ignored.
type sentFrame struct {
	msg  *outMsg
	gen  uint32
	frag uint32
}

// sentHistory holds packets in packet-number order: every packet number
// sent is present from the oldest unresolved one on, so lookup is an index.
// Resolved packets are removed from the front. The frames slices of removed
// slots are kept for reuse.
type sentHistory struct {
	ring    []sentPacket
	head    int    // index of firstPN in ring
	n       int    // packets stored
	firstPN uint64 // packet number at head
}

func (s *sentHistory) slot(i int) *sentPacket {
	return &s.ring[(s.head+i)%len(s.ring)]
}

// get returns the packet pn or nil when it is not stored.
func (s *sentHistory) get(pn uint64) *sentPacket {
	if pn < s.firstPN || pn >= s.firstPN+uint64(s.n) {
		return nil
	}
	return s.slot(int(pn - s.firstPN))
}

// push appends the next packet and returns it for filling in. Its frames
// slice is empty with reused capacity.
func (s *sentHistory) push(pn uint64) *sentPacket {
	if s.n == 0 {
		s.firstPN = pn
	}
	if s.n == len(s.ring) {
		s.grow()
	}
	p := s.slot(s.n)
	s.n++
	frames := p.frames[:0]
	*p = sentPacket{pn: pn, frames: frames}
	return p
}

// minHistory is the smallest ring: what an idle Conn's keepalive needs.
const minHistory = 4

// shrink lets go of a ring grown for traffic that has ended.
func (s *sentHistory) shrink() {
	if s.n == 0 && len(s.ring) > minHistory {
		s.ring, s.head = nil, 0
	}
}

func (s *sentHistory) grow() {
	ring := make([]sentPacket, max(minHistory, 2*len(s.ring)))
	for i := 0; i < s.n; i++ {
		ring[i] = *s.slot(i)
	}
	s.ring, s.head = ring, 0
}

// trim drops resolved packets from the front. Lost packets sent after
// keepLost are kept, so a late acknowledgement can show the loss spurious.
func (s *sentHistory) trim(keepLost time.Time) {
	for s.n > 0 {
		p := s.slot(0)
		if p.state == pktOutstanding || (p.state == pktLost && p.sentAt.After(keepLost)) {
			return
		}
		clear(p.frames) // drop message references for the GC
		s.head = (s.head + 1) % len(s.ring)
		s.n--
		s.firstPN++
	}
}
