package path

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Reason says why a route changed.
type Reason uint8

// Reasons for a route change.
const (
	Begin     Reason = iota // a new attempt's first route (the handshake's)
	Establish               // the route the session was established on
	Heard                   // the peer's authenticated packets came from the route
	Validated               // a connectivity check proved the route
	Offered                 // the relay or a TCP link offered the route
)

func (r Reason) String() string {
	return [...]string{"begin", "establish", "heard", "validated", "offered"}[r]
}

// Reporter hears of route changes. The table calls it on its owner
// goroutine with no lock held; it may take any lock of its own, call the
// session, and post to the table again, but it must not wait for the
// table (Sync), which would wait for itself.
type Reporter[T any] interface {
	RouteChanged(p *Peer[T], old, cur *Route, why Reason)
	// Health is how p's current route is doing at now: the table asks
	// when it considers again an offer it refused.
	Health(p *Peer[T], now time.Time) Health
}

// Peer is one peer's path state: the route sessions send on, and the
// chooser behind it. Route may be read by any goroutine; everything else
// belongs to the table's owner goroutine.
type Peer[T any] struct {
	Owner T // what the table reports about (the session); set once

	route atomic.Pointer[Route]
	// heardAt and heard: the last Heard offer posted (unix ns), so the
	// reader does not post one per packet from an address that stays put.
	heardAt atomic.Int64
	heard   atomic.Pointer[netip.AddrPort]

	// The owner goroutine's.
	gen uint64
	ch  chooser
}

// Route is where the peer's session sends now (nil: nowhere yet).
func (p *Peer[T]) Route() *Route { return p.route.Load() }

// event is what the owner goroutine is asked to do.
type event[T any] struct {
	peer  *Peer[T]
	why   Reason
	offer Offer
	fn    func()        // Do, Must
	must  bool          // never dropped: Must, Sync
	done  chan struct{} // Sync
}

// queueMax bounds the events waiting for the owner goroutine. Past it
// events are dropped and counted: Heard offers repeat with the next
// packet, checks report again, sessions begin again on their retry.
const queueMax = 8192

// heardGap: a Heard offer for the same address is posted at most this
// often per peer.
const heardGap = 50 * time.Millisecond

// An offer the chooser refused stays pending: every recheckEvery it is
// considered again with the current route's health then, until it is
// taken, another offer replaces it, or pendingFor passed since it was
// last made. A peer whose packets now come only from a new route (a NAT
// rebinding while it backs off its retransmissions) may send the next one
// seconds later; the session must not wait for it to notice that its own
// route stopped working.
const (
	recheckEvery = 50 * time.Millisecond
	pendingFor   = 3 * time.Second
)

// Table is a node's path layer: one owner goroutine that changes every
// peer's route, fed by events from the reader, the traversal, the relay,
// TCP links and sessions, and runs the node's other path work (Do, Must). Posting never blocks and never takes more than
// the queue's leaf lock, so no caller can deadlock with the owner whatever
// it holds; the owner reports changes with no lock held.
//
// The zero Table is not usable; NewTable makes one.
type Table[T any] struct {
	rep      Reporter[T]
	prefixes []netip.Prefix
	now      func() time.Time

	mu     sync.Mutex // leaf: the queue
	queue  []event[T]
	closed bool
	wake   chan struct{}
	done   chan struct{}

	// The owner goroutine's: peers with a pending offer, and the timer
	// that rechecks them.
	rechecks map[*Peer[T]]struct{}
	timer    *time.Timer
	armed    bool

	// Counters, read with Stats.
	suppressed, dropped atomic.Uint64
}

// Stats are a table's counters.
type Stats struct {
	Suppressed uint64 // moves refused by the per-minute bound
	Dropped    uint64 // events dropped because the queue was full
}

// NewTable starts a table reporting to rep; prefixes are the node's own
// subnets (they make the LAN class). Close stops it.
func NewTable[T any](rep Reporter[T], prefixes []netip.Prefix) *Table[T] {
	t := &Table[T]{rep: rep, prefixes: prefixes, now: time.Now,
		wake: make(chan struct{}, 1), done: make(chan struct{}), rechecks: map[*Peer[T]]struct{}{}}
	go t.run()
	return t
}

