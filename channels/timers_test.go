package channels

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"testing/synctest"
	"time"
)

// The heap hands out Conns in deadline order whatever order they were
// armed, moved and removed in.
func TestTimersHeapOrder(t *testing.T) {
	tm := &Timers{} // no goroutine: the heap alone
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Unix(1000, 0)
	conns := make([]*Conn, 200)
	for i := range conns {
		conns[i] = &Conn{heapIdx: -1}
		conns[i].timerAt = base.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
		tm.pushLocked(conns[i])
	}
	for _, c := range conns[:50] { // moved earlier, as earlier does
		c.timerAt = c.timerAt.Add(-time.Duration(rng.IntN(500)) * time.Millisecond)
		tm.upLocked(c.heapIdx)
	}
	for _, c := range conns[50:80] { // taken out, as forget does
		tm.removeLocked(c)
	}
	var last time.Time
	for n := 0; len(tm.heap) > 0; n++ {
		c := tm.heap[0]
		if c.timerAt.Before(last) {
			t.Fatalf("pop %d: %v after %v", n, c.timerAt, last)
		}
		last = c.timerAt
		tm.removeLocked(c)
		if c.heapIdx != -1 {
			t.Fatalf("removed Conn keeps index %d", c.heapIdx)
		}
	}
	for _, c := range conns[50:80] {
		if c.heapIdx != -1 {
			t.Fatal("forgotten Conn back in the heap")
		}
	}
}

// Many Conns on one Timers each get their acknowledgements, loss recovery
// and keepalives: every message arrives over lossy paths, and idle Conns
// stay up; one goroutine serves them all.
func TestSharedTimers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tm := NewTimers()
		before := runtime.NumGoroutine()
		const pairs, msgs = 20, 50
		var ps []*pair
		for i := range pairs {
			link := simConfig{seed: uint64(i), loss: 0.1, delay: 10 * time.Millisecond, jitter: 5 * time.Millisecond}
			ps = append(ps, newPair(t, link, link, Config{Timers: tm}, Config{Timers: tm}))
		}
		// Each pair adds its simnet's goroutines and no timer goroutine.
		if extra := runtime.NumGoroutine() - before; extra != pairs*2 {
			t.Fatalf("%d goroutines for %d pairs, want %d (the simnets')", extra, pairs, pairs*2)
		}
		for _, p := range ps {
			for j := range msgs {
				if err := p.a.Send(1, fmt.Appendf(nil, "m%d", j), Reliable); err != nil {
					t.Fatal(err)
				}
			}
		}
		for i, p := range ps {
			if !p.rb.waitFor(time.Minute, func() bool { return len(p.rb.msgs) == msgs }) {
				t.Fatalf("pair %d: %d of %d messages", i, p.rb.len(), msgs)
			}
		}
		time.Sleep(3 * DefaultIdleTimeout) // keepalives hold idle Conns
		for i, p := range ps {
			if p.a.Err() != nil || p.b.Err() != nil {
				t.Fatalf("pair %d ended while idle: %v %v", i, p.a.Err(), p.b.Err())
			}
			p.close()
		}
		tm.Close()
	})
}

// A Conn with a Timers of its own that ends by timeout, without Close,
// leaves no goroutine behind.
func TestOwnTimersEndWithConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		before := runtime.NumGoroutine()
		c, err := New(linkFunc(func([][]byte) error { return nil }), Config{})
		if err != nil {
			t.Fatal(err)
		}
		if runtime.NumGoroutine() != before+1 {
			t.Fatalf("%d goroutines for one Conn, want 1", runtime.NumGoroutine()-before)
		}
		<-c.Done() // nobody answers: the idle timeout ends it
		synctest.Wait()
		if n := runtime.NumGoroutine(); n != before {
			t.Fatalf("%d goroutines left after the Conn ended", n-before)
		}
		c.Close()
	})
}
