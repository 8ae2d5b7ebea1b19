package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/rendezvous"
)

// stressPathKind is what TestStressPaths puts a pair on.
type stressPathKind int

const (
	kindRebind stressPathKind = iota // direct UDP through a rebinding NAT (rebindProxy)
	kindRelay                        // through the server's TURN relay
	kindTCP                          // direct TCP: UDP blocked both ways
	kindDirect                       // plain direct UDP found through the server
	numStressPathKinds
)

func (k stressPathKind) String() string {
	return [...]string{"rebind", "relay", "tcp", "direct"}[k]
}

// want is the path both sessions of a pair of kind k stay on.
func (k stressPathKind) want() PathKind {
	return [...]PathKind{PathDirect, PathRelay, PathTCP, PathDirect}[k]
}

// stressPathsSize is how many pairs of each kind TestStressPaths runs and
// for how long: 2 of each (16 sessions) for 5 s by default; with
// GAMEWIRE_LONG=1, 25 pairs (50 sessions) for a minute.
func stressPathsSize() ([numStressPathKinds]int, time.Duration) {
	if os.Getenv("GAMEWIRE_LONG") != "" {
		return [numStressPathKinds]int{7, 6, 6, 6}, time.Minute
	}
	return [numStressPathKinds]int{2, 2, 2, 2}, 5 * time.Second
}