// NewPeer makes the path state of one peer's session.
func (t *Table[T]) NewPeer(owner T) *Peer[T] { return &Peer[T]{Owner: owner} }

// Stats returns the counters.
func (t *Table[T]) Stats() Stats {
	return Stats{Suppressed: t.suppressed.Load(), Dropped: t.dropped.Load()}
}

// Begin sets the route of attempt r.Gen of p's session while it is not
// established: where its handshake goes. A newer attempt starts the
// chooser over.
func (t *Table[T]) Begin(p *Peer[T], r Route) {
	t.post(event[T]{peer: p, why: Begin, offer: Offer{Route: r}})
}

// Establish records the route attempt r.Gen was established on; pref is
// its check priority (0 if unchecked).
func (t *Table[T]) Establish(p *Peer[T], r Route, pref uint32) {
	t.post(event[T]{peer: p, why: Establish, offer: Offer{Route: r, Pref: pref}})
}

// Heard offers the route the peer's authenticated packet came from, with
// the health of the current route (asked only when the offer is posted).
// It is cheap to call per packet: a route that is current, or was offered
// within heardGap, posts nothing.
func (t *Table[T]) Heard(p *Peer[T], r Route, health func() Health) {
	if cur := p.route.Load(); cur != nil && cur.Gen == r.Gen && Same(cur, &r) {
		return
	}
	now := time.Now().UnixNano()
	if last := p.heard.Load(); last != nil && *last == r.Remote && now-p.heardAt.Load() < int64(heardGap) {
		return
	}
	remote := r.Remote
	p.heard.Store(&remote)
	p.heardAt.Store(now)
	t.post(event[T]{peer: p, why: Heard, offer: Offer{Route: r, Health: health()}})
}

// Validate offers a route a connectivity check proved.
func (t *Table[T]) Validate(p *Peer[T], o Offer) {
	o.Validated = true
	t.post(event[T]{peer: p, why: Validated, offer: o})
}

// Offer offers a route the relay or a TCP link brought.
func (t *Table[T]) Offer(p *Peer[T], o Offer) {
	t.post(event[T]{peer: p, why: Offered, offer: o})
}

// Do runs f on the owner goroutine, in order with the table's other
// events: the node's path state beyond routes (punches, the relay
// allocation, TCP links) is changed there and nowhere else. Like any event
// f is dropped and counted when the queue is full, so it must be work that
// comes again (a timer's tick, a message that is repeated). Do reports
// whether f was queued.
func (t *Table[T]) Do(f func()) bool { return t.post(event[T]{fn: f}) }

// Must is Do for results of work the node started itself (an allocation,
// a dial, a permission): they are bounded by the goroutines that started
// them, and are never dropped while the table runs. Must reports false
// only after Close; the caller then cleans up what f would have taken.
func (t *Table[T]) Must(f func()) bool { return t.post(event[T]{fn: f, must: true}) }

// Sync waits until every event posted before it was handled. It must not
// be called on the owner goroutine (from a Reporter or a Do function),
// which would wait for itself.
func (t *Table[T]) Sync() {
	done := make(chan struct{})
	if !t.post(event[T]{done: done, must: true}) {
		return
	}
	select {
	case <-done:
	case <-t.done:
	}
}

// Close stops the owner goroutine and waits for it.
func (t *Table[T]) Close() {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.wake)
	}
	t.mu.Unlock()
	<-t.done
}

func (t *Table[T]) post(e event[T]) bool {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return false
	}
	if len(t.queue) >= queueMax && !e.must {
		t.mu.Unlock()
		t.dropped.Add(1)
		return false
	}
	t.queue = append(t.queue, e)
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return true
}

