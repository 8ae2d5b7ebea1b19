package channels

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Most tests in this file check that Deliver runs with no lock of the Conn
// held. A lock-order deadlock between sync.Mutexes is invisible to
// testing/synctest (a goroutine blocked on a Mutex is not durably blocked,
// so the bubble neither advances time nor reports the deadlock: it hangs),
// so those run in real time under a watchdog instead.

// watchdogStall is how long a watched test may go without progress before
// it is failed as deadlocked. Every test here makes progress many times a
// millisecond when nothing is stuck.
const watchdogStall = 10 * time.Second

// runWatched runs fn on a new goroutine and waits for it. When progress()
// has not changed for watchdogStall, it fails t with every goroutine's stack
// and returns without waiting for fn, which is stuck: fn must then not
// touch t, and its goroutines stay blocked until the test binary exits.
func runWatched(t *testing.T, progress func() int64, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	tick := time.NewTicker(watchdogStall / 20)
	defer tick.Stop()
	last, lastAt := progress(), time.Now()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		case now := <-tick.C:
			if p := progress(); p != last {
				last, lastAt = p, now
				continue
			}
			if now.Sub(lastAt) < watchdogStall {
				continue
			}
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("no progress for %v (progress %d): deadlock?\n\n%s", watchdogStall, last, buf)
		}
	}
}

// chanLink is a Link that queues a copy of each datagram on a channel, for
// reader goroutines; a full channel drops the datagram, as a socket would.
type chanLink chan []byte

func (l chanLink) SendDatagrams(dgrams [][]byte) error {
	for _, d := range dgrams {
		select {
		case l <- append([]byte(nil), d...):
		default:
		}
	}
	return nil
}

// feed calls c.HandleDatagram for each datagram from l until stop is
// closed.
func (l chanLink) feed(c *Conn, stop <-chan struct{}) {
	for {
		select {
		case d := <-l:
			c.HandleDatagram(d)
		case <-stop:
			return
		}
	}
}

