package channels

import (
	"sync"
	"time"
)

// Timers runs the timers of many Conns (acknowledgement delay, Nagle,
// loss detection, probes, pacing, keepalive, idle timeout) on one
// goroutine, from a heap ordered by each Conn's next deadline. A server
// with a thousand sessions then has one goroutine sleeping on one timer
// instead of a thousand, which saves their stacks and the scheduler work
// of waking each one apart. Give the same Timers to the Conns of one
// endpoint through Config.Timers; a Conn given none runs a Timers of its
// own, which ends with it.
//
// A Conn's timer work (building and writing what is due) runs on the
// Timers goroutine, so one Link's slow write delays the others': Links
// should queue rather than block for long.
//
// Ownership: mu guards the heap and every Conn's heap fields (timerAt,
// heapIdx). The goroutine takes a Conn's mu only with mu released, and a
// Conn takes mu with its own held, so the order is Conn.mu, then mu.
type Timers struct {
	mu      sync.Mutex
	heap    []*Conn
	firing  *Conn     // the Conn whose timer work is under way
	idle    sync.Cond // broadcast when firing is done
	wake    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

// NewTimers starts a Timers goroutine; Close stops it.
func NewTimers() *Timers {
	t := &Timers{
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	t.idle.L = &t.mu
	go t.run()
	return t
}

// Close stops the goroutine and waits for it. Conns still using the
// Timers get no more timer work: close them first. Close is idempotent.
func (t *Timers) Close() {
	t.halt()
	<-t.stopped
}

// halt stops the goroutine without waiting, for a Conn's own Timers
// ending from its own goroutine.
func (t *Timers) halt() { t.once.Do(func() { close(t.stop) }) }

// maxFireRounds bounds how many rounds of timer work one Conn gets before
// the others due at the same time have theirs.
const maxFireRounds = 4

func (t *Timers) run() {
	defer close(t.stopped)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		t.mu.Lock()
		now := time.Now()
		if len(t.heap) > 0 && !t.heap[0].timerAt.After(now) {
			c := t.heap[0]
			t.removeLocked(c)
			t.firing = c
			t.mu.Unlock()
			c.fire()
			t.mu.Lock()
			t.firing = nil
			t.idle.Broadcast()
			t.mu.Unlock()
			select {
			case <-t.stop:
				return
			default:
			}
			continue
		}
		wait := time.Hour
		if len(t.heap) > 0 {
			wait = t.heap[0].timerAt.Sub(now)
		}
		t.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-t.wake:
		case <-t.stop:
			return
		}
	}
}

// earlier asks for c's timer work at d, or sooner if it is already due
// sooner.
func (t *Timers) earlier(c *Conn, d time.Time) {
	t.mu.Lock()
	switch {
	case c.heapIdx < 0:
		c.timerAt = d
		t.pushLocked(c)
	case d.Before(c.timerAt):
		c.timerAt = d
		t.upLocked(c.heapIdx)
	}
	top := c.heapIdx == 0
	t.mu.Unlock()
	if top {
		t.poke()
	}
}

// reset asks for c's timer work at d exactly, for the Conn's own timer
// work, which knows its next deadline.
func (t *Timers) reset(c *Conn, d time.Time) {
	t.mu.Lock()
	if c.heapIdx >= 0 {
		t.removeLocked(c)
	}
	c.timerAt = d
	t.pushLocked(c)
	top := c.heapIdx == 0
	t.mu.Unlock()
	if top {
		t.poke()
	}
}

// forget takes c out of the heap, waiting out timer work under way for
// it, so nothing runs for c once it returns.
func (t *Timers) forget(c *Conn) {
	t.mu.Lock()
	for t.firing == c {
		t.idle.Wait()
	}
	if c.heapIdx >= 0 {
		t.removeLocked(c)
	}
	t.mu.Unlock()
}

func (t *Timers) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// The heap: a binary min-heap on timerAt, each Conn knowing its index.

func (t *Timers) pushLocked(c *Conn) {
	c.heapIdx = len(t.heap)
	t.heap = append(t.heap, c)
	t.upLocked(c.heapIdx)
}

func (t *Timers) removeLocked(c *Conn) {
	i, last := c.heapIdx, len(t.heap)-1
	if i != last {
		t.swap(i, last)
	}
	t.heap[last] = nil
	t.heap = t.heap[:last]
	c.heapIdx = -1
	if i != last {
		t.downLocked(i)
		t.upLocked(i)
	}
}

func (t *Timers) less(i, j int) bool { return t.heap[i].timerAt.Before(t.heap[j].timerAt) }

func (t *Timers) swap(i, j int) {
	t.heap[i], t.heap[j] = t.heap[j], t.heap[i]
	t.heap[i].heapIdx, t.heap[j].heapIdx = i, j
}

func (t *Timers) upLocked(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !t.less(i, p) {
			return
		}
		t.swap(i, p)
		i = p
	}
}

func (t *Timers) downLocked(i int) {
	n := len(t.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && t.less(r, l) {
			m = r
		}
		if !t.less(m, i) {
			return
		}
		t.swap(i, m)
		i = m
	}
}

// fire does c's due timer work on the Timers goroutine and asks for the
// next round.
func (c *Conn) fire() {
	c.mu.Lock()
	for round := 0; ; round++ {
		if c.closed {
			c.mu.Unlock()
			if c.ownTimers {
				c.timers.halt() // nothing else runs on it
			}
			return
		}
		now := time.Now()
		deadline := c.nextDeadlineLocked(now)
		if deadline.After(now) || round == maxFireRounds {
			c.armed = deadline
			c.timers.reset(c, deadline)
			c.mu.Unlock()
			return
		}
		b := c.onTimerLocked(now)
		c.writeUnlock(b)
		c.mu.Lock()
	}
}
