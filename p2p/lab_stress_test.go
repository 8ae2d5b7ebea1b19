package p2p

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/netlab"
)

// TestLabStressPaths (GAMEWIRE_LONG=1, and root: a netlab) runs pairs
// across real NATs on the paths only such NATs make: each pair is a
// symmetric NAT (a fresh random port per destination) against a
// port-restricted one (Linux masquerade) or a double NAT, which only the
// birthday approach crosses, so the sessions run on the extra sockets it
// opens, or on one of the ports it sprayed. Reliable streams run both ways
// on every pair for 30 s while, at a third and at two thirds of it, every
// NAT in the lab forgets its mappings (conntrack -F in each NAT
// namespace): the symmetric NATs map the next packet to a new random
// port, the peers' NATs drop it, and each session must find a path again
// (through the rendezvous server, or the relay meanwhile). Every message
// arrives exactly once and in order, no session fails, no stream stalls
// past the dead-peer interval, every pair's path broke (the sessions
// repunched, at least once a flush, and moved) and ends up direct again,
// no event is dropped, and nothing is left running.
func TestLabStressPaths(t *testing.T) {
	if os.Getenv("GAMEWIRE_LONG") == "" {
		t.Skip("GAMEWIRE_LONG=1 runs it (30 s of streams across a NAT lab)")
	}
	netlab.Require(t)
	leakcheck.Check(t)
	const dur = 30 * time.Second
	e := newLabEnvWith(t, "lstress", 0, true)
	type pairSpec struct {
		name string
		a, b netlab.SiteConfig
	}
	sym := netlab.SiteConfig{NAT: netlab.NATSymmetric}
	specs := []pairSpec{
		{"sym-pr1", sym, netlab.SiteConfig{NAT: netlab.NATPortRestricted}},
		{"sym-pr2", sym, netlab.SiteConfig{NAT: netlab.NATPortRestricted}},
		{"sym-pr3", sym, netlab.SiteConfig{NAT: netlab.NATPortRestricted}},
		{"sym-dbl", sym, netlab.SiteConfig{NAT: netlab.NATPortRestricted, Outer: netlab.NATPortRestricted}},
	}
	type pair struct {
		name  string
		sites [2]*netlab.Site
		a, b  *Node
	}
	var pairs []*pair
	var nodes []*Node
	for _, sp := range specs {
		p := &pair{name: sp.name}
		for j, cfg := range []netlab.SiteConfig{sp.a, sp.b} {
			s, err := e.lab.AddSite(fmt.Sprintf("%s-%c", sp.name, 'a'+j), cfg)
			if err != nil {
				t.Fatal(err)
			}
			p.sites[j] = s
		}
		var closeA, closeB func()
		p.a, closeA = e.node(t, p.sites[0].Hosts[0], Config{}, false)
		t.Cleanup(closeA)
		p.b, closeB = e.node(t, p.sites[1].Hosts[0], Config{}, false)
		t.Cleanup(closeB)
		nodes = append(nodes, p.a, p.b)
		pairs = append(pairs, p)
	}
	e.waitRegistered(t, nodes...)

	ctx, cancel := context.WithTimeout(context.Background(), dur+120*time.Second)
	defer cancel()
	fails := make(chan SessionConnectFail, 64)
	var watchers sync.WaitGroup
	logs := make([]*pathLog, len(nodes))
	for i, n := range nodes {
		logs[i] = &pathLog{start: time.Now()}
		watchers.Go(func() { logs[i].watch(ctx, n, fails) })
	}
	stopWatchers := func() { cancel(); watchers.Wait() }
	defer stopWatchers()

	// Connect pair by pair (the birthday approach opens hundreds of
	// sockets; one at a time keeps the NATs' tables and the 2 cores
	// calm) and wait for the direct birthday path: a session may start
	// on the relay and move once the birthday approach gets through.
	for _, p := range pairs {
		start := time.Now()
		if err := greet(ctx, p.a, p.b); err != nil {
			t.Fatalf("%s: %v; %s", p.name, err, relayState(p.a, p.b))
		}
		took := time.Since(start)
		if err := waitPath(ctx, p.a, p.b, PathDirect, 25*time.Second); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		sa, _ := p.a.GetP2PSessionState(p.b.PeerID())
		sb, _ := p.b.GetP2PSessionState(p.a.PeerID())
		if !sa.Traversal.Birthday && !sb.Traversal.Birthday {
			t.Errorf("%s: direct without the birthday approach: a %+v, b %+v", p.name, sa.Traversal, sb.Traversal)
		}
		if sa.Traversal.Sockets == 0 && sb.Traversal.Sockets == 0 {
			t.Errorf("%s: no extra socket opened: a %+v, b %+v", p.name, sa.Traversal, sb.Traversal)
		}
		t.Logf("%s: first message after %v, direct after %v; a (symmetric) %v → %v, traversal %+v; b %v → %v, traversal %+v",
			p.name, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond),
			p.sites[0].PublicIP, sa.RemoteAddr, sa.Traversal, p.sites[1].PublicIP, sb.RemoteAddr, sb.Traversal)
	}
	if t.Failed() {
		t.FailNow()
	}
	// Path changes and repunches while connecting (relay, then direct),
	// not counted below.
	settled := make([]NodeStats, len(nodes))
	for i, n := range nodes {
		settled[i] = n.Stats()
	}

	stop := time.Now().Add(dur)
	var sent atomic.Int64
	var senders, receivers sync.WaitGroup
	defer func() { cancel(); senders.Wait(); receivers.Wait() }() // a failure midway stops the streams
	type stream struct {
		pair     *pair
		from, to *Node
		count    int
		err      error
		rx       *streamReceiver
	}
	var streams []*stream
	for _, p := range pairs {
		for _, ends := range [][2]*Node{{p.a, p.b}, {p.b, p.a}} {
			s := &stream{pair: p, from: ends[0], to: ends[1], rx: newStreamReceiver()}
			streams = append(streams, s)
			receivers.Go(func() { s.rx.run(ctx, s.to) })
			senders.Go(func() { s.count, s.err = streamUntil(ctx, s.from, s.to.PeerID(), stop, &sent) })
		}
	}
	flushes := 0
	for _, at := range []time.Duration{dur / 3, 2 * dur / 3} {
		time.Sleep(time.Until(stop.Add(-dur + at)))
		var errs []error
		for _, p := range pairs {
			for _, s := range p.sites {
				errs = append(errs, s.FlushConntrack())
			}
		}
		if err := errors.Join(errs...); err != nil {
			t.Errorf("conntrack -F: %v", err)
		}
		flushes++
		t.Logf("%v: %d messages sent; every NAT's conntrack flushed", at, sent.Load())
	}
	senders.Wait()
	for _, s := range streams {
		s.rx.expect(s.count)
	}
	done := make(chan struct{})
	go func() { receivers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
	}

	const maxGap = 10 * time.Second // the dead-peer interval
	var total int
	for _, s := range streams {
		p := s.pair
		got, gap, err := s.rx.result()
		if s.err != nil {
			t.Errorf("%s: sending: %v", p.name, s.err)
		}
		if err == nil && got != s.count {
			err = fmt.Errorf("%d of %d messages arrived", got, s.count)
		}
		if err != nil {
			t.Errorf("%s stream to %v: %v; %s", p.name, s.to.PeerID(), err, relayState(p.a, p.b))
		}
		if extra, _ := receiveNoMore(ctx, s.to); extra {
			t.Errorf("%s: a message after the stream's last", p.name)
		}
		if gap > maxGap {
			t.Errorf("%s: the stream to %v stalled for %v, want under %v", p.name, s.to.PeerID(), gap, maxGap)
		}
		total += got
		t.Logf("%s stream to %v: %d messages, longest gap %v", p.name, s.to.PeerID(), got, gap.Round(time.Millisecond))
	}
	select {
	case f := <-fails:
		t.Errorf("a session failed: %+v", f)
	default:
	}
	for i, p := range pairs {
		// The flushes broke every pair's path (the session moved), and
		// the birthday approach took each back to a direct path.
		if err := waitPath(ctx, p.a, p.b, PathDirect, 25*time.Second); err != nil {
			t.Errorf("%s after the flushes: %v", p.name, err)
		}
		sa0, sb0 := settled[2*i], settled[2*i+1]
		changes := p.a.Stats().PathChanges - sa0.PathChanges + p.b.Stats().PathChanges - sb0.PathChanges
		repunches := p.a.Stats().Repunches - sa0.Repunches + p.b.Stats().Repunches - sb0.Repunches
		if changes == 0 || repunches < uint64(flushes) {
			t.Errorf("%s: %d path changes and %d repunches across %d conntrack flushes: the path never broke", p.name, changes, repunches, flushes)
		}
		sa, _ := p.a.GetP2PSessionState(p.b.PeerID())
		sb, _ := p.b.GetP2PSessionState(p.a.PeerID())
		st := [2]NodeStats{p.a.Stats(), p.b.Stats()}
		for j, s := range st {
			if s.EventsDropped != 0 {
				t.Errorf("%s: node %c dropped %d events", p.name, 'a'+j, s.EventsDropped)
			}
		}
		t.Logf("%s after: a on %v %v (traversal %+v), b on %v %v; path changes a %d %v, b %d %v; repunches %d+%d; relay allocations %d+%d",
			p.name, sa.Path, sa.RemoteAddr, sa.Traversal, sb.Path, sb.RemoteAddr,
			st[0].PathChanges, logs[2*i], st[1].PathChanges, logs[2*i+1], st[0].Repunches, st[1].Repunches, st[0].RelayAllocations, st[1].RelayAllocations)
	}
	t.Logf("%d of %d reliable messages sent received in order across %d conntrack flushes", total, sent.Load(), flushes)
}
