package channels

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestRecvHistoryEmpty(t *testing.T) {
	var h recvHistory
	if _, ok := h.largest(); ok {
		t.Fatal("empty history has a largest")
	}
	for _, pn := range []uint64{0, 1, 1 << 40} {
		if h.seen(pn) {
			t.Fatalf("empty history has seen %d", pn)
		}
	}
	if got := h.appendDescending(nil, 10); len(got) != 0 {
		t.Fatalf("appendDescending on empty = %v", got)
	}
}

func TestRecvHistoryMerge(t *testing.T) {
	tests := []struct {
		name string
		add  []uint64
		want []pnRange
	}{
		{"single", []uint64{5}, []pnRange{{5, 5}}},
		{"zero", []uint64{0}, []pnRange{{0, 0}}},
		{"ascending", []uint64{5, 6, 7}, []pnRange{{5, 7}}},
		{"descending", []uint64{7, 6, 5}, []pnRange{{5, 7}}},
		{"fills the hole", []uint64{1, 3, 2}, []pnRange{{1, 3}}},
		{"separate", []uint64{1, 5, 3}, []pnRange{{1, 1}, {3, 3}, {5, 5}}},
		{"joins three", []uint64{1, 5, 3, 2, 4}, []pnRange{{1, 5}}},
		{"insert in front", []uint64{10, 0, 5}, []pnRange{{0, 0}, {5, 5}, {10, 10}}},
		{"extends lower range up", []uint64{2, 4, 6, 3}, []pnRange{{2, 4}, {6, 6}}},
		{"extends upper range down", []uint64{2, 4, 6, 5}, []pnRange{{2, 2}, {4, 6}}},
		{"extends middle", []uint64{0, 10, 20, 11, 9}, []pnRange{{0, 0}, {9, 11}, {20, 20}}},
		{"large gap", []uint64{1, 1 << 40, 2}, []pnRange{{1, 2}, {1 << 40, 1 << 40}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h recvHistory
			for _, pn := range tt.add {
				if h.seen(pn) {
					t.Fatalf("%d seen before it was added", pn)
				}
				h.add(pn)
				if !h.seen(pn) {
					t.Fatalf("%d not seen after add", pn)
				}
			}
			if !slices.Equal(h.ranges, tt.want) {
				t.Fatalf("ranges %v, want %v", h.ranges, tt.want)
			}
			if l, ok := h.largest(); !ok || l != slices.Max(tt.add) {
				t.Fatalf("largest = %d, %v, want %d", l, ok, slices.Max(tt.add))
			}
		})
	}
}

func TestRecvHistoryEviction(t *testing.T) {
	var h recvHistory
	// Even numbers only: every one a range of its own.
	for i := range uint64(maxRecvRanges) {
		h.add(2 * i)
	}
	if len(h.ranges) != maxRecvRanges || h.floor != 0 {
		t.Fatalf("%d ranges floor %d, want %d ranges and no floor yet", len(h.ranges), h.floor, maxRecvRanges)
	}
	if h.seen(1) {
		t.Fatal("1 seen before any eviction")
	}
	h.add(2 * maxRecvRanges)
	if len(h.ranges) != maxRecvRanges {
		t.Fatalf("%d ranges, want %d", len(h.ranges), maxRecvRanges)
	}
	if h.floor != 1 || h.ranges[0] != (pnRange{2, 2}) {
		t.Fatalf("floor %d first range %v, want floor 1 and {2 2}", h.floor, h.ranges[0])
	}
	// The evicted range counts as received from now on, so a duplicate of
	// it cannot get through. 1 was never received and may still arrive.
	if !h.seen(0) {
		t.Fatal("0 below the floor not seen")
	}
	if h.seen(1) || h.seen(3) {
		t.Fatal("1 or 3 seen: above the floor and never received")
	}
	h.add(1)
	if h.ranges[0] != (pnRange{1, 2}) || len(h.ranges) != maxRecvRanges {
		t.Fatalf("late 1: first range %v, %d ranges; want {1 2}, %d", h.ranges[0], len(h.ranges), maxRecvRanges)
	}
	h.add(2*maxRecvRanges + 2)
	if h.floor != 3 || !h.seen(1) || !h.seen(2) || h.seen(3) || h.seen(5) {
		t.Fatalf("second eviction: floor %d seen(1,2,3,5) = %v %v %v %v, want 3 true true false false",
			h.floor, h.seen(1), h.seen(2), h.seen(3), h.seen(5))
	}
	// Filling a gap above the floor merges and frees a slot: no eviction.
	h.add(5)
	if h.floor != 3 || len(h.ranges) != maxRecvRanges-1 || h.ranges[0] != (pnRange{4, 6}) {
		t.Fatalf("floor %d, %d ranges, first %v; want 3, %d, {4 6}", h.floor, len(h.ranges), h.ranges[0], maxRecvRanges-1)
	}
}

