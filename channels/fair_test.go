package channels

import (
	"context"
	"errors"
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
