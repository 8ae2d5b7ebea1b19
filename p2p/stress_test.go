package p2p

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// stressSize is how many pairs TestStressSessions runs and for how long:
// 6 pairs for a few seconds by default, 25 (50 sessions) for a minute with
// GAMEWIRE_LONG=1 (which .ci/run sets).
func stressSize() (int, time.Duration) {
	if os.Getenv("GAMEWIRE_LONG") != "" {
		return 25, time.Minute
	}
	return 6, 4 * time.Second
}

// TestStressSessions runs pairs of nodes side by side (see stressSize),
// half on direct loopback paths and half relayed through the rendezvous
// server's TURN relay, each streaming reliable messages both ways, while the server
// (rendezvous and relay) restarts a third of the way in. Every message
// arrives exactly once and in order, no session fails, and nothing is
// left running after Close.
func TestStressSessions(t *testing.T) {
	leakcheck.Check(t)
	pairs, dur := stressSize() // half direct, half relayed; two streams a pair
	rv := startRestartable(t)
	pin := rv.pin()
	// Each node has an address of its own, as players do: the server's
	// per-IP limits would otherwise pace fifty nodes re-registering from
	// one address after the restart (a CGNAT's lot).
	var nodes []*Node
	for i := range pairs {
		for j := range 2 {
			ip := netip.AddrFrom4([4]byte{127, 0, 1, byte(1 + 2*i + j)}).String()
			var n *Node
			if i%2 == 0 {
				n = loopbackNode(t, ip, Config{Rendezvous: pin})
			} else {
				n = relayedNodeAt(t, rv, ip)
			}
			nodes = append(nodes, n)
		}
	}
	waitRegistered(t, rv.srv, nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), dur+40*time.Second)
	defer cancel()
	fails := make(chan SessionConnectFail, 64)
	var watchers sync.WaitGroup
	for _, n := range nodes {
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			watchFails(ctx, n, fails)
		}()
	}
	t.Logf("%d nodes registered; streaming for %v, the server restarts at %v", len(nodes), dur, dur/3)

	var wg sync.WaitGroup
	errs := make(chan error, 4*pairs)
	counts := make([]int, 2*pairs)
	var sent atomic.Int64
	progress := time.NewTicker(10 * time.Second)
	defer progress.Stop()
	watchers.Add(1)
	go func() {
		defer watchers.Done()
		for {
			select {
			case <-progress.C:
				t.Logf("%d messages sent so far", sent.Load())
			case <-ctx.Done():
				return
			}
		}
	}()
	stop := time.Now().Add(dur)
	for i := range pairs {
		a, b := nodes[2*i], nodes[2*i+1]
		for dir, ends := range [][2]*Node{{a, b}, {b, a}} {
			k := 2*i + dir
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := streamUntil(ctx, ends[0], ends[1].PeerID(), stop, &sent)
				counts[k] = n
				if err != nil {
					errs <- fmt.Errorf("pair %d direction %d sending: %w", i, dir, err)
				}
			}()
		}
	}
	time.Sleep(dur / 3)
	if err := rv.restart(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range pairs {
		a, b := nodes[2*i], nodes[2*i+1]
		for dir, ends := range [][2]*Node{{a, b}, {b, a}} {
			if err := receiveStream(ctx, ends[1], counts[2*i+dir]); err != nil {
				t.Errorf("pair %d direction %d (%d messages): %v; %s", i, dir, counts[2*i+dir], err, relayState(a, b))
			}
		}
	}
	select {
	case f := <-fails:
		t.Errorf("a session failed: %+v", f)
	default:
	}
	cancel()
	watchers.Wait() // the progress logger too
	progress.Stop()
	total := 0
	for _, c := range counts {
		total += c
	}
	t.Logf("%d reliable messages delivered exactly once and in order across the restart", total)
	for _, n := range nodes {
		n.Close()
	}
}

// watchFails accepts every session request and passes failures on.
func watchFails(ctx context.Context, n *Node, fails chan<- SessionConnectFail) {
	watchEvents(ctx, n, fails, nil)
}

// watchEvents is watchFails that also hands each PathChanged to onPath
// (if not nil).
func watchEvents(ctx context.Context, n *Node, fails chan<- SessionConnectFail, onPath func(PathChanged)) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-n.Events():
			if !ok {
				return
			}
			switch e := e.(type) {
			case SessionRequest:
				n.AcceptP2PSessionWithUser(e.Peer)
			case SessionConnectFail:
				select {
				case fails <- e:
				default:
				}
			case PathChanged:
				if onPath != nil {
					onPath(e)
				}
			}
		}
	}
}

// streamUntil sends numbered reliable messages to peer on channel 2 every
// 5 ms until stop, waiting for room rather than failing, and returns how
// many it sent.
func streamUntil(ctx context.Context, n *Node, peer PeerID, stop time.Time, total *atomic.Int64) (int, error) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	sent := 0
	for time.Now().Before(stop) {
		msg := binary.BigEndian.AppendUint32(make([]byte, 0, 64), uint32(sent))
		msg = append(msg, make([]byte, 60)...)
		if err := n.SendContext(ctx, peer, msg, SendReliable.Flags(), 2); err != nil {
			return sent, err
		}
		sent++
		total.Add(1)
		<-tick.C
	}
	return sent, nil
}

// receiveStream checks that n receives messages 0..count-1 on channel 2,
// in order, and nothing more.
func receiveStream(ctx context.Context, n *Node, count int) error {
	for i := range count {
		p, err := n.Receive(ctx, 2)
		if err != nil {
			return fmt.Errorf("message %d never arrived: %w", i, err)
		}
		if got := binary.BigEndian.Uint32(p.Data); got != uint32(i) {
			return fmt.Errorf("message %d: got %d (lost or duplicated)", i, got)
		}
	}
	extra, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if p, err := n.Receive(extra, 2); err == nil {
		return fmt.Errorf("extra message %x after the stream", p.Data[:4])
	}
	return nil
}