func TestRecvHistoryAppendDescending(t *testing.T) {
	var h recvHistory
	for _, pn := range []uint64{1, 3, 4, 7, 9, 10, 11} {
		h.add(pn)
	}
	all := []pnRange{{9, 11}, {7, 7}, {3, 4}, {1, 1}}
	tests := []struct {
		n    int
		want []pnRange
	}{
		{0, nil},
		{1, all[:1]},
		{2, all[:2]},
		{4, all},
		{100, all},
		{-1, nil},
	}
	for _, tt := range tests {
		got := h.appendDescending(nil, tt.n)
		if !slices.Equal(got, tt.want) {
			t.Errorf("appendDescending(nil, %d) = %v, want %v", tt.n, got, tt.want)
		}
	}
	prefix := []pnRange{{100, 200}}
	got := h.appendDescending(prefix, 2)
	if want := []pnRange{{100, 200}, {9, 11}, {7, 7}}; !slices.Equal(got, want) {
		t.Errorf("appendDescending(prefix, 2) = %v, want %v", got, want)
	}
}

// checkRecvHistory compares h with the set of numbers actually received and
// checks the structural invariants.
func checkRecvHistory(t *testing.T, h *recvHistory, got map[uint64]bool, maxPN uint64, prevFloor uint64) {
	t.Helper()
	if len(h.ranges) > maxRecvRanges {
		t.Fatalf("%d ranges, over %d", len(h.ranges), maxRecvRanges)
	}
	if h.floor < prevFloor {
		t.Fatalf("floor went down from %d to %d", prevFloor, h.floor)
	}
	for i, r := range h.ranges {
		if r.lo > r.hi {
			t.Fatalf("range %d inverted: %v", i, r)
		}
		if i == 0 && r.lo < h.floor {
			t.Fatalf("range %v below floor %d", r, h.floor)
		}
		if i > 0 && h.ranges[i-1].hi+1 >= r.lo {
			t.Fatalf("ranges %v and %v overlap, touch or are unsorted", h.ranges[i-1], r)
		}
	}
	for pn := uint64(0); pn <= maxPN+2; pn++ {
		s := h.seen(pn)
		switch {
		case pn < h.floor:
			if !s {
				t.Fatalf("%d below floor %d not seen", pn, h.floor)
			}
		case s != got[pn]:
			t.Fatalf("seen(%d) = %v, but received = %v (floor %d)", pn, s, got[pn], h.floor)
		}
	}
	var largest uint64
	for pn := range got {
		largest = max(largest, pn)
	}
	if l, ok := h.largest(); ok != (len(got) > 0) || l != largest {
		t.Fatalf("largest = %d, %v; want %d", l, ok, largest)
	}
	want := h.ranges
	if len(want) > 3 {
		want = want[len(want)-3:]
	}
	want = slices.Clone(want)
	slices.Reverse(want)
	if d := h.appendDescending(nil, 3); !slices.Equal(d, want) {
		t.Fatalf("appendDescending(3) = %v, want %v", d, want)
	}
}

