package channels

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// payload builds a message that names its channel and index, padded to n
// bytes with a pattern derived from both, so corruption is caught.
func payload(ch uint16, i, n int) []byte {
	n = max(n, 8)
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b, ch)
	binary.BigEndian.PutUint32(b[2:], uint32(i))
	for j := 8; j < n; j++ {
		b[j] = byte(int(ch)*31 + i*7 + j)
	}
	return b
}

func parsePayload(t *testing.T, b []byte) (uint16, int) {
	t.Helper()
	if len(b) < 8 {
		t.Fatalf("short message %d bytes", len(b))
	}
	ch, i := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint32(b[2:]))
	if !bytes.Equal(b, payload(ch, i, len(b))) {
		t.Fatalf("message ch %d #%d corrupted", ch, i)
	}
	return ch, i
}

// sendAll sends msgs, waiting for queue space when the queue is full. It
// may run on any goroutine: failures are reported with Errorf.
func sendAll(t *testing.T, c *Conn, msgs []Message) {
	t.Helper()
	for _, m := range msgs {
		for {
			err := c.Send(m.Channel, m.Data, m.Flags)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrQueueFull) {
				t.Errorf("send: %v", err)
				return
			}
			if err := c.WaitSendQueue(context.Background()); err != nil {
				t.Errorf("wait: %v", err)
				return
			}
		}
	}
}

// reliableWorkload returns n reliable messages over channels 0..chans-1,
// mostly small, some fragmented, a few large.
func reliableWorkload(seed uint64, n, chans int) []Message {
	rng := rand.New(rand.NewPCG(seed, 1))
	next := make([]int, chans)
	msgs := make([]Message, n)
	for k := range msgs {
		ch := uint16(rng.IntN(chans))
		size := 8 + rng.IntN(200)
		switch r := rng.IntN(100); {
		case r < 5:
			size = 2000 + rng.IntN(60000)
		case r < 6:
			size = 200000 + rng.IntN(100000)
		}
		f := Reliable
		if rng.IntN(4) == 0 {
			f |= FlushHint
		}
		msgs[k] = Message{Channel: ch, Flags: f, Data: payload(ch, next[ch], size)}
		next[ch]++
	}
	return msgs
}

// checkReliable asserts got holds, per channel, exactly the messages of want
// in order.
func checkReliable(t *testing.T, want, got []Message) {
	t.Helper()
	per := map[uint16]int{}
	for _, m := range got {
		ch, i := parsePayload(t, m.Data)
		if ch != m.Channel {
			t.Fatalf("message for channel %d delivered on %d", ch, m.Channel)
		}
		if i != per[ch] {
			t.Fatalf("channel %d: got #%d, want #%d (lost, duplicated or reordered)", ch, i, per[ch])
		}
		if m.Flags != Reliable {
			t.Fatalf("flags %v", m.Flags)
		}
		per[ch]++
	}
	if len(got) != len(want) {
		t.Fatalf("delivered %d of %d", len(got), len(want))
	}
}

func TestReliableExactlyOnceInOrder(t *testing.T) {
	for _, loss := range []float64{0, 0.01, 0.10, 0.30} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("loss=%v/seed=%d", loss, seed), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					net := simConfig{seed: seed, loss: loss, dup: 0.02, reorder: 0.05,
						delay: 20 * time.Millisecond, jitter: 5 * time.Millisecond}
					back := net
					back.seed = seed + 100
					p := newPair(t, net, back, Config{}, Config{})
					n := 600
					if loss >= 0.3 {
						n = 250
					}
					want := reliableWorkload(seed, n, 5)
					// Traffic both ways, so acks ride on data too.
					go sendAll(t, p.b, reliableWorkload(seed+7, n/4, 3))
					sendAll(t, p.a, want)
					if !p.rb.waitFor(10*time.Minute, func() bool { return len(p.rb.msgs) >= len(want) }) {
						t.Fatalf("delivered %d of %d; stats %+v", p.rb.len(), len(want), p.a.Stats())
					}
					synctest.Wait()
					checkReliable(t, want, p.rb.snapshot())
					s := p.a.Stats()
					if loss > 0 && s.Retransmissions == 0 {
						t.Errorf("no retransmissions at %v loss", loss)
					}
					sent, lost, _, _ := p.net.counts(0)
					t.Logf("sent %d datagrams, %d lost on the path; engine saw %d lost (%.1f%%), %d retransmissions, srtt %v, cwnd %d",
						sent, lost, s.PacketsLost, s.LossPercentLifetime, s.Retransmissions, s.SmoothedRTT, s.CongestionWindow)
				})
			})
		}
	}
}

func TestSequencedNeverStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := simConfig{seed: 3, loss: 0.1, dup: 0.1, reorder: 0.3, delay: 20 * time.Millisecond, jitter: 15 * time.Millisecond}
		p := newPair(t, net, net, Config{MaxUnreliableSize: 8000}, Config{MaxUnreliableSize: 8000})
		const n = 2000
		for i := range n {
			ch := uint16(i % 2)
			size := 16
			if i%10 == 0 {
				size = 3000 // fragmented
			}
			if err := p.a.Send(ch, payload(ch, i, size), Unreliable); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond) // about 60 KB/s
		}
		time.Sleep(time.Second)
		last := map[uint16]int{0: -1, 1: -1}
		for _, m := range p.rb.snapshot() {
			ch, i := parsePayload(t, m.Data)
			if m.Flags != Unreliable {
				t.Fatalf("flags %v", m.Flags)
			}
			if i <= last[ch] {
				t.Fatalf("channel %d: #%d delivered after #%d", ch, i, last[ch])
			}
			last[ch] = i
		}
		got := p.rb.len()
		if got < n/2 {
			t.Fatalf("only %d of %d delivered; a %+v\nb %+v", got, n, p.a.Stats(), p.b.Stats())
		}
		if p.b.Stats().StaleSequenced == 0 {
			t.Error("reordering produced no stale drops: the test did not exercise them")
		}
		t.Logf("delivered %d of %d; %d stale dropped", got, n, p.b.Stats().StaleSequenced)
	})
}

func TestUnsequencedNoDuplicates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := simConfig{seed: 4, loss: 0.05, dup: 0.3, reorder: 0.3, delay: 10 * time.Millisecond, jitter: 10 * time.Millisecond}
		p := newPair(t, net, net, Config{MaxUnreliableSize: 5000}, Config{MaxUnreliableSize: 5000})
		const n = 2000
		for i := range n {
			size := 32
			if i%10 == 0 {
				size = 4000
			}
			if err := p.a.Send(9, payload(9, i, size), Unreliable|Unsequenced|FlushHint); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond) // about 90 KB/s
		}
		time.Sleep(time.Second)
		seen := map[int]bool{}
		reordered := false
		prev := -1
		for _, m := range p.rb.snapshot() {
			_, i := parsePayload(t, m.Data)
			if seen[i] {
				t.Fatalf("#%d delivered twice", i)
			}
			seen[i] = true
			reordered = reordered || i < prev
			prev = i
		}
		_, _, dups, _ := p.net.counts(0)
		if dups == 0 || !reordered {
			t.Fatalf("test did not exercise duplication (%d) and reordering (%v)", dups, reordered)
		}
		if len(seen) < n*8/10 {
			t.Fatalf("only %d of %d delivered; a %+v", len(seen), n, p.a.Stats())
		}
		t.Logf("delivered %d of %d with %d datagrams duplicated on the path", len(seen), n, dups)
	})
}