// TestStressPaths runs pairs of nodes side by side on every path kind a
// loopback machine can offer, each pair streaming reliable messages both
// ways (see stressPathsSize):
//
//   - rebind: direct UDP through a userspace NAT (rebindProxy) that moves
//     its mapping to a fresh source port every 1-2 s, so the node behind
//     it hears its peer from a new address, its packets to the old one go
//     nowhere, and it must follow (a PathChanged each time);
//   - relay: both nodes reach only the server, so the session goes through
//     its embedded TURN relay;
//   - tcp: both nodes' UDP is dropped outright: they register over TCP and
//     the session runs on a direct TCP link;
//   - direct: plain UDP between two nodes the server introduced.
//
// The server (rendezvous, TURN relay and the TCP listener) restarts a
// third of the way in. Every message arrives exactly once and in order,
// no stream stalls past a bound, no session fails, every pair stays on its
// kind of path, the rebinding pairs change paths at least once and at most
// once per rebinding (and one spare), direct and TCP pairs never, relayed
// pairs at most twice a side (the restart's new allocations), the relayed
// and TCP-only nodes are registered with the restarted server, no event is
// dropped, and nothing is left running after Close.
func TestStressPaths(t *testing.T) {
	leakcheck.Check(t)
	sizes, dur := stressPathsSize()
	srv := startRestartable(t)

	type pair struct {
		kind  stressPathKind
		a, b  *Node // a opens the session
		proxy *rebindProxy
	}
	var pairs []*pair
	var nodes, registered []*Node
	for k := range numStressPathKinds {
		for i := range sizes[k] {
			ip := func(j int) string {
				return netip.AddrFrom4([4]byte{127, 0, byte(20 + k), byte(1 + 2*i + j)}).String()
			}
			p := &pair{kind: k}
			switch k {
			case kindRebind:
				// b sits behind the rebinding NAT; a knows it only by the
				// NAT's address, b learns a from a's packets.
				p.b = loopbackNode(t, ip(1), Config{})
				p.proxy = newRebindProxy(t, netip.AddrFrom4([4]byte{127, 0, 29, byte(1 + i)}), addrPortOf(p.b.LocalAddr()))
				p.a = loopbackNode(t, ip(0), Config{})
				p.a.AddPeerAddr(p.b.PeerID(), p.proxy.front())
			case kindRelay:
				p.a, p.b = relayedNodeAt(t, srv, ip(0)), relayedNodeAt(t, srv, ip(1))
			case kindTCP:
				p.a, p.b = srv.tcpOnlyNode(t, ip(0)), srv.tcpOnlyNode(t, ip(1))
			case kindDirect:
				p.a = loopbackNode(t, ip(0), Config{Rendezvous: srv.pin()})
				p.b = loopbackNode(t, ip(1), Config{Rendezvous: srv.pin()})
			}
			if k != kindRebind {
				registered = append(registered, p.a, p.b)
			}
			nodes = append(nodes, p.a, p.b)
			pairs = append(pairs, p)
		}
	}
	waitRegistered(t, srv.srv, registered...) // the TCP-only nodes register over TCP after 1.5 s

	ctx, cancel := context.WithTimeout(context.Background(), dur+90*time.Second)
	fails := make(chan SessionConnectFail, 64)
	var watchers sync.WaitGroup
	defer func() { cancel(); watchers.Wait() }() // the progress logger too
	moves := make([]*pathLog, len(nodes))
	for i, n := range nodes {
		moves[i] = &pathLog{start: time.Now()}
		watchers.Go(func() { moves[i].watch(ctx, n, fails) })
	}

	// Each pair connects, a first, and settles on its kind of path.
	start := time.Now()
	var connect sync.WaitGroup
	connectErrs := make(chan error, len(pairs))
	for i, p := range pairs {
		connect.Go(func() {
			if err := greet(ctx, p.a, p.b); err != nil {
				connectErrs <- fmt.Errorf("pair %d (%v): %w; %s", i, p.kind, err, relayState(p.a, p.b))
				return
			}
			if err := waitPath(ctx, p.a, p.b, p.kind.want(), 15*time.Second); err != nil {
				connectErrs <- fmt.Errorf("pair %d (%v): %w", i, p.kind, err)
			}
		})
	}
	connect.Wait()
	close(connectErrs)
	for err := range connectErrs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	before := make([]uint64, len(nodes)) // path changes while settling
	for i, n := range nodes {
		before[i] = n.Stats().PathChanges
	}
	t.Logf("%d pairs (%v) connected on their paths in %v; streaming for %v, rebinding every 1-2 s, the server restarts at %v",
		len(pairs), kindCounts(sizes), time.Since(start).Round(time.Millisecond), dur, dur/3)

	// Streams both ways on every pair, received as they go.
	stop := time.Now().Add(dur)
	var sent atomic.Int64
	var senders, receivers sync.WaitGroup
	defer func() { cancel(); senders.Wait(); receivers.Wait() }() // a failure midway stops the streams
	type stream struct {
		from, to *Node
		pair     int
		count    int
		err      error
		rx       *streamReceiver
	}
	var streams []*stream
	for i, p := range pairs {
		for _, ends := range [][2]*Node{{p.a, p.b}, {p.b, p.a}} {
			s := &stream{from: ends[0], to: ends[1], pair: i, rx: newStreamReceiver()}
			streams = append(streams, s)
			receivers.Go(func() { s.rx.run(ctx, s.to) })
			senders.Go(func() { s.count, s.err = streamUntil(ctx, s.from, s.to.PeerID(), stop, &sent) })
		}
	}
	var rebinding sync.WaitGroup
	defer func() { cancel(); rebinding.Wait() }()
	for _, p := range pairs {
		if p.proxy != nil {
			rebinding.Go(func() { p.proxy.rebindEvery(ctx, time.Second, 2*time.Second, stop) })
		}
	}
	progress := func() {
		rebinds, changes := 0, uint64(0)
		for _, p := range pairs {
			if p.proxy != nil {
				rebinds += p.proxy.rebinds()
			}
		}
		for _, n := range nodes {
			changes += n.Stats().PathChanges
		}
		t.Logf("%v: %d messages sent, %d rebindings, %d path changes so far", time.Since(start).Round(time.Second), sent.Load(), rebinds, changes)
	}
	watchers.Go(func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				progress()
			case <-ctx.Done():
				return
			}
		}
	})
	time.Sleep(dur / 3)
	if err := srv.restart(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	senders.Wait()
	rebinding.Wait() // the last rebinding is before stop

	// Everything sent arrives, exactly once and in order.
	for _, s := range streams {
		s.rx.expect(s.count)
	}
	done := make(chan struct{})
	go func() { receivers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
	var total int
	var worst time.Duration
	gaps := make([]time.Duration, numStressPathKinds)
	for _, s := range streams {
		p := pairs[s.pair]
		got, gap, err := s.rx.result()
		if s.err != nil {
			t.Errorf("pair %d (%v): sending: %v", s.pair, p.kind, s.err)
		}
		if err == nil && got != s.count {
			err = fmt.Errorf("%d of %d messages arrived", got, s.count)
		}
		if err != nil {
			t.Errorf("pair %d (%v) stream to %v: %v; %s", s.pair, p.kind, s.to.PeerID(), err, relayState(p.a, p.b))
		}
		if extra, cerr := receiveNoMore(ctx, s.to); cerr != nil {
			t.Errorf("pair %d (%v): %v", s.pair, p.kind, cerr)
		} else if extra {
			t.Errorf("pair %d (%v): a message after the stream's last", s.pair, p.kind)
		}
		total += got
		gaps[p.kind] = max(gaps[p.kind], gap)
		worst = max(worst, gap)
	}
	// A stream may pause while its path heals (a rebinding: the probe
	// timeout and ackOverdue; the restart: a new relay allocation), but
	// well inside the session's dead-peer interval.
	const maxGap = 8 * time.Second
	if worst > maxGap {
		t.Errorf("a stream stalled for %v (longest gap by kind %v), want under %v", worst, fmtGaps(gaps), maxGap)
	}
	select {
	case f := <-fails:
		t.Errorf("a session failed: %+v", f)
	default:
	}

	// Paths: every pair on its kind still; path changes where they were
	// forced and hardly anywhere else; no event dropped.
	var rebinds int
	kindChanges := make([]int, numStressPathKinds)
	for i, p := range pairs {
		if err := waitPath(ctx, p.a, p.b, p.kind.want(), 5*time.Second); err != nil {
			t.Errorf("pair %d (%v) after the run: %v", i, p.kind, err)
		}
		ia, ib := 2*i, 2*i+1
		changes := int(p.a.Stats().PathChanges - before[ia] + p.b.Stats().PathChanges - before[ib])
		kindChanges[p.kind] += changes
		seen := fmt.Sprintf("PathChanged a %v, b %v", moves[ia], moves[ib])
		if p.proxy == nil {
			// The restart moves a relayed session to the new
			// allocations: two changes on each side (seen: the peer's
			// new relayed address, then another).
			if limit := map[stressPathKind]int{kindRelay: 4}[p.kind]; changes > limit {
				t.Errorf("pair %d (%v): %d path changes, want at most %d; %s", i, p.kind, changes, limit, seen)
			}
			continue
		}
		r := p.proxy.rebinds()
		rebinds += r
		// b follows a to each new mapping once (if it had something
		// unacknowledged out then); a never sees b move.
		switch {
		case r == 0:
			t.Errorf("pair %d: the proxy never rebound", i)
		case changes == 0:
			t.Errorf("pair %d: %d rebindings and no path change: the session never moved", i, r)
		case changes > r+1:
			t.Errorf("pair %d: %d path changes for %d rebindings: the session flapped; %s", i, changes, r, seen)
		}
	}
	// The relayed and TCP-only nodes noticed the restart (dead
	// allocations, a closed connection) and registered again. The direct
	// ones refresh their registration every 20 s (TTL/3) and until then
	// do not know the restarted server forgot them: only logged.
	var noticed []*Node
	known, direct := 0, 0
	for _, p := range pairs {
		switch p.kind {
		case kindRelay, kindTCP:
			noticed = append(noticed, p.a, p.b)
		case kindDirect:
			for _, n := range []*Node{p.a, p.b} {
				direct++
				if srv.srv.IsRegistered(rendezvous.Key(n.PeerID())) {
					known++
				}
			}
		}
	}
	waitRegistered(t, srv.srv, noticed...)
	for _, n := range nodes {
		if d := n.Stats().EventsDropped; d != 0 {
			t.Errorf("node %v dropped %d events", n.PeerID(), d)
		}
	}
	cancel()
	watchers.Wait()
	progress()
	t.Logf("%d of %d reliable messages sent received in order; longest gap by kind: %v; %d rebindings; path changes by kind: %v; restart %v before the end, %d of %d direct nodes registered with the restarted server by then",
		total, sent.Load(), fmtGaps(gaps), rebinds, fmtCounts(kindChanges), time.Since(restarted).Round(time.Millisecond), known, direct)
	for _, n := range nodes {
		n.Close()
	}
}

// pathLog accepts every session request, passes failures on, and keeps
// the PathChanged events it sees, and when (after start).
type pathLog struct {
	start time.Time

	mu      sync.Mutex
	changes []PathChanged
	at      []time.Duration
}

func (l *pathLog) watch(ctx context.Context, n *Node, fails chan<- SessionConnectFail) {
	watchEvents(ctx, n, fails, func(e PathChanged) {
		l.mu.Lock()
		l.changes = append(l.changes, e)
		l.at = append(l.at, time.Since(l.start))
		l.mu.Unlock()
	})
}

func (l *pathLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for i, c := range l.changes {
		parts = append(parts, fmt.Sprintf("%v %v at %v", c.Path, c.Remote, l.at[i].Round(time.Millisecond)))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func kindCounts(sizes [numStressPathKinds]int) string {
	var parts []string
	for k, n := range sizes {
		parts = append(parts, fmt.Sprintf("%d %v", n, stressPathKind(k)))
	}
	return strings.Join(parts, ", ")
}

func fmtCounts(counts []int) string {
	var parts []string
	for k, c := range counts {
		parts = append(parts, fmt.Sprintf("%v %d", stressPathKind(k), c))
	}
	return strings.Join(parts, ", ")
}

func fmtGaps(gaps []time.Duration) string {
	var parts []string
	for k, g := range gaps {
		parts = append(parts, fmt.Sprintf("%v %v", stressPathKind(k), g.Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

// greet opens a's session with b and has b answer: a message each way on
// channel 0.
func greet(ctx context.Context, a, b *Node) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := a.SendP2PPacket(b.PeerID(), []byte("hello"), SendReliable, 0); err != nil {
		return err
	}
	if _, err := b.Receive(ctx, 0); err != nil {
		return fmt.Errorf("no hello from a: %w", err)
	}
	if err := b.SendP2PPacket(a.PeerID(), []byte("hello"), SendReliable, 0); err != nil {
		return err
	}
	if _, err := a.Receive(ctx, 0); err != nil {
		return fmt.Errorf("no hello back from b: %w", err)
	}
	return nil
}

// waitPath waits until both of a pair's sessions are active on path want.
func waitPath(ctx context.Context, a, b *Node, want PathKind, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		sa, _ := a.GetP2PSessionState(b.PeerID())
		sb, _ := b.GetP2PSessionState(a.PeerID())
		if sa.Path == want && sb.Path == want && sa.ConnectionActive && sb.ConnectionActive {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not both active on %v after %v: %s", want, timeout, relayState(a, b))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// streamReceiver takes a stream streamUntil sends (numbered messages on
// channel 2) as it arrives, checking the order, and measures the longest
// silence between two messages.
type streamReceiver struct {
	want chan int // the count, once the sender is done

	mu     sync.Mutex
	got    int
	maxGap time.Duration
	err    error
}

func newStreamReceiver() *streamReceiver { return &streamReceiver{want: make(chan int, 1)} }

func (r *streamReceiver) expect(count int) { r.want <- count }

// run receives until the expected count arrived, a message is out of
// order, or ctx ends.
func (r *streamReceiver) run(ctx context.Context, n *Node) {
	want := -1
	var last time.Time
	for {
		if want < 0 {
			select {
			case want = <-r.want:
			default:
			}
		}
		r.mu.Lock()
		got := r.got
		r.mu.Unlock()
		if want >= 0 && got >= want {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		p, err := n.Receive(rctx, 2)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				r.fail(fmt.Errorf("message %d never arrived: %w", got, ctx.Err()))
				return
			}
			continue // look at want again
		}
		now := time.Now()
		seq := binary.BigEndian.Uint32(p.Data)
		r.mu.Lock()
		if !last.IsZero() {
			r.maxGap = max(r.maxGap, now.Sub(last))
		}
		last = now
		if seq != uint32(r.got) {
			r.err = fmt.Errorf("message %d: got %d (lost or duplicated)", r.got, seq)
			r.mu.Unlock()
			return
		}
		r.got++
		r.mu.Unlock()
	}
}

func (r *streamReceiver) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

func (r *streamReceiver) result() (got int, maxGap time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got, r.maxGap, r.err
}

// receiveNoMore reports whether anything more arrives on channel 2 within
// 100 ms.
func receiveNoMore(ctx context.Context, n *Node) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	extra, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err := n.Receive(extra, 2)
	return err == nil, nil
}

// tcpOnlyNode is a node at ip on a network that drops UDP (every socket it
// opens, the server's port too): it registers over TCP and takes direct
// TCP links. Relay is forbidden, so only a TCP link carries its sessions.
func (s *restartableRendezvous) tcpOnlyNode(t *testing.T, ip string) *Node {
	t.Helper()
	var mu sync.Mutex
	var socks []net.PacketConn
	listen := func(network, address string) (net.PacketConn, error) {
		pc, err := net.ListenPacket(network, address)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		socks = append(socks, pc)
		mu.Unlock()
		return droppingConn{pc}, nil
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, pc := range socks {
			pc.Close()
		}
	})
	pc, err := listen("udp4", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(Config{Rendezvous: s.pin(), PacketConn: pc, ListenPacket: listen, DisableRelay: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// droppingConn is a UDP socket on a network that drops every datagram,
// both ways.
type droppingConn struct{ net.PacketConn }

func (c droppingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		if _, _, err := c.PacketConn.ReadFrom(b); err != nil {
			return 0, nil, err
		}
	}
}

func (c droppingConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }

// rebindProxy is a userspace NAT in front of one node (the inside): what
// arrives at its front socket from the outside is forwarded to the inside
// node from its back socket, and what the inside node sends to the back
// socket goes out of the front one to whoever last sent there. Rebinding
// replaces the back socket with one on a fresh port and closes the old one,
// as a NAT that lost its mapping and made a new one: the inside node hears
// its peer from a new address, and what it sends to the old one is lost.
type rebindProxy struct {
	ip     netip.Addr
	inside netip.AddrPort
	fr     *net.UDPConn
	wg     sync.WaitGroup

	mu      sync.Mutex
	back    *net.UDPConn
	outside netip.AddrPort // the last outside sender
	count   int            // rebindings
	closed  bool
}

func newRebindProxy(t *testing.T, ip netip.Addr, inside netip.AddrPort) *rebindProxy {
	t.Helper()
	fr, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		t.Fatal(err)
	}
	p := &rebindProxy{ip: ip, inside: inside, fr: fr}
	if err := p.rebind(); err != nil {
		fr.Close()
		t.Fatal(err)
	}
	p.count = 0
	p.wg.Go(p.forwardIn)
	t.Cleanup(p.close)
	return p
}

// front is the address the outside sends to.
func (p *rebindProxy) front() netip.AddrPort { return addrPortOf(p.fr.LocalAddr()) }

func (p *rebindProxy) rebinds() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

// rebind moves the mapping to a fresh back socket.
func (p *rebindProxy) rebind() error {
	back, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.ip, 0)))
	if err != nil {
		return err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		back.Close()
		return net.ErrClosed
	}
	old := p.back
	p.back = back
	p.count++
	p.mu.Unlock()
	if old != nil {
		old.Close() // its forwardOut ends
	}
	p.wg.Go(func() { p.forwardOut(back) })
	return nil
}

// rebindEvery rebinds at random intervals in [lo, hi) until stop, or until
// ctx ends.
func (p *rebindProxy) rebindEvery(ctx context.Context, lo, hi time.Duration, stop time.Time) {
	for {
		wait := lo + time.Duration(mrand.Int64N(int64(hi-lo)))
		if time.Now().Add(wait).After(stop) {
			return
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		if err := p.rebind(); err != nil {
			return
		}
	}
}

// forwardIn passes what the outside sends on to the inside node.
func (p *rebindProxy) forwardIn() {
	buf := make([]byte, 2048)
	for {
		n, from, err := p.fr.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		p.outside = from
		back := p.back
		p.mu.Unlock()
		back.WriteToUDPAddrPort(buf[:n], p.inside) // a closed back socket: lost, as in a NAT
	}
}

// forwardOut passes what the inside node sends to back on to the outside.
func (p *rebindProxy) forwardOut(back *net.UDPConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := back.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil || from != p.inside {
			continue
		}
		p.mu.Lock()
		to := p.outside
		p.mu.Unlock()
		p.fr.WriteToUDPAddrPort(buf[:n], to)
	}
}

func (p *rebindProxy) close() {
	p.mu.Lock()
	p.closed = true
	back := p.back
	p.mu.Unlock()
	p.fr.Close()
	back.Close()
	p.wg.Wait()
}

// dualStackLoopback reports why a default (dual-stack) UDP socket cannot
// reach itself over both 127.0.0.1 and ::1 here, or nil when it can.
func dualStackLoopback() error {
	pc, err := net.ListenPacket("udp", ":0")
	if err != nil {
		return err
	}
	defer pc.Close()
	port := addrPortOf(pc.LocalAddr()).Port()
	buf := make([]byte, 16)
	for _, ip := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		if _, err := pc.WriteTo([]byte("dual"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port))); err != nil {
			return fmt.Errorf("to %v: %w", ip, err)
		}
		pc.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := pc.ReadFrom(buf); err != nil {
			return fmt.Errorf("from %v: %w", ip, err)
		}
	}
	return nil
}

// TestDualStackTraversalNoFlapping: two nodes on the default listen
// address (a dual-stack socket on every interface) on one machine, which
// know each other only by PeerID, connect through the rendezvous server:
// traversal offers them each other's every host address, IPv4 and IPv6,
// and the reflexive one the server saw. Then reliable streams run both
// ways (2 s; 10 s with GAMEWIRE_LONG=1): the sessions settle on one path
// each and stay there, at most 2 path changes in all, no event dropped,
// every message exactly once and in order. (TestDualStackNoFlapping does
// it with AddPeerAddr and a forced move to IPv6.)
func TestDualStackTraversalNoFlapping(t *testing.T) {
	if err := dualStackLoopback(); err != nil {
		t.Skipf("no dual-stack loopback here: %v", err)
	}
	leakcheck.Check(t)
	dur := 2 * time.Second
	if os.Getenv("GAMEWIRE_LONG") != "" {
		dur = 10 * time.Second
	}
	srv := startRendezvous(t)
	pin := PeerID(srv.PublicKey()).String() + "@" + srv.Addr().String()
	a, err := New(Config{Rendezvous: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(Config{Rendezvous: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitRegistered(t, srv, a, b)

	ctx, cancel := context.WithTimeout(context.Background(), dur+60*time.Second)
	defer cancel()
	fails := make(chan SessionConnectFail, 8)
	logs := []*pathLog{{start: time.Now()}, {start: time.Now()}}
	var watchers sync.WaitGroup
	for i, n := range []*Node{a, b} {
		watchers.Go(func() { logs[i].watch(ctx, n, fails) }) // b accepts a's request here
	}
	start := time.Now()
	if err := greet(ctx, a, b); err != nil {
		t.Fatalf("no session through traversal: %v; %s", err, relayState(a, b))
	}
	connected := time.Since(start)
	if err := waitPath(ctx, a, b, PathDirect, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := srv.Stats(); st.Introductions == 0 {
		t.Fatalf("connected without an introduction: %+v", st)
	}

	stop := time.Now().Add(dur)
	var sent atomic.Int64
	var wg sync.WaitGroup
	type stream struct {
		count int
		err   error
		rx    *streamReceiver
	}
	pairs := [][2]*Node{{a, b}, {b, a}}
	streams := make([]*stream, len(pairs))
	for i, ends := range pairs {
		s := &stream{rx: newStreamReceiver()}
		streams[i] = s
		wg.Go(func() { s.rx.run(ctx, ends[1]) })
		wg.Go(func() {
			s.count, s.err = streamUntil(ctx, ends[0], ends[1].PeerID(), stop, &sent)
			s.rx.expect(s.count)
		})
	}
	wg.Wait()
	for i, s := range streams {
		got, gap, err := s.rx.result()
		if s.err != nil {
			t.Errorf("stream %d: sending: %v", i, s.err)
		}
		if err == nil && got != s.count {
			err = fmt.Errorf("%d of %d messages arrived", got, s.count)
		}
		if err != nil {
			t.Errorf("stream %d: %v", i, err)
		}
		if extra, _ := receiveNoMore(ctx, pairs[i][1]); extra {
			t.Errorf("stream %d: a message after the stream's last", i)
		}
		t.Logf("stream %d: %d messages, longest gap %v", i, got, gap.Round(time.Millisecond))
	}
	select {
	case f := <-fails:
		t.Errorf("a session failed: %+v", f)
	default:
	}
	sa, sb := a.Stats(), b.Stats()
	ra, _ := a.GetP2PSessionState(b.PeerID())
	rb, _ := b.GetP2PSessionState(a.PeerID())
	changes, dropped := sa.PathChanges+sb.PathChanges, sa.EventsDropped+sb.EventsDropped
	if changes > 2 || dropped > 0 {
		t.Errorf("%d path changes in %v of traffic (PathChanged a %v, b %v), %d events dropped", changes, dur, logs[0], logs[1], dropped)
	}
	cancel()
	watchers.Wait()
	ifs, _ := nat.SystemInterfaces()
	t.Logf("host addresses %v; connected in %v through traversal (a: %+v); a sends to %v, b to %v; %d messages in %v; %d path changes (a %v, b %v), %d events dropped",
		nat.HostCandidates(ifs, 0, 8), connected.Round(time.Millisecond), ra.Traversal, ra.RemoteAddr, rb.RemoteAddr, sent.Load(), dur, changes, logs[0], logs[1], dropped)
}
