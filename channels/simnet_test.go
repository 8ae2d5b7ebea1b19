package channels

import (
	"container/heap"
	"encoding/binary"
	"hash/fnv"
	"sync"
	"testing"
	"time"
)

// simConfig describes one direction of an in-memory datagram path.
type simConfig struct {
	seed    uint64
	loss    float64       // probability a datagram is dropped
	dup     float64       // probability a datagram is delivered twice
	reorder float64       // probability a datagram gets extra delay, up to 3×delay
	delay   time.Duration // one-way delay
	jitter  time.Duration // uniform extra delay up to this, per datagram
	readers int           // goroutines calling HandleDatagram, as several sockets would; 0 means 1
	// A bottleneck: datagrams leave at rate bytes per second (0: no
	// limit) through a queue of queue bytes (0: 64 KiB), tail dropped
	// past it; loss, jitter and delay apply after it.
	rate  float64
	queue int
}

// simNet joins two Conns. Each datagram's fate (loss, duplication, extra
// delay) is a function of the seed and its bytes, so it does not depend on
// goroutine scheduling. Datagrams are delivered by one goroutine per
// direction, in delivery-time order, or handed in that order to
// simConfig.readers goroutines that call HandleDatagram concurrently.
type simNet struct {
	dirs [2]*simDir
	wg   sync.WaitGroup
	stop chan struct{}
	once sync.Once
}

type simDir struct {
	cfg  simConfig
	idx  int
	in   chan simPkt
	feed chan []byte // due datagrams, to the readers when there are several
	stop chan struct{}

	mu     sync.Mutex
	dst    *Conn
	drop   func(b []byte) bool // extra drop rule, under mu
	sent   int
	lost   int
	drops  int       // tail drops at the bottleneck (counted in lost too)
	busy   time.Time // when the bottleneck has sent what it holds
	dups   int
	deliv  int
	seqNum uint64
}

type simPkt struct {
	at   time.Time
	seq  uint64
	data []byte
}

type pktHeap []simPkt

func (h pktHeap) Len() int { return len(h) }
func (h pktHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h pktHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pktHeap) Push(x any)   { *h = append(*h, x.(simPkt)) }
func (h *pktHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func newSimNet(ab, ba simConfig) *simNet {
	n := &simNet{stop: make(chan struct{})}
	for i, cfg := range []simConfig{ab, ba} {
		d := &simDir{cfg: cfg, idx: i, in: make(chan simPkt, 4096), stop: n.stop}
		n.dirs[i] = d
		n.wg.Go(d.run)
		if cfg.readers > 1 {
			d.feed = make(chan []byte)
			for range cfg.readers {
				n.wg.Go(d.read)
			}
		}
	}
	return n
}

// close stops the delivery goroutines and waits for them.
func (n *simNet) close() {
	n.once.Do(func() { close(n.stop) })
	n.wg.Wait()
}

// link returns the Link for datagrams travelling in direction dir (0: a→b).
func (n *simNet) link(dir int) Link { return n.dirs[dir] }

// attach sets the Conn that receives datagrams travelling in direction dir.
func (n *simNet) attach(dir int, c *Conn) {
	d := n.dirs[dir]
	d.mu.Lock()
	d.dst = c
	d.mu.Unlock()
}

// setDrop installs an extra drop rule for direction dir (nil removes it).
func (n *simNet) setDrop(dir int, f func([]byte) bool) {
	d := n.dirs[dir]
	d.mu.Lock()
	d.drop = f
	d.mu.Unlock()
}

func (n *simNet) counts(dir int) (sent, lost, dups, delivered int) {
	d := n.dirs[dir]
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sent, d.lost, d.dups, d.deliv
}

// fate draws four uniform numbers in [0,1) from the seed, the direction
// and the datagram's bytes, so a datagram's fate is reproducible.
func (d *simDir) fate(b []byte) (u1, u2, u3, u4 float64) {
	h := fnv.New64a()
	var k [9]byte
	binary.LittleEndian.PutUint64(k[:], d.cfg.seed)
	k[8] = byte(d.idx)
	h.Write(k[:])
	h.Write(b)
	x := h.Sum64()
	next := func() float64 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return float64(x>>11) / (1 << 53)
	}
	return next(), next(), next(), next()
}