// TestChannelIsolation stalls a reliable message on one channel by dropping
// every datagram that carries it, and checks messages on another channel,
// sent after it, arrive meanwhile.
func TestChannelIsolation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := simConfig{delay: 10 * time.Millisecond}
		p := newPair(t, net, net, Config{}, Config{})
		marker := []byte("STALLED-MESSAGE")
		var stall atomic.Bool
		stall.Store(true)
		p.net.setDrop(0, func(b []byte) bool { return stall.Load() && bytes.Contains(b, marker) })

		if err := p.a.Send(1, marker, Reliable|FlushHint); err != nil {
			t.Fatal(err)
		}
		if err := p.a.Send(1, []byte("after-stalled"), Reliable|FlushHint); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for i := range 20 {
			if err := p.a.Send(2, payload(2, i, 50), Reliable|FlushHint); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		ok := p.rb.waitFor(200*time.Millisecond, func() bool { return p.rb.count[2] == 20 })
		if !ok {
			t.Fatalf("channel 2 got %d of 20 while channel 1 was stalled", p.rb.len())
		}
		if elapsed := time.Since(start); elapsed > 20*5*time.Millisecond+2*net.delay+time.Millisecond {
			t.Fatalf("channel 2 took %v", elapsed)
		}
		if p.rb.waitFor(0, func() bool { return p.rb.count[1] != 0 }) {
			t.Fatal("channel 1 delivered despite the stall")
		}
		stall.Store(false)
		if !p.rb.waitFor(10*time.Second, func() bool { return p.rb.count[1] == 2 }) {
			t.Fatal("channel 1 never recovered")
		}
		msgs := p.rb.snapshot()
		var ch1 [][]byte
		for _, m := range msgs {
			if m.Channel == 1 {
				ch1 = append(ch1, m.Data)
			}
		}
		if !bytes.Equal(ch1[0], marker) || string(ch1[1]) != "after-stalled" {
			t.Fatalf("channel 1 order: %q", ch1)
		}
	})
}

// TestLostUnreliableNotRetransmitted drops the one datagram carrying an
// unreliable message and checks it is never sent again, while a reliable
// message lost the same way is.
func TestLostUnreliableNotRetransmitted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net0 := simConfig{delay: 10 * time.Millisecond}
		p := newPair(t, net0, net0, Config{}, Config{})
		var mu sync.Mutex
		seen := map[string]int{}
		markers := []string{"UNRELIABLE-SEQUENCED", "UNRELIABLE-UNSEQUENCED", "RELIABLE-MESSAGE"}
		p.net.setDrop(0, func(b []byte) bool {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range markers {
				if bytes.Contains(b, []byte(m)) {
					seen[m]++
					return seen[m] == 1 // drop the first copy only
				}
			}
			return false
		})
		p.a.Send(1, []byte(markers[0]), Unreliable|FlushHint)
		p.a.Send(2, []byte(markers[1]), Unsequenced|FlushHint)
		p.a.Send(3, []byte(markers[2]), Reliable|FlushHint)
		// Later traffic gives loss detection acknowledgements to work with.
		for i := range 20 {
			p.a.Send(4, payload(4, i, 40), Reliable|FlushHint)
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(5 * time.Second)
		mu.Lock()
		defer mu.Unlock()
		if seen[markers[0]] != 1 || seen[markers[1]] != 1 {
			t.Errorf("unreliable messages sent %d and %d times, want once each", seen[markers[0]], seen[markers[1]])
		}
		// Sent again by retransmission or as a redundant copy (or both).
		if seen[markers[2]] < 2 {
			t.Errorf("lost reliable message sent %d times, want it sent again", seen[markers[2]])
		}
		for _, m := range p.rb.snapshot() {
			if m.Channel == 1 || m.Channel == 2 {
				t.Errorf("lost unreliable message delivered: %q", m.Data)
			}
		}
		if p.rb.waitFor(0, func() bool { return p.rb.count[3] != 1 }) {
			t.Error("reliable message not delivered exactly once")
		}
	})
}

// TestConcurrentReadersDeliverInOrder: two goroutines per direction call
// HandleDatagram at once (a socket and a relay, say) over a lossy,
// duplicating, reordering path, while Deliver takes an outside mutex that
// a ticking goroutine holds around calls to the Conn, and now and then
// takes its time, so messages queue behind it. Reliable messages still
// arrive exactly once in order per channel, sequenced ones never after a
// newer one, unsequenced ones never twice; Deliver calls never overlap;
// every message counted as received is delivered exactly once; and the
// peer never overruns the receive window, which queued messages hold.
func TestConcurrentReadersDeliverInOrder(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { concurrentReaders(t, seed) })
		})
	}
}

