package p2p

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestBulkBesideGameTraffic is the fairness soak: two nodes on loopback
// whose every datagram goes through a bad path (20 % loss, 5 %
// duplication, 25 ms plus 0-50 ms jitter each way). One channel carries a
// bulk transfer in 1 MiB reliable messages, sent as fast as the session
// takes them; another a small reliable message every 50 ms, as a game's
// state would. Every small send is accepted at once (no ErrQueueFull),
// every small message arrives within a second, and the bulk data arrives
// whole, in order, at a rate the path allows: a loss-based controller
// managed 9-40 KB/s here. 4 MiB by default; 20 MiB with GAMEWIRE_LONG.
func TestBulkBesideGameTraffic(t *testing.T) {
	leakcheck.Check(t)
	bulkMsgs := 4
	if os.Getenv("GAMEWIRE_LONG") != "" {
		bulkMsgs = 20
	}
	lossy := func(seed uint64) (net.PacketConn, *lossyConn) {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lc := newLossyConn(pc, seed, 0.2, 0.05, 25*time.Millisecond, 50*time.Millisecond)
		return lc, lc
	}
	pa, la := lossy(1)
	pb, lb := lossy(2)
	a := loopbackNodeOn(t, pa, Config{AppID: "fair"})
	b := loopbackNodeOn(t, pb, Config{AppID: "fair"})
	defer func() { a.Close(); b.Close(); la.Close(); lb.Close() }()
	introduce(a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := a.SendP2PPacket(b.PeerID(), []byte("hi"), SendReliable, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the session request", func() bool { return b.AcceptP2PSessionWithUser(a.PeerID()) })
	if _, err := b.Receive(ctx, 0); err != nil {
		t.Fatal(err)
	}

	bulk := make([]byte, MaxReliableSize)
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { // the bulk sender: blocks while its channel's queue is full
		for i := range bulkMsgs {
			bulk[0], bulk[len(bulk)-1] = byte(i), byte(i)
			if err := a.SendContext(ctx, b.PeerID(), bulk, channels.Reliable, 1); err != nil {
				t.Errorf("bulk message %d: %v", i, err)
				return
			}
		}
	})
	var bulkDone time.Duration // written before finished is closed
	finished := make(chan struct{})
	wg.Go(func() {
		defer close(finished)
		for i := range bulkMsgs {
			p, err := b.Receive(ctx, 1)
			if err != nil {
				t.Errorf("bulk message %d: %v", i, err)
				return
			}
			if len(p.Data) != MaxReliableSize || p.Data[0] != byte(i) || p.Data[len(p.Data)-1] != byte(i) ||
				!bytes.Equal(p.Data[1:100], bulk[1:100]) {
				t.Errorf("bulk message %d arrived wrong (%d bytes, #%d)", i, len(p.Data), p.Data[0])
				return
			}
		}
		bulkDone = time.Since(start)
	})

	// Game traffic until the bulk transfer is done.
	var sentAt []time.Time
	var lat []time.Duration
	var mu sync.Mutex
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			p, err := b.Receive(ctx, 2)
			if err != nil {
				return
			}
			i := int(p.Data[0]) | int(p.Data[1])<<8
			mu.Lock()
			lat = append(lat, time.Since(sentAt[i]))
			mu.Unlock()
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
game:
	for i := 0; ; i++ {
		select {
		case <-tick.C:
		case <-finished:
			break game
		case <-ctx.Done():
			break game
		}
		mu.Lock()
		sentAt = append(sentAt, time.Now())
		mu.Unlock()
		if err := a.SendP2PPacket(b.PeerID(), []byte{byte(i), byte(i >> 8), 'g', 'a', 'm', 'e'}, SendReliable, 2); err != nil {
			t.Fatalf("game message %d: %v", i, err)
		}
	}
	tick.Stop()
	wg.Wait()
	if bulkDone == 0 {
		t.Fatal("the bulk transfer did not finish")
	}
	waitFor(t, 10*time.Second, "the last game messages", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(lat) == len(sentAt)
	})
	mu.Lock()
	slices.Sort(lat)
	p50, p99, worst := lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	n := len(lat)
	mu.Unlock()
	rate := float64(bulkMsgs*MaxReliableSize) / bulkDone.Seconds()
	st, _ := a.GetP2PSessionState(b.PeerID())
	t.Logf("%d MiB in %v (%.0f KB/s, loss %.0f %% in the last second); %d game messages beside it: p50 %v, p99 %v, worst %v",
		bulkMsgs, bulkDone.Round(time.Millisecond), rate/1e3, st.LossPercent, n, p50.Round(time.Millisecond), p99.Round(time.Millisecond), worst.Round(time.Millisecond))
	if worst > time.Second {
		t.Errorf("a game message took %v beside the bulk transfer, want under 1 s", worst)
	}
	if rate < 200e3 {
		t.Errorf("bulk goodput %.0f KB/s, want at least 200 KB/s", rate/1e3)
	}
	cancel()
	<-recvDone
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("timed out")
	}
}