func (d *simDir) SendDatagrams(dgrams [][]byte) error {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range dgrams {
		d.sent++
		uLoss, uDup, uReorder, uJitter := d.fate(b)
		left, ok := d.bottleneck(now, len(b))
		if !ok {
			d.lost++
			d.drops++
			continue
		}
		if uLoss < d.cfg.loss || (d.drop != nil && d.drop(b)) {
			d.lost++
			continue
		}
		delay := left.Sub(now) + d.cfg.delay + time.Duration(uJitter*float64(d.cfg.jitter))
		if uReorder < d.cfg.reorder {
			delay += time.Duration(uReorder / d.cfg.reorder * 3 * float64(d.cfg.delay+time.Millisecond))
		}
		copies := 1
		if uDup < d.cfg.dup {
			copies = 2
			d.dups++
		}
		for range copies {
			d.seqNum++
			p := simPkt{at: now.Add(delay), seq: d.seqNum, data: append([]byte(nil), b...)}
			select {
			case d.in <- p:
			default:
				d.lost++ // the path's queue is full
			}
		}
	}
	return nil
}

// bottleneck queues n bytes at now and says when they leave, or false
// when the queue is full (under mu).
func (d *simDir) bottleneck(now time.Time, n int) (time.Time, bool) {
	if d.cfg.rate <= 0 {
		return now, true
	}
	limit := d.cfg.queue
	if limit == 0 {
		limit = 64 << 10
	}
	start := now
	if d.busy.After(now) {
		start = d.busy
	}
	if queued := start.Sub(now).Seconds() * d.cfg.rate; int(queued)+n > limit {
		return time.Time{}, false
	}
	d.busy = start.Add(time.Duration(float64(n) / d.cfg.rate * 1e9))
	return d.busy, true
}

func (d *simDir) run() {
	var h pktHeap
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var due <-chan time.Time
		if len(h) > 0 {
			timer.Reset(time.Until(h[0].at))
			due = timer.C
		}
		select {
		case p := <-d.in:
			heap.Push(&h, p)
		case <-due:
			now := time.Now()
			for len(h) > 0 && !h[0].at.After(now) {
				p := heap.Pop(&h).(simPkt)
				if d.feed != nil {
					select {
					case d.feed <- p.data:
					case <-d.stop:
						return
					}
					continue
				}
				d.handle(p.data)
			}
		case <-d.stop:
			return
		}
	}
}

// read is a reader goroutine: it handles datagrams from feed.
func (d *simDir) read() {
	for {
		select {
		case b := <-d.feed:
			d.handle(b)
		case <-d.stop:
			return
		}
	}
}

func (d *simDir) handle(b []byte) {
	d.mu.Lock()
	dst := d.dst
	d.deliv++
	d.mu.Unlock()
	if dst != nil {
		dst.HandleDatagram(b)
	}
}

// collector records delivered messages.
type collector struct {
	mu    sync.Mutex
	msgs  []Message
	at    []time.Time
	count map[uint16]int
	ch    chan struct{} // signalled on every delivery
}

func newCollector() *collector {
	return &collector{count: make(map[uint16]int), ch: make(chan struct{}, 1)}
}

func (r *collector) deliver(m Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.at = append(r.at, time.Now())
	r.count[m.Channel]++
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *collector) snapshot() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs...)
}

func (r *collector) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// waitFor waits, in the bubble's fake time, until cond holds or timeout
// passes; it reports whether cond held.
func (r *collector) waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-r.ch:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			return cond()
		}
	}
}

// pair is two Conns joined by a simNet, each with a collector.
type pair struct {
	a, b   *Conn
	ra, rb *collector
	net    *simNet
}

func newPair(t *testing.T, ab, ba simConfig, ca, cb Config) *pair {
	t.Helper()
	p := &pair{ra: newCollector(), rb: newCollector(), net: newSimNet(ab, ba)}
	ca.Deliver, cb.Deliver = p.ra.deliver, p.rb.deliver
	var err error
	if p.a, err = New(p.net.link(0), ca); err != nil {
		t.Fatal(err)
	}
	if p.b, err = New(p.net.link(1), cb); err != nil {
		t.Fatal(err)
	}
	p.net.attach(0, p.b)
	p.net.attach(1, p.a)
	t.Cleanup(p.close)
	return p
}

func (p *pair) close() {
	p.a.Close()
	p.b.Close()
	p.net.close()
}
