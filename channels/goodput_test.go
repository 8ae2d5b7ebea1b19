package channels

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// bulkGoodput sends total bytes in reliable messages of size over path
// (and its mirror back) with controller cc, in simulated time, and returns
// the goodput in bytes per second and the share of datagrams the
// bottleneck dropped, checking every message arrived in order.
func bulkGoodput(t *testing.T, cc CongestionControl, path simConfig, total, size int) (rate, drops float64) {
	synctest.Test(t, func(t *testing.T) {
		back := path
		back.seed++
		cfg := Config{CongestionControl: cc}
		p := newPair(t, path, back, cfg, cfg)
		// One message first: the transfer starts with the peer's window and
		// an RTT sample known, as a session's would after its handshake.
		if err := p.a.Send(0, []byte("hello"), Reliable|FlushHint); err != nil {
			t.Fatal(err)
		}
		for p.a.Stats().QueuedBytes > 0 { // acknowledged: the sender knows both
			time.Sleep(10 * time.Millisecond)
		}
		msg := make([]byte, size)
		n := total / size
		start := time.Now()
		go sendBulk(t, p.a, 1, msg, n, nil)
		if !p.rb.waitFor(10*time.Minute, func() bool { return p.rb.count[1] == n }) {
			t.Fatalf("%d of %d messages in 10 minutes (%+v)", p.rb.count[1], n, p.a.Stats())
		}
		elapsed := time.Since(start)
		for i, m := range p.rb.snapshot() {
			if m.Channel == 1 && m.Data[0] != byte(i-1) {
				t.Fatalf("message %d arrived as #%d", i, m.Data[0])
			}
		}
		rate = float64(total) / elapsed.Seconds()
		p.net.dirs[0].mu.Lock()
		drops = float64(p.net.dirs[0].drops) / float64(p.net.dirs[0].sent)
		p.net.dirs[0].mu.Unlock()
	})
	return rate, drops
}

// TestBulkGoodputUnderLoss: through a 2 MB/s bottleneck with 25 ms each
// way and random loss after it, BBR keeps most of what the loss leaves
// (at 20 % loss, at least half of the 80 %), and far more than CUBIC,
// which takes each loss for congestion. At no loss both fill the pipe.
func TestBulkGoodputUnderLoss(t *testing.T) {
	const bottleneck = 2e6
	for _, loss := range []float64{0, 0.01, 0.1, 0.2, 0.3} {
		t.Run(fmt.Sprintf("loss=%v", loss), func(t *testing.T) {
			path := simConfig{seed: 7, loss: loss, delay: 25 * time.Millisecond, rate: bottleneck}
			bbr, _ := bulkGoodput(t, BBR, path, 4<<20, 64<<10)
			cubic, _ := bulkGoodput(t, CUBIC, path, 4<<20, 64<<10)
			t.Logf("goodput at %.0f %% loss: BBR %.0f KB/s (%.0f %% of the bottleneck), CUBIC %.0f KB/s, BBR/CUBIC %.1fx",
				100*loss, bbr/1e3, 100*bbr/bottleneck, cubic/1e3, bbr/cubic)
			if want := 0.5 * (1 - loss) * bottleneck; bbr < want {
				t.Errorf("BBR goodput %.0f KB/s, want at least %.0f", bbr/1e3, want/1e3)
			}
			if loss >= 0.1 && bbr < 2*cubic {
				t.Errorf("BBR %.0f KB/s is not twice CUBIC's %.0f at %.0f %% loss", bbr/1e3, cubic/1e3, 100*loss)
			}
		})
	}
}

// TestBBRDoesNotOverrunTheBottleneck: the loss compensation must not turn
// congestion into more sending. Through a shallow bottleneck queue (8 ms
// of the rate, where delay cannot tell congestion from random loss), with
// and without random loss after it, a 16 MB transfer still fills the pipe
// and the bottleneck drops under 6 % of the datagrams (in a 4 MB
// transfer, full compensation dropped 37 %, and Startup that overran the
// queue for its three rounds 14 %).
func TestBBRDoesNotOverrunTheBottleneck(t *testing.T) {
	const bottleneck = 2e6
	for _, loss := range []float64{0, 0.2} {
		t.Run(fmt.Sprintf("loss=%v", loss), func(t *testing.T) {
			path := simConfig{seed: 9, loss: loss, delay: 25 * time.Millisecond, rate: bottleneck, queue: 16 << 10}
			rate, drops := bulkGoodput(t, BBR, path, 16<<20, 64<<10)
			t.Logf("shallow queue, %.0f %% random loss: %.0f KB/s (%.0f %% of the bottleneck), %.1f %% dropped at the bottleneck",
				100*loss, rate/1e3, 100*rate/bottleneck, 100*drops)
			if drops > 0.06 {
				t.Errorf("the bottleneck dropped %.1f %% of the datagrams, want under 6 %%", 100*drops)
			}
			if want := 0.5 * (1 - loss) * bottleneck; rate < want {
				t.Errorf("goodput %.0f KB/s, want at least %.0f", rate/1e3, want/1e3)
			}
		})
	}
}

// sendBulk sends n copies of msg, numbered in its first byte, on channel
// as fast as the Conn's queue takes them, then closes done (if not nil).
func sendBulk(t *testing.T, c *Conn, channel uint16, msg []byte, n int, done chan<- struct{}) {
	if done != nil {
		defer close(done)
	}
	for i := range n {
		msg[0] = byte(i)
		for {
			err := c.Send(channel, msg, Reliable)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrQueueFull) {
				t.Error(err)
				return
			}
			c.WaitChannelQueue(context.Background(), channel)
		}
	}
}
