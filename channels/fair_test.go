package channels

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestQueueFairShare: a channel that fills the send queue (its data never
// acknowledged: the path drops everything) is refused past the bound, and
// another channel still gets its sends in, up to its fair share; the
// queue never holds more than twice the bound. A channel cap
// (ChannelQueueBytes) refuses its own channel only.
func TestQueueFairShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bound, size = 1 << 20, 64 << 10
		cfg := Config{SendQueueBytes: bound, MaxReliableSize: size, ReceiveWindow: 1 << 20}
		p := newPair(t, simConfig{loss: 1}, simConfig{}, cfg, Config{})
		msg := make([]byte, size)
		fill := func(ch uint16) (n int) {
			for ; n < 100; n++ {
				if err := p.a.Send(ch, msg, Reliable); err != nil {
					if !errors.Is(err, ErrQueueFull) {
						t.Fatal(err)
					}
					return n
				}
			}
			t.Fatalf("channel %d: 100 sends and no ErrQueueFull", ch)
			return n
		}
		if n := fill(1); n != bound/size {
			t.Fatalf("bulk channel took %d messages, want %d (the bound)", n, bound/size)
		}
		// Channel 2 holds nothing: its share is half the bound.
		if n := fill(2); n != bound/2/size {
			t.Errorf("second channel took %d messages, want %d (half the bound)", n, bound/2/size)
		}
		if n := fill(3); n != bound/3/size {
			t.Errorf("third channel took %d messages, want %d (a third)", n, bound/3/size)
		}
		for ch := uint16(4); ch < 40; ch++ {
			fill(ch)
		}
		if q := p.a.Stats().QueuedBytes; q > 2*bound {
			t.Errorf("queue holds %d bytes, bound twice %d", q, bound)
		}

		// WaitChannelQueue: the full bulk channel waits; an unused one has
		// room at once.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := p.a.WaitChannelQueue(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitChannelQueue on the full channel: %v, want a timeout", err)
		}
		if err := p.a.WaitChannelQueue(context.Background(), 100); err != nil {
			t.Errorf("WaitChannelQueue on an unused channel: %v", err)
		}
	})
}

// TestChannelQueueBytes: a channel cap refuses that channel alone.
func TestChannelQueueBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 64 << 10
		cfg := Config{SendQueueBytes: 1 << 20, ChannelQueueBytes: 4 * size, MaxReliableSize: size, ReceiveWindow: 1 << 20}
		p := newPair(t, simConfig{loss: 1}, simConfig{}, cfg, Config{})
		msg := make([]byte, size)
		for i := range 4 {
			if err := p.a.Send(1, msg, Reliable); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		if err := p.a.Send(1, msg, Reliable); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("past the channel cap: %v, want ErrQueueFull", err)
		}
		if err := p.a.Send(2, msg, Reliable); err != nil {
			t.Fatalf("another channel: %v", err)
		}
		if _, err := New(nil, Config{SendQueueBytes: 1 << 20, ChannelQueueBytes: 2 << 20}); err == nil {
			t.Error("ChannelQueueBytes over SendQueueBytes accepted")
		}
	})
}

// TestBulkDoesNotDelayOthers is the lossy soak of the fairness issue, in
// simulated time: a bulk transfer in 1 MiB reliable messages over a path
// with 20 % loss, 5 % duplication and 0-50 ms jitter (25 ms one way)
// keeps its channel's share of the queue and of the peer's window full,
// while another channel sends a small reliable message every 100 ms. Each
// small message must be accepted at once and arrive within a few round
// trips, as it would with no bulk transfer at all; the bulk data must all
// arrive, in order.
func TestBulkDoesNotDelayOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := simConfig{seed: 21, loss: 0.2, dup: 0.05, delay: 25 * time.Millisecond, jitter: 50 * time.Millisecond}
		back := path
		back.seed = 22
		p := newPair(t, path, back, Config{}, Config{})
		const bulkMsgs, small = 100, 40
		bulk := make([]byte, 64<<10)
		done := make(chan struct{})
		go sendBulk(t, p.a, 1, bulk, bulkMsgs, done)
		sentAt := make([]time.Time, small)
		for i := range small {
			time.Sleep(100 * time.Millisecond)
			sentAt[i] = time.Now()
			if err := p.a.Send(2, []byte{byte(i)}, Reliable); err != nil {
				t.Fatalf("small message %d: %v", i, err)
			}
		}
		<-done
		if !p.rb.waitFor(5*time.Minute, func() bool { return p.rb.count[1] == bulkMsgs && p.rb.count[2] == small }) {
			t.Fatalf("delivered %d bulk and %d small messages, want %d and %d", p.rb.count[1], p.rb.count[2], bulkMsgs, small)
		}
		var worst time.Duration
		for i, m := range p.rb.snapshot() {
			if m.Channel != 2 {
				continue
			}
			if d := p.rb.at[i].Sub(sentAt[m.Data[0]]); d > worst {
				worst = d
			}
		}
		t.Logf("small messages: worst latency %v beside the bulk transfer (%v)", worst, p.a.Stats())
		if worst > time.Second {
			t.Errorf("a small message took %v beside the bulk transfer, want under 1 s", worst)
		}
	})
}

// TestRetransmissionsTakeTheirTurn: with a backlog of lost fragments on
// one channel, a message on another channel goes out in its round-robin
// turn, within the first two datagrams, not after every retransmission
// (a message that fits beside a fragment rides along either way: this one
// does not).
func TestRetransmissionsTakeTheirTurn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, simConfig{delay: 10 * time.Millisecond}, simConfig{delay: 10 * time.Millisecond}, Config{}, Config{})
		if err := p.a.Send(0, []byte("hello"), Reliable|FlushHint); err != nil {
			t.Fatal(err)
		}
		if !p.rb.waitFor(time.Second, func() bool { return p.rb.count[0] == 1 }) {
			t.Fatal("first message did not arrive")
		}
		var mu sync.Mutex
		var sent [][]byte
		p.net.setDrop(0, func(d []byte) bool { // from now on a's datagrams are recorded, and lost
			mu.Lock()
			defer mu.Unlock()
			sent = append(sent, append([]byte(nil), d...))
			return true
		})
		bulk := make([]byte, 64<<10)
		for range 4 {
			if err := p.a.Send(1, bulk, Reliable|FlushHint); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(40 * time.Millisecond) // the window goes out, no probe timeout yet
		c := p.a
		c.mu.Lock()
		for i := range c.history.n {
			if pk := c.history.slot(i); pk.state == pktOutstanding {
				c.onPacketLost(pk) // as an acknowledgement of later packets would declare
			}
		}
		backlog := c.retxCount
		c.mu.Unlock()
		if backlog < 4 {
			t.Fatalf("only %d fragments to retransmit", backlog)
		}
		mu.Lock()
		before := len(sent)
		mu.Unlock()
		// Larger than what a datagram has left beside a fragment.
		marker := bytes.Repeat([]byte("channel 2 "), 60)
		if err := c.Send(2, marker, Reliable|FlushHint); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		at := -1
		for i, d := range sent[before:] {
			if bytes.Contains(d, marker) {
				at = i
				break
			}
		}
		t.Logf("%d fragments to retransmit; the message went in datagram %d of %d after it", backlog, at+1, len(sent)-before)
		if at < 0 || at > 1 {
			t.Errorf("the message went in datagram %d (0: not yet), want the first or second", at+1)
		}
	})
}