// TestRecvHistoryModel feeds arrival orders with duplicates, reordering
// and gaps, and checks seen against the numbers actually delivered.
func TestRecvHistoryModel(t *testing.T) {
	type gen func(rng *rand.Rand) []uint64
	tests := []struct {
		name string
		gen  gen
	}{
		{"in order, each twice", func(*rand.Rand) []uint64 {
			var s []uint64
			for pn := range uint64(500) {
				s = append(s, pn, pn)
			}
			return s
		}},
		{"random permutation", func(rng *rand.Rand) []uint64 {
			s := make([]uint64, 2000)
			for i := range s {
				s[i] = uint64(i)
			}
			rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
			return s
		}},
		{"local reordering with duplicates", func(rng *rand.Rand) []uint64 {
			var s []uint64
			for pn := range uint64(3000) {
				if rng.IntN(10) == 0 {
					continue // lost
				}
				s = append(s, pn)
				if rng.IntN(20) == 0 {
					s = append(s, uint64(rng.IntN(int(pn)+1))) // duplicate of an old one
				}
			}
			for i := range s {
				j := min(len(s)-1, i+rng.IntN(8))
				s[i], s[j] = s[j], s[i]
			}
			return s
		}},
		{"large gaps", func(rng *rand.Rand) []uint64 {
			var s []uint64
			pn := uint64(0)
			for range 1500 {
				pn += 1 + uint64(rng.IntN(3))
				if rng.IntN(50) == 0 {
					pn += uint64(rng.IntN(1000))
				}
				s = append(s, pn)
			}
			rng.Shuffle(len(s)/3, func(i, j int) { s[i], s[j] = s[j], s[i] })
			return s
		}},
		{"evens then odds", func(*rand.Rand) []uint64 {
			var s []uint64
			for pn := uint64(0); pn < 1000; pn += 2 {
				s = append(s, pn)
			}
			for pn := uint64(999); pn < 1000; pn -= 2 {
				s = append(s, pn)
			}
			return s
		}},
		{"stale and fresh", func(rng *rand.Rand) []uint64 {
			var s []uint64
			for pn := range uint64(4000) {
				if rng.IntN(3) == 0 {
					s = append(s, uint64(rng.IntN(int(pn)+1)))
				} else if rng.IntN(4) != 0 {
					s = append(s, pn)
				}
			}
			return s
		}},
	}
	for seed := range uint64(3) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 99))
				arrivals := tt.gen(rng)
				var h recvHistory
				got := map[uint64]bool{}
				var maxPN uint64
				evicted := false
				for i, pn := range arrivals {
					maxPN = max(maxPN, pn)
					prevFloor := h.floor
					if h.seen(pn) {
						if pn >= h.floor && !got[pn] {
							t.Fatalf("arrival %d: %d seen but never received", i, pn)
						}
						continue // dropped as a duplicate
					}
					if got[pn] {
						t.Fatalf("arrival %d: duplicate %d got through", i, pn)
					}
					h.add(pn)
					got[pn] = true
					evicted = evicted || h.floor > 0
					// Checking every step is quadratic; every 16th suffices.
					if i%16 == 0 || i == len(arrivals)-1 {
						checkRecvHistory(t, &h, got, maxPN, prevFloor)
					}
				}
				if tt.name == "large gaps" && !evicted {
					t.Fatal("generator never forced an eviction")
				}
			})
		}
	}
}

var sentBase = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func sentTime(pn uint64) time.Time { return sentBase.Add(time.Duration(pn) * time.Millisecond) }

func pushSent(s *sentHistory, pn uint64) *sentPacket {
	p := s.push(pn)
	p.sentAt = sentTime(pn)
	p.size = int(pn%1000) + 1
	p.eliciting = true
	return p
}