// run is the owner goroutine.
func (t *Table[T]) run() {
	defer close(t.done)
	t.timer = time.NewTimer(recheckEvery)
	t.timer.Stop()
	defer t.timer.Stop()
	var batch []event[T]
	for {
		select {
		case _, ok := <-t.wake:
			batch = t.drain(batch)
			if !ok {
				return
			}
		case <-t.timer.C:
			t.armed = false
			t.recheck()
		}
		if len(t.rechecks) > 0 && !t.armed {
			t.timer.Reset(recheckEvery)
			t.armed = true
		}
	}
}

// drain handles every queued event.
func (t *Table[T]) drain(batch []event[T]) []event[T] {
	for {
		t.mu.Lock()
		batch, t.queue = t.queue, batch[:0]
		t.mu.Unlock()
		if len(batch) == 0 {
			return batch
		}
		for i := range batch {
			t.handle(&batch[i])
			batch[i] = event[T]{}
		}
	}
}

// recheck considers each pending offer again with the health of its
// peer's current route now.
func (t *Table[T]) recheck() {
	now := t.now()
	for p := range t.rechecks {
		pe := p.ch.pending
		if pe == nil || now.Sub(pe.at) >= pendingFor {
			p.ch.pending = nil
			delete(t.rechecks, p)
			continue
		}
		o := pe.offer
		o.Health = t.rep.Health(p, now)
		t.decide(p, &o, pe.why, now)
	}
}

func (t *Table[T]) handle(e *event[T]) {
	switch {
	case e.done != nil:
		close(e.done)
		return
	case e.fn != nil:
		e.fn()
		return
	}
	p, o := e.peer, &e.offer
	r := o.Route
	now := t.now()
	switch {
	case r.Gen < p.gen:
		return // from an earlier attempt
	case r.Gen > p.gen:
		if e.why != Begin && e.why != Establish {
			return // the attempt's Begin is on its way
		}
		p.gen = r.Gen
		p.ch = chooser{}
	}
	cls := classify(&r, t.prefixes)
	switch e.why {
	case Begin:
		if p.ch.since.IsZero() { // late, after the attempt was established: ignored
			t.set(p, &r, cls, 0, e.why, false, now)
		}
		return
	case Establish:
		changes := p.ch.changes // a handshake again does not reset the bound
		p.ch = chooser{since: now, changes: changes}
		t.set(p, &r, cls, o.Pref, e.why, false, now)
		return
	}
	if p.ch.since.IsZero() {
		return // not established yet: the handshake sets the route
	}
	if t.decide(p, o, e.why, now) == stay && !Same(p.ch.cur, &r) {
		t.keep(p, o, cls, e.why, now)
	}
}

// keep makes a refused offer p's pending one, unless the pending one is of
// a better class and still fresh (a relay offered every tick must not push
// out the direct route the peer was just heard on).
func (t *Table[T]) keep(p *Peer[T], o *Offer, cls Class, why Reason, now time.Time) {
	if pe := p.ch.pending; pe != nil && pe.cls > cls && now.Sub(pe.at) < pendingFor {
		return
	}
	// One RTT sample is not two (sustainedMargin): the copy carries none.
	pe := &pendingOffer{offer: *o, cls: cls, why: why, at: now}
	pe.offer.RTT = 0
	p.ch.pending = pe
	t.rechecks[p] = struct{}{}
}

// decide runs the chooser on o and carries out its verdict.
func (t *Table[T]) decide(p *Peer[T], o *Offer, why Reason, now time.Time) verdict {
	cls := classify(&o.Route, t.prefixes)
	v := p.ch.consider(o, cls, now)
	switch v {
	case move:
		t.set(p, &o.Route, cls, o.Pref, why, true, now)
	case suppressed:
		t.suppressed.Add(1)
		p.ch.pending = nil // the bound is not rechecked every 50 ms
	}
	return v
}

func (t *Table[T]) set(p *Peer[T], r *Route, cls Class, pref uint32, why Reason, counted bool, now time.Time) {
	nr := *r
	p.ch.set(&nr, cls, pref, counted, now)
	old := p.route.Swap(&nr)
	t.rep.RouteChanged(p, old, &nr, why)
}