// TestDeliverHoldsNoConnLock is the lock-order cycle p2p's sessions hit
// (deadlock B2): Deliver takes an outside mutex M (the session's), a
// goroutine holding M calls the Conn (the session's tick calls Err and
// Send), and a second reader calls HandleDatagram while the first is inside
// Deliver. The second reader must not wait for the first, and the Conn's
// methods must not wait for Deliver. The steps are ordered so the old code
// (deliveries serialized by a lock taken with the Conn's state lock held)
// deadlocks every time.
func TestDeliverHoldsNoConnLock(t *testing.T) {
	toB := make(chanLink, 16)
	a, err := New(toB, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var (
		outer   sync.Mutex // M, the session's mutex
		got     []string   // under outer
		entered = make(chan struct{})
	)
	b, err := New(discard, Config{Deliver: func(m Message) {
		if string(m.Data) == "first" {
			close(entered)
		}
		outer.Lock()
		got = append(got, string(m.Data))
		outer.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	var phase atomic.Int64 // progress: steps done
	runWatched(t, phase.Load, func() error {
		// Two datagrams from the peer, a message in each.
		if err := a.Send(0, []byte("first"), Reliable|FlushHint); err != nil {
			return err
		}
		d1 := <-toB
		if err := a.Send(0, []byte("second"), Reliable|FlushHint); err != nil {
			return err
		}
		d2 := <-toB
		phase.Add(1)

		outer.Lock()
		r1, r2 := make(chan error, 1), make(chan error, 1)
		go func() { r1 <- b.HandleDatagram(d1) }()
		<-entered // the first reader is in Deliver, waiting for M
		go func() { r2 <- b.HandleDatagram(d2) }()
		// Hold M and call the Conn, as the session's tick does, until the
		// second reader is through. Its message is queued for the first
		// reader to deliver once M is free. (The old code let the second
		// reader take the Conn's lock and wait for the first with it held,
		// so one of these calls blocked for good.)
		start := time.Now()
		for r2done := false; !r2done; {
			select {
			case err := <-r2:
				if err != nil {
					return fmt.Errorf("second reader: %v", err)
				}
				r2done = true
			default:
			}
			if time.Since(start) > watchdogStall/2 {
				return fmt.Errorf("second reader not through after %v of calls on the Conn with M held", watchdogStall/2)
			}
			if err := b.Err(); err != nil {
				return err
			}
			if err := b.Send(1, []byte{1}, Unreliable); err != nil {
				return err
			}
			b.Stats()
			runtime.Gosched()
		}
		phase.Add(1)
		outer.Unlock()
		if err := <-r1; err != nil {
			return fmt.Errorf("first reader: %v", err)
		}
		outer.Lock()
		defer outer.Unlock()
		if len(got) != 2 || got[0] != "first" || got[1] != "second" {
			return fmt.Errorf("delivered %q, want [first second]", got)
		}
		return b.Close()
	})
}

// TestDeliverLockOrderStress is the same cycle as p2p meets it: a peer Conn
// streams reliable messages, two readers feed its datagrams to the Conn
// (the main socket and a relay, say), Deliver takes M, and a ticking
// goroutine calls Err, Send and Stats with M held. The run is bounded by
// the message count; the old code hung within a few hundred milliseconds.
func TestDeliverLockOrderStress(t *testing.T) {
	const n, chans = 20000, 4
	toA, toB := make(chanLink, 1024), make(chanLink, 1024)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	var (
		outer     sync.Mutex // M
		next      [chans]int // under outer: next index expected per channel
		bad       error      // under outer: the first misdelivery
		delivered atomic.Int64
		all       = make(chan struct{}) // closed at the nth delivery
	)
	a, err := New(toB, Config{Deliver: func(Message) {}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(toA, Config{Deliver: func(m Message) {
		outer.Lock()
		defer outer.Unlock()
		if ch, i := int(m.Channel), decodeIndex(m.Data); ch >= chans || i != next[ch] {
			if bad == nil {
				bad = fmt.Errorf("channel %d: got #%d, want #%d", ch, i, next[min(ch, chans-1)])
			}
		} else {
			next[ch]++
		}
		if delivered.Add(1) == n {
			close(all)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	readers.Go(func() { toA.feed(a, stop) })
	readers.Go(func() { toB.feed(b, stop) }) // two readers for b
	readers.Go(func() { toB.feed(b, stop) })

	runWatched(t, delivered.Load, func() error {
		tickDone := make(chan struct{})
		var ticker sync.WaitGroup
		ticker.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-tickDone:
					return
				default:
				}
				outer.Lock()
				b.Err()
				b.Send(uint16(i%chans), []byte{byte(i)}, Unreliable)
				b.Stats()
				outer.Unlock()
				runtime.Gosched()
			}
		})
		var err error
		for k := range n {
			ch := uint16(k % chans)
			msg := encodeIndex(k/chans, 8+k%100)
			for {
				if err = a.Send(ch, msg, Reliable); err != ErrQueueFull {
					break
				}
				if err = a.WaitSendQueue(context.Background()); err != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		if err == nil {
			a.Flush()
			<-all
		}
		close(tickDone)
		ticker.Wait()
		close(stop)
		readers.Wait()
		a.Close()
		b.Close()
		if err != nil {
			return err
		}
		outer.Lock()
		defer outer.Unlock()
		if bad != nil {
			return bad
		}
		if d := delivered.Load(); d != n {
			return fmt.Errorf("delivered %d of %d", d, n)
		}
		return nil
	})
}

func encodeIndex(i, size int) []byte {
	b := make([]byte, size)
	b[0], b[1], b[2], b[3] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	return b
}

func decodeIndex(b []byte) int {
	if len(b) < 4 {
		return -1
	}
	return int(b[0])<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3])
}

// TestDeliverMayCallConn: Deliver calls every kind of Conn method from
// inside the callback: Err, Stats, AckOverdue, Send, Release, Flush,
// ProbeNow, SetReceiveWindow, HandleDatagram (the messages of a nested
// call come after the current one) and at last Close. With ReleaseOnRead
// and a window much smaller than the stream, nothing gets through unless
// the Release calls made inside Deliver work.
func TestDeliverMayCallConn(t *testing.T) {
	const n = 2000
	toA, toB := make(chanLink, 1024), make(chanLink, 1024)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	var (
		mu        sync.Mutex // guards the fields below
		bad       error
		nextB     int // next index B expects
		nextA     int // next echo A expects
		echoes    = make(chan struct{})
		closed    = make(chan struct{})
		inDeliver atomic.Int32
		progress  atomic.Int64
		nested    atomic.Int64 // nested HandleDatagram calls that took a datagram
	)
	fail := func(err error) {
		mu.Lock()
		if bad == nil {
			bad = err
		}
		mu.Unlock()
	}
	a, err := New(toB, Config{Deliver: func(m Message) {
		progress.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if i := decodeIndex(m.Data); i != nextA {
			bad = cmp.Or(bad, fmt.Errorf("echo #%d, want #%d", i, nextA))
		}
		if nextA++; nextA == n {
			close(echoes)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	var b *Conn
	b, err = New(toA, Config{
		MaxReliableSize: 16 << 10,
		ReceiveWindow:   32 << 10,
		ReleaseOnRead:   true,
		Deliver: func(m Message) {
			progress.Add(1)
			if inDeliver.Add(1) != 1 {
				fail(fmt.Errorf("Deliver calls overlap"))
			}
			defer inDeliver.Add(-1)
			i := decodeIndex(m.Data)
			if string(m.Data) == "bye" {
				if err := b.Close(); err != nil {
					fail(err)
				}
				if err := b.Err(); err != ErrClosed {
					fail(fmt.Errorf("Err after Close in Deliver: %v", err))
				}
				if err := b.Send(0, []byte("x"), Reliable); err != ErrClosed {
					fail(fmt.Errorf("Send after Close in Deliver: %v", err))
				}
				close(closed)
				return
			}
			mu.Lock()
			if i != nextB {
				bad = cmp.Or(bad, fmt.Errorf("B got #%d, want #%d", i, nextB))
			}
			nextB++
			mu.Unlock()
			b.Release(len(m.Data))
			if err := b.Err(); err != nil {
				fail(fmt.Errorf("Err in Deliver: %v", err))
			}
			if s := b.Stats(); s.MessagesReceived < uint64(i+1) {
				fail(fmt.Errorf("Stats in Deliver: %d received at #%d", s.MessagesReceived, i))
			}
			b.AckOverdue()
			if err := b.Send(1, m.Data[:4], Reliable); err != nil {
				fail(fmt.Errorf("Send in Deliver: %v", err))
			}
			if i%100 == 0 {
				b.Flush()
				b.ProbeNow()
			}
			if i == n/2 {
				b.SetReceiveWindow(64 << 10)
			}
			if i%7 == 0 {
				select {
				case d := <-toB:
					nested.Add(1)
					b.HandleDatagram(d)
				default:
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	readers.Go(func() { toA.feed(a, stop) })
	readers.Go(func() { toB.feed(b, stop) })

	runWatched(t, progress.Load, func() error {
		for k := range n {
			msg := encodeIndex(k, 8+k%1000)
			for {
				err := a.Send(0, msg, Reliable)
				if err != ErrQueueFull {
					if err != nil {
						return err
					}
					break
				}
				if err := a.WaitSendQueue(context.Background()); err != nil {
					return err
				}
			}
		}
		a.Flush()
		<-echoes
		if err := a.Send(0, []byte("bye"), Reliable|FlushHint); err != nil {
			return err
		}
		<-closed
		close(stop)
		readers.Wait()
		return a.Close()
	})
	mu.Lock()
	defer mu.Unlock()
	if bad != nil {
		t.Fatal(bad)
	}
	if nested.Load() == 0 {
		t.Error("no nested HandleDatagram call: the test did not exercise it")
	}
	t.Logf("%d nested HandleDatagram calls", nested.Load())
}

// TestQueueBehindDeliverIsBounded: while Deliver is busy, other readers
// queue messages for it; the queue stays within what the receiver already
// bounds. Reliable messages keep their receive window until delivered, so
// acknowledgements sent meanwhile do not give it back, and an ACK carrying
// the new limit follows within MaxAckDelay of their delivery; unreliable
// ones past ReassemblyBytes are dropped and counted.
func TestQueueBehindDeliverIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu   sync.Mutex
			sent [][]byte // b's datagrams
			got  []Message
		)
		link := linkFunc(func(d [][]byte) error {
			mu.Lock()
			defer mu.Unlock()
			for _, b := range d {
				sent = append(sent, append([]byte(nil), b...))
			}
			return nil
		})
		gate := make(chan struct{})
		const window, reassembly = 100 << 10, 8 << 10
		b, err := New(link, Config{MaxReliableSize: 64 << 10, ReceiveWindow: window, ReassemblyBytes: reassembly,
			Deliver: func(m Message) {
				<-gate // busy until the test opens the gate
				mu.Lock()
				got = append(got, m)
				mu.Unlock()
			}})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		// lastLimit is the receive window limit in b's latest ACK.
		lastLimit := func() (limit uint64, acks int) {
			mu.Lock()
			defer mu.Unlock()
			var p packetParser
			for _, d := range sent {
				if _, _, err := p.parse(d); err != nil {
					t.Fatal(err)
				}
				for _, f := range p.frames {
					switch f.typ {
					case frameTypeAck:
						limit, acks = f.maxData, acks+1
					case frameTypeMaxData:
						t.Fatalf("MAX_DATA %d: less than half the window was given back", f.value)
					}
				}
			}
			return limit, acks
		}
		state := func() (limit, held uint64, unrel int) {
			b.mu.Lock()
			defer b.mu.Unlock()
			return b.maxDataLimit(), b.heldCost, b.queuedUnrel
		}
		pn := uint64(0)
		dgram := func(k kind, seq uint64, data []byte) []byte {
			d := appendHeader(nil, pn)
			pn++
			return appendMsg(d, k, false, 0, seq, 0, 0, 0, data, false)
		}

		first := make(chan error, 1)
		go func() { first <- b.HandleDatagram(dgram(kindReliable, 0, []byte("first"))) }()
		synctest.Wait() // the first reader is in Deliver
		limit0, _, _ := state()
		if want := uint64(window) + msgCost(5); limit0 != want {
			t.Fatalf("limit %d after the first message, want %d: its window goes back as it is queued", limit0, want)
		}

		// A second reader: reliable messages, then unreliable ones, queued
		// behind the busy Deliver; every call returns at once.
		const nRel, nUnrel, size = 20, 20, 1000
		for i := range nRel {
			if err := b.HandleDatagram(dgram(kindReliable, uint64(1+i), payload(0, 1+i, size))); err != nil {
				t.Fatal(err)
			}
		}
		for i := range nUnrel {
			if err := b.HandleDatagram(dgram(kindUnsequenced, 0, payload(0, 100+i, size))); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(10 * DefaultMaxAckDelay)
		synctest.Wait()
		limit, held, unrel := state()
		heldWant := nRel * msgCost(size)
		if limit != limit0 || held != heldWant {
			t.Errorf("queued: limit %d (was %d), held %d, want %d held", limit, limit0, held, heldWant)
		}
		if unrel > reassembly || unrel != reassembly/size*size {
			t.Errorf("%d unreliable bytes queued, budget %d", unrel, reassembly)
		}
		dropped := nUnrel - reassembly/size
		if s := b.Stats(); s.DeliveryDrops != uint64(dropped) {
			t.Errorf("DeliveryDrops = %d, want %d", s.DeliveryDrops, dropped)
		}
		if l, acks := lastLimit(); acks == 0 || l != limit0 {
			t.Errorf("%d ACKs sent while queued, the last with limit %d, want %d", acks, l, limit0)
		}

		// Deliver gets going: everything queued comes out, in order, and
		// the window goes back.
		close(gate)
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		if n := len(got); n != 1+nRel+nUnrel-dropped {
			t.Errorf("%d delivered, want %d", n, 1+nRel+nUnrel-dropped)
		}
		for i, m := range got[1:] {
			if _, j := parsePayload(t, m.Data); (i < nRel && j != 1+i) || (i >= nRel && j != 100+i-nRel) {
				t.Errorf("delivery %d is #%d", 1+i, j)
			}
		}
		mu.Unlock()
		limit, held, unrel = state()
		if limit != limit0+heldWant || held != 0 || unrel != 0 {
			t.Errorf("delivered: limit %d, want %d; held %d, unreliable queued %d", limit, limit0+heldWant, held, unrel)
		}
		time.Sleep(DefaultMaxAckDelay)
		synctest.Wait()
		if l, _ := lastLimit(); l != limit0+heldWant {
			t.Errorf("no ACK with the new limit %d within MaxAckDelay (last %d)", limit0+heldWant, l)
		}
	})
}

// inlineLink is a Link that notes a write made on the goroutine that is
// inside Queue or SetReceiveWindow: one p2p would make under its session
// lock.
type inlineLink struct {
	caller *atomic.Int64 // the goroutine calling the Conn now (0: none)
	inline *atomic.Int64 // writes made on it
	sent   chanLink
}

func (l inlineLink) SendDatagrams(dgrams [][]byte) error {
	if id := l.caller.Load(); id != 0 && id == goid() {
		l.inline.Add(1)
	}
	return l.sent.SendDatagrams(dgrams)
}

// goid is the calling goroutine's number, from its stack header.
func goid() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	n, _ := strconv.ParseInt(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return n
}

// TestQueueWritesNothingInline: Queue and SetReceiveWindow leave the
// writing to the Conn's own goroutine, so a caller holding a lock the
// Link's writes need (p2p's session lock) writes nothing under it; what it
// queued still goes out, in order. Send, for contrast, writes at once.
func TestQueueWritesNothingInline(t *testing.T) {
	var caller, inline atomic.Int64
	link := inlineLink{caller: &caller, inline: &inline, sent: make(chanLink, 64)}
	c, err := New(link, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []string
	b, err := New(discard, Config{Deliver: func(m Message) { got = append(got, string(m.Data)) }})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	caller.Store(goid())
	for _, m := range []string{"one", "two", "three"} {
		if err := c.Queue(0, []byte(m), Reliable|FlushHint); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReceiveWindow(8 << 20)
	caller.Store(0)
	if n := inline.Load(); n != 0 {
		t.Fatalf("%d datagrams written on the caller's goroutine", n)
	}
	timeout := time.After(5 * time.Second)
	for len(got) < 3 {
		select {
		case d := <-link.sent:
			if err := b.HandleDatagram(d); err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatalf("got %q after 5 s: the Conn's goroutine did not send what was queued", got)
		}
	}
	if want := []string{"one", "two", "three"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	caller.Store(goid())
	if err := c.Send(0, []byte("four"), Reliable|FlushHint); err != nil {
		t.Fatal(err)
	}
	caller.Store(0)
	if inline.Load() == 0 {
		t.Fatal("Send did not write on the caller's goroutine: this test cannot tell")
	}
}
