package p2p

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestChannelPriorityConfig: with Config.ChannelPriority putting channel 2
// on a lower level than channel 1, channel 2's messages, queued after
// channel 1's, all arrive before channel 1's first; with no priorities the
// channels share, and channel 1's first 1 MiB message arrives before
// channel 2's last.
func TestChannelPriorityConfig(t *testing.T) {
	leakcheck.Check(t)
	for _, prio := range []bool{true, false} {
		order := priorityOrder(t, prio)
		firstBulk := -1
		lastUrgent := -1
		for i, ch := range order {
			if ch == 1 && firstBulk < 0 {
				firstBulk = i
			}
			if ch == 2 {
				lastUrgent = i
			}
		}
		t.Logf("priorities %v: channels in order of arrival %v", prio, order)
		switch {
		case prio && lastUrgent > firstBulk:
			t.Errorf("with priorities: channel 2's last message arrived after channel 1's first: %v", order)
		case !prio && lastUrgent < firstBulk:
			t.Errorf("without priorities: channel 2 went first, as if prioritised: %v", order)
		}
	}
}

// priorityOrder queues three 1 MiB messages on channel 1, then four of
// 512 KiB on channel 2, and returns the channels in the order the messages
// arrived.
func priorityOrder(t *testing.T, prio bool) []int {
	cfg := Config{AppID: "prio"}
	if prio {
		cfg.ChannelPriority = func(ch int) ChannelPriority {
			if ch == 2 {
				return ChannelPriority{Level: -1}
			}
			return ChannelPriority{}
		}
	}
	a := loopbackNode(t, "127.0.0.1", cfg)
	b := loopbackNode(t, "127.0.0.1", Config{AppID: "prio"})
	defer a.Close()
	defer b.Close()
	introduce(a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.SendP2PPacket(b.PeerID(), []byte("hi"), SendReliable, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the session request", func() bool {
		return b.AcceptP2PSessionWithUser(a.PeerID())
	})
	if _, err := b.Receive(ctx, 0); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for _, c := range []struct{ ch, n int }{{1, 3}, {2, 4}} {
		wg.Go(func() {
			for range c.n {
				if _, err := b.Receive(ctx, c.ch); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				order = append(order, c.ch)
				mu.Unlock()
			}
		})
	}
	// The first message acknowledged, so its channel holds no share of the
	// queue (with three busy channels the fourth 512 KiB would not fit).
	waitFor(t, 10*time.Second, "the first message acknowledged", func() bool {
		st, _ := a.GetP2PSessionState(b.PeerID())
		return st.BytesQueuedForSend == 0
	})
	// Queued in one go, so the order on the wire is the scheduler's alone
	// (SendP2PPacket writes what it can before it returns).
	s := a.lookupSession(b.PeerID())
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	for _, c := range []struct{ ch, n, size int }{{1, 3, 1 << 20}, {2, 4, 512 << 10}} {
		for range c.n {
			if err := conn.Queue(uint16(c.ch), make([]byte, c.size), channels.Reliable); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	return order
}

// TestCongestionControlConfig: New refuses an unknown controller and
// takes both known ones.
func TestCongestionControlConfig(t *testing.T) {
	if _, err := New(Config{CongestionControl: channels.CUBIC + 1}); err == nil {
		t.Fatal("an unknown CongestionControl was accepted")
	}
	for _, cc := range []channels.CongestionControl{channels.BBR, channels.CUBIC} {
		n, err := New(Config{CongestionControl: cc, ListenAddr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		n.Close()
	}
}