func concurrentReaders(t *testing.T, seed uint64) {
	path := simConfig{seed: seed, loss: 0.05, dup: 0.05, reorder: 0.1,
		delay: 10 * time.Millisecond, jitter: 5 * time.Millisecond, readers: 2}
	back := path
	back.seed = seed + 100
	n := newSimNet(path, back)
	defer n.close()
	const seqdCh, unseqCh = 20, 21
	var (
		outer       sync.Mutex // the session's mutex; guards the fields below
		reliable    []Message
		lastSeqd    = -1
		seqd        int
		seenUnseq   = map[int]bool{}
		delivered   int
		bad         error
		inDeliver   atomic.Int32
		maxQueued   int
		allReliable = make(chan struct{})
	)
	want := reliableWorkload(seed, 1500, 4)
	cfg := Config{MaxReliableSize: 320 << 10, ReceiveWindow: 512 << 10, MaxUnreliableSize: 8000}
	a, err := New(n.link(0), Config{MaxReliableSize: cfg.MaxReliableSize, MaxUnreliableSize: 8000})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var b *Conn
	cfg.Deliver = func(m Message) {
		if inDeliver.Add(1) != 1 {
			outer.Lock()
			bad = cmp.Or(bad, errors.New("Deliver calls overlap"))
			outer.Unlock()
		}
		defer inDeliver.Add(-1)
		b.mu.Lock() // white box: how many wait behind this call
		queued := len(b.deliveries)
		b.mu.Unlock()
		outer.Lock()
		delivered++
		maxQueued = max(maxQueued, queued)
		switch m.Channel {
		case seqdCh:
			_, i := parsePayload(t, m.Data)
			if i <= lastSeqd {
				bad = cmp.Or(bad, fmt.Errorf("sequenced #%d delivered after #%d", i, lastSeqd))
			}
			lastSeqd = i
			seqd++
		case unseqCh:
			_, i := parsePayload(t, m.Data)
			if seenUnseq[i] {
				bad = cmp.Or(bad, fmt.Errorf("unsequenced #%d delivered twice", i))
			}
			seenUnseq[i] = true
		default:
			if reliable = append(reliable, m); len(reliable) == len(want) {
				close(allReliable)
			}
		}
		slow := delivered%50 == 0
		outer.Unlock()
		if slow {
			time.Sleep(2 * time.Millisecond) // a slow application: the other reader queues
		}
	}
	if b, err = New(n.link(1), cfg); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	n.attach(0, b)
	n.attach(1, a)

	// The session's tick: the Conn called with the outside mutex held.
	stopTick := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopTick:
				return
			case <-time.After(time.Millisecond):
			}
			outer.Lock()
			if err := b.Err(); err != nil {
				bad = cmp.Or(bad, err)
			}
			b.Send(1, []byte{byte(i)}, Unreliable)
			b.Stats()
			outer.Unlock()
		}
	})
	wg.Go(func() {
		for i := range 1000 {
			size := 16
			if i%10 == 0 {
				size = 3000 // fragmented
			}
			a.Send(seqdCh, payload(seqdCh, i, size), Unreliable)
			a.Send(unseqCh, payload(unseqCh, i, size), Unreliable|Unsequenced)
			time.Sleep(2 * time.Millisecond)
		}
	})
	sendAll(t, a, want)
	select {
	case <-allReliable:
	case <-time.After(2 * time.Minute):
		t.Fatalf("reliable: %d of %d delivered; b %+v", len(reliable), len(want), b.Stats())
	}
	close(stopTick)
	wg.Wait()
	time.Sleep(time.Second) // unreliable stragglers
	synctest.Wait()

	outer.Lock()
	defer outer.Unlock()
	if bad != nil {
		t.Fatal(bad)
	}
	checkReliable(t, want, reliable)
	s := b.Stats()
	if s.MessagesReceived != uint64(delivered) {
		t.Errorf("%d messages received, %d delivered", s.MessagesReceived, delivered)
	}
	if s.FlowControlDrops != 0 {
		t.Errorf("the peer overran the receive window: %d drops", s.FlowControlDrops)
	}
	if maxQueued == 0 {
		t.Error("no message ever waited behind a delivery: the test did not exercise the queue")
	}
	if len(seenUnseq) < 500 || seqd < 500 {
		t.Errorf("unreliable: %d unsequenced and %d sequenced of 1000 each delivered", len(seenUnseq), seqd)
	}
	t.Logf("a: %d unreliable expired unsent, %d reassembly drops at b", a.Stats().UnreliableExpired, s.ReassemblyDrops)
	t.Logf("delivered %d (%d unsequenced, %d sequenced); up to %d queued behind Deliver; %d unreliable dropped behind it",
		delivered, len(seenUnseq), seqd, maxQueued, s.DeliveryDrops)
}
