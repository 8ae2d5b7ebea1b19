package channels

// Message is a message delivered by a Conn.
type Message struct {
	Channel uint16
	// Flags holds Reliable and Unsequenced as the sender set them.
	Flags Flags
	// Data belongs to the receiver. Messages that arrived in one datagram
	// may share a backing array; each slice's capacity ends at its length,
	// so appending to one never touches another.
	Data []byte
}

// msgCostOverhead is added to every reliable message's length when it is
// charged against the receive window, so tiny messages cannot make the
// receiver keep unbounded bookkeeping within the window's bytes.
const msgCostOverhead = 64

func msgCost(n int) uint64 { return uint64(n) + msgCostOverhead }

// bitset is a set of fragment numbers. The zero value is empty and holds up
// to 64 without allocating.
type bitset struct {
	w0 uint64
	ws []uint64
}

func (b *bitset) reset(n int) {
	b.w0 = 0
	if n <= 64 {
		b.ws = b.ws[:0]
		return
	}
	words := (n + 63) / 64
	if cap(b.ws) >= words {
		b.ws = b.ws[:words]
		clear(b.ws)
	} else {
		b.ws = make([]uint64, words)
	}
}

func (b *bitset) word(i int) *uint64 {
	if len(b.ws) == 0 {
		return &b.w0
	}
	return &b.ws[i/64]
}

func (b *bitset) has(i int) bool { return *b.word(i)&(1<<(i%64)) != 0 }

// set adds i and reports whether it was absent.
func (b *bitset) set(i int) bool {
	w := b.word(i)
	m := uint64(1) << (i % 64)
	if *w&m != 0 {
		return false
	}
	*w |= m
	return true
}

func (b *bitset) clear(i int) { *b.word(i) &^= 1 << (i % 64) }

// outMsg is a message queued for sending. Reliable messages live until every
// fragment is acknowledged; unreliable ones until every fragment is sent.
// They are recycled: gen changes on reuse so stale references in the sent
// history can tell.
type outMsg struct {
	gen      uint32
	kind     kind
	channel  uint16
	sc       *sendChannel // its channel's send state (queue accounting)
	seq      uint64
	data     []byte
	frag     bool   // sent as fragments
	nfrags   int    // 1 when not fragmented
	nextFrag int    // first fragment never sent
	nacked   int    // fragments acknowledged
	acked    bitset // fragments acknowledged
	queued   bitset // fragments waiting in the retransmission queue
	extra    bitset // fragments already sent once more as redundancy
	charged  bool   // its cost was taken from the peer's receive window
	queuedAt int64  // unix nanoseconds when Send queued it
}

// fragment returns the bytes of fragment i.
func (m *outMsg) fragment(i, size int) []byte {
	if !m.frag {
		return m.data
	}
	end := min((i+1)*size, len(m.data))
	return m.data[i*size : end]
}

// rxMsg is a message being received: a fragmented one under reassembly or a
// reliable one waiting for earlier messages on its channel.
type rxMsg struct {
	data     []byte
	have     bitset
	nfrags   int
	got      int // fragments received
	size     int // fragment size
	complete bool
	cost     uint64 // reliable: charged to the receive window

	// Unreliable reassembly only.
	channel uint16
	kind    kind
	seq     uint64
	born    int64 // unix nanoseconds, for expiry
}

// addFragment copies fragment i in and reports whether it was new.
func (m *rxMsg) addFragment(i int, data []byte) bool {
	if !m.have.set(i) {
		return false
	}
	copy(m.data[i*m.size:], data)
	m.got++
	m.complete = m.got == m.nfrags
	return true
}

func newRxFragmented(total, size int) *rxMsg {
	m := &rxMsg{data: make([]byte, total), size: size, nfrags: int(fragCount(uint64(total), uint64(size)))}
	m.have.reset(m.nfrags)
	return m
}