// checkSent verifies that exactly [first, next) is stored, in order.
func checkSent(t *testing.T, s *sentHistory, first, next uint64) {
	t.Helper()
	if s.n != int(next-first) {
		t.Fatalf("%d packets stored, want %d", s.n, next-first)
	}
	if first > 0 && s.get(first-1) != nil {
		t.Fatalf("get(%d) below the first returned a packet", first-1)
	}
	if s.get(next) != nil || s.get(next+1000) != nil {
		t.Fatalf("get beyond the last (%d) returned a packet", next-1)
	}
	for pn := first; pn < next; pn++ {
		p := s.get(pn)
		if p == nil {
			t.Fatalf("get(%d) = nil, stored [%d, %d)", pn, first, next)
		}
		if p.pn != pn || !p.sentAt.Equal(sentTime(pn)) || p.size != int(pn%1000)+1 {
			t.Fatalf("get(%d) returned pn %d sent %v size %d", pn, p.pn, p.sentAt, p.size)
		}
	}
}

func TestSentHistoryGet(t *testing.T) {
	var s sentHistory
	if s.get(0) != nil || s.get(5) != nil {
		t.Fatal("empty history returned a packet")
	}
	for pn := uint64(1000); pn < 1040; pn++ { // past one grow
		pushSent(&s, pn)
	}
	checkSent(t, &s, 1000, 1040)
	if s.get(0) != nil || s.get(999) != nil {
		t.Fatal("get below the first stored packet returned one")
	}
}

func TestSentHistoryTrim(t *testing.T) {
	const (
		O = pktOutstanding
		A = pktAcked
		L = pktLost
	)
	keep := sentTime(3) // lost packets sent after pn 3 are kept
	tests := []struct {
		name      string
		states    []uint8
		wantFirst uint64
	}{
		{"nothing resolved", []uint8{O, A, A}, 0},
		{"acked prefix", []uint8{A, A, O, A}, 2},
		{"stops at outstanding, not skipping it", []uint8{A, O, A, A, A}, 1},
		{"all acked", []uint8{A, A, A}, 3},
		{"old lost dropped", []uint8{L, L, A, O}, 3},
		{"lost at keepLost dropped", []uint8{A, A, A, L, O}, 4},
		{"recent lost kept", []uint8{A, A, A, A, L, A}, 4},
		{"recent lost blocks later acks", []uint8{L, A, A, A, L, A, A}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sentHistory
			for pn := range uint64(len(tt.states)) {
				pushSent(&s, pn).state = tt.states[pn]
			}
			s.trim(keep)
			checkSent(t, &s, tt.wantFirst, uint64(len(tt.states)))
			for pn := tt.wantFirst; pn < uint64(len(tt.states)); pn++ {
				if got := s.get(pn).state; got != tt.states[pn] {
					t.Fatalf("pn %d state %d, want %d", pn, got, tt.states[pn])
				}
			}
		})
	}
}

func TestSentHistoryRestartAfterEmpty(t *testing.T) {
	var s sentHistory
	for pn := range uint64(5) {
		pushSent(&s, pn).state = pktAcked
	}
	s.trim(sentBase)
	checkSent(t, &s, 5, 5)
	pushSent(&s, 5)
	checkSent(t, &s, 5, 6)
	s.get(5).state = pktAcked
	s.trim(sentBase)
	// An empty history takes whatever number comes next.
	pushSent(&s, 100)
	checkSent(t, &s, 100, 101)
}

func TestSentHistoryGrowWrapped(t *testing.T) {
	var s sentHistory
	for pn := range uint64(16) {
		pushSent(&s, pn)
	}
	if len(s.ring) != 16 {
		t.Fatalf("ring of %d after 16 pushes, want 16", len(s.ring))
	}
	for pn := range uint64(5) {
		s.get(pn).state = pktAcked
	}
	s.trim(sentBase)
	for pn := uint64(16); pn < 21; pn++ { // wraps into the freed slots
		pushSent(&s, pn)
	}
	if len(s.ring) != 16 || s.head != 5 {
		t.Fatalf("ring %d head %d, want 16 and 5: the freed slots were not reused", len(s.ring), s.head)
	}
	checkSent(t, &s, 5, 21)
	pushSent(&s, 21) // full and wrapped: grow must unroll in order
	if len(s.ring) <= 16 {
		t.Fatalf("ring %d: did not grow when full", len(s.ring))
	}
	checkSent(t, &s, 5, 22)
	for pn := uint64(22); pn < 100; pn++ {
		pushSent(&s, pn)
	}
	checkSent(t, &s, 5, 100)
}

func TestSentHistoryFramesReuse(t *testing.T) {
	var s sentHistory
	msgs := []*outMsg{{gen: 1}, {gen: 2}, {gen: 3}}
	p := pushSent(&s, 0)
	for i, m := range msgs {
		p.frames = append(p.frames, sentFrame{msg: m, gen: m.gen, frag: uint32(i)})
	}
	old := p.frames
	p.state, p.lostGap, p.control = pktAcked, 5, ctlPing|ctlMaxData
	s.trim(sentBase)
	for i, f := range old[:len(msgs)] {
		if f.msg != nil {
			t.Fatalf("frame %d still references its message after trim", i)
		}
	}
	// Cycle through the ring until slot 0 is used again.
	var q *sentPacket
	for pn := uint64(1); pn <= uint64(len(s.ring)); pn++ {
		q = pushSent(&s, pn)
		if len(q.frames) != 0 || q.state != pktOutstanding || q.lostGap != 0 || q.control != 0 {
			t.Fatalf("pn %d pushed with %d frames, state %d, lostGap %d, control %d: slot not reset",
				pn, len(q.frames), q.state, q.lostGap, q.control)
		}
		q.state = pktAcked
		s.trim(sentBase)
	}
	if q.pn != uint64(len(s.ring)) || &s.ring[0] != q {
		t.Fatal("test did not land on the reused slot")
	}
	if cap(q.frames) < len(msgs) || &q.frames[:1][0] != &old[0] {
		t.Fatalf("reused slot frames cap %d: backing array not reused", cap(q.frames))
	}
}

// TestSentHistoryModel runs thousands of packets through the ring with
// random acks, losses and trims, comparing against a plain slice.
func TestSentHistoryModel(t *testing.T) {
	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 7))
		var s sentHistory
		type rec struct {
			state uint8
		}
		model := map[uint64]*rec{}
		first, next := uint64(0), uint64(0)
		maxStored := 0
		for step := range 3000 {
			for range rng.IntN(6) {
				p := pushSent(&s, next)
				if len(p.frames) != 0 {
					t.Fatalf("pn %d pushed with frames %v", next, p.frames)
				}
				// Give some packets frames so reuse has something to reuse.
				for range rng.IntN(3) {
					p.frames = append(p.frames, sentFrame{msg: &outMsg{}, frag: uint32(next)})
				}
				model[next] = &rec{}
				next++
			}
			maxStored = max(maxStored, int(next-first))
			// Resolve some outstanding packets, mostly the oldest.
			for pn := first; pn < next; pn++ {
				m := model[pn]
				switch {
				case m.state == pktOutstanding && rng.IntN(3) != 0:
					m.state = pktAcked
					if rng.IntN(6) == 0 {
						m.state = pktLost
					}
				case m.state == pktLost && rng.IntN(10) == 0:
					m.state = pktAcked // a late ack shows the loss spurious
				default:
					continue
				}
				s.get(pn).state = m.state
			}
			// keepLost trails the newest send by a random number of packets.
			keep := sentTime(next - min(next, uint64(rng.IntN(40))))
			s.trim(keep)
			for first < next {
				m := model[first]
				if m.state == pktOutstanding || (m.state == pktLost && sentTime(first).After(keep)) {
					break
				}
				delete(model, first)
				first++
			}
			checkSent(t, &s, first, next)
			for pn := first; pn < next; pn++ {
				if s.get(pn).state != model[pn].state {
					t.Fatalf("seed %d step %d: pn %d state %d, want %d", seed, step, pn, s.get(pn).state, model[pn].state)
				}
			}
		}
		if next < 1000 {
			t.Fatalf("only %d packets pushed", next)
		}
		// The ring wraps instead of growing without bound.
		if len(s.ring) > 2*max(16, maxStored) {
			t.Fatalf("seed %d: ring grew to %d for at most %d stored", seed, len(s.ring), maxStored)
		}
	}
}
