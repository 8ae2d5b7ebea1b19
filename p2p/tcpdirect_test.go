package p2p

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/nat"
)

// tcpListener opens n's direct TCP listener and returns its address.
func tcpListener(t *testing.T, n *Node) netip.AddrPort {
	t.Helper()
	ap, err := n.trav.direct.listen()
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// allowTCPFrom lets peer make links with n, as an introduction does.
func allowTCPFrom(n *Node, peer PeerID) {
	onOwner(n, func() {
		pp := n.trav.peerOf(peer)
		pp.tcp = &tcpPeer{dialing: map[netip.AddrPort]bool{}}
		n.trav.publish(peer, pp)
	})
}

// onOwner runs f on n's path owner goroutine and waits for it.
func onOwner(n *Node, f func()) {
	n.paths.Must(f)
	n.paths.Sync()
}

// tcpLinks are n's TCP links now.
func tcpLinks(n *Node) []*tcpLink {
	var out []*tcpLink
	onOwner(n, func() {
		for l := range n.trav.direct.links {
			out = append(out, l)
		}
	})
	return out
}

func tcpFrame(b []byte) []byte {
	return append([]byte{tcpFrameMarker, byte(len(b) >> 8), byte(len(b))}, b...)
}

func probeFrom(t *testing.T, n *Node, from PeerID, ack bool, txid [12]byte) []byte {
	t.Helper()
	key, err := n.trav.probeKey(from)
	if err != nil {
		t.Fatal(err)
	}
	p := nat.Probe{Ack: ack, Sender: from, TxID: txid}
	return p.Append(nil, &key)
}

func dialTCP(t *testing.T, to netip.AddrPort) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp4", to.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func tcpNode(t *testing.T) *Node {
	t.Helper()
	srv := startRendezvous(t)
	return loopbackNode(t, "127.0.0.1", Config{Rendezvous: srv.Addr().String()})
}

// TestTCPLinkRefusesStrangers: a connection to the direct TCP listener
// that does not prove an introduced peer within tcpHelloTimeout is closed
// and counted: another protocol, a bad frame, a probe from a peer nobody
// introduced, a forged probe, data before any probe, silence. None
// becomes a link.
func TestTCPLinkRefusesStrangers(t *testing.T) {
	leakcheck.Check(t)
	a := tcpNode(t)
	ln := tcpListener(t, a)
	stranger, _ := NewIdentity()
	known, _ := NewIdentity()
	allowTCPFrom(a, known.PeerID())
	forged := probeFrom(t, a, known.PeerID(), false, [12]byte{1})
	forged[len(forged)-1] ^= 1
	cases := map[string][]byte{
		"http":         []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"oversized":    {tcpFrameMarker, 0xff, 0xff},
		"empty":        {tcpFrameMarker, 0, 0},
		"unintroduced": tcpFrame(probeFrom(t, a, stranger.PeerID(), false, [12]byte{1})),
		"forged":       tcpFrame(forged),
		"data first":   tcpFrame(append([]byte{0x84}, make([]byte, 40)...)),
		"silent":       nil,
	}
	var wg sync.WaitGroup
	for name, send := range cases {
		c := dialTCP(t, ln)
		wg.Go(func() {
			if _, err := c.Write(send); err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			c.SetReadDeadline(time.Now().Add(tcpHelloTimeout + 3*time.Second))
			_, err := io.Copy(io.Discard, c)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%s: the node kept the connection open", name)
			}
		})
	}
	wg.Wait()
	waitFor(t, 2*time.Second, "links gone", func() bool { return len(tcpLinks(a)) == 0 })
	st := a.Stats()
	if st.TCPRefused != uint64(len(cases)) || st.TCPLinks != 0 {
		t.Errorf("refused %d (want %d), links %d", st.TCPRefused, len(cases), st.TCPLinks)
	}
}

// TestTCPLinkProof: a probe that checks out (as a replayed one would)
// gets an ack and our own probe, and lets the peer's packets in, but the
// link is offered to sessions only once the ack of our fresh probe comes
// back: a wrong transaction ID does not do it, the right one does.
func TestTCPLinkProof(t *testing.T) {
	leakcheck.Check(t)
	a := tcpNode(t)
	ln := tcpListener(t, a)
	b, _ := NewIdentity()
	pb := b.PeerID()
	allowTCPFrom(a, pb)
	c := dialTCP(t, ln)
	if _, err := c.Write(tcpFrame(probeFrom(t, a, pb, false, [12]byte{7}))); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	buf := make([]byte, readBufSize)
	var ours nat.Probe
	for got := 0; got < 2; got++ {
		f, err := readTCPFrame(br, buf)
		if err != nil {
			t.Fatal(err)
		}
		pr, ok := nat.ParseProbe(f)
		switch {
		case !ok || pr.Sender != a.PeerID():
			t.Fatalf("frame %x is not a's probe", f)
		case pr.Ack && pr.TxID != [12]byte{7}:
			t.Fatalf("ack of %x, want ours", pr.TxID)
		case !pr.Ack:
			ours = pr
		}
	}
	if ours == (nat.Probe{}) {
		t.Fatal("a acked but did not probe back")
	}
	if _, err := c.Write(tcpFrame(probeFrom(t, a, pb, true, [12]byte{8}))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(tcpFrame(probeFrom(t, a, pb, true, ours.TxID))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the link confirmed", func() bool { return a.Stats().TCPLinks == 1 })
	// The stale ack came first: had it confirmed the link, the right one
	// would have found it confirmed and the count would still be 1. So
	// check a stale ack alone, on a second connection.
	// A probe after it is answered only once the stale ack was handled
	// (one reader, in order).
	c2 := dialTCP(t, ln)
	c2.Write(tcpFrame(probeFrom(t, a, pb, false, [12]byte{9})))
	c2.Write(tcpFrame(probeFrom(t, a, pb, true, [12]byte{10})))
	c2.Write(tcpFrame(probeFrom(t, a, pb, false, [12]byte{11})))
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	br2 := bufio.NewReader(c2)
	for {
		f, err := readTCPFrame(br2, buf)
		if err != nil {
			t.Fatal(err)
		}
		if pr, _ := nat.ParseProbe(f); pr.Ack && pr.TxID == [12]byte{11} {
			break
		}
	}
	if n := a.Stats().TCPLinks; n != 1 {
		t.Errorf("links %d after a stale ack, want 1", n)
	}
	if a.Stats().TCPRefused != 0 {
		t.Errorf("refused %d, want 0", a.Stats().TCPRefused)
	}
}

// TestTCPLinkBacklog: a peer that stops reading fills the kernel's
// buffers, then the link's queue; past tcpQueueBytes datagrams are dropped
// and counted, never queued without bound, and oversized ones are refused.
func TestTCPLinkBacklog(t *testing.T) {
	leakcheck.Check(t)
	a := tcpNode(t)
	ln := tcpListener(t, a)
	pb := mustIdentity(t).PeerID()
	allowTCPFrom(a, pb)
	c := dialTCP(t, ln) // never read
	if _, err := c.Write(tcpFrame(probeFrom(t, a, pb, false, [12]byte{1}))); err != nil {
		t.Fatal(err)
	}
	var l *tcpLink
	waitFor(t, 5*time.Second, "the link hears the peer", func() bool {
		for _, k := range tcpLinks(a) {
			l = k
		}
		return l != nil && l.isHeard()
	})
	if err := l.write(make([]byte, readBufSize+1)); !errors.Is(err, errTCPTooLarge) {
		t.Errorf("oversized datagram: %v", err)
	}
	const total = 20000 // 24 MB: more than the kernel buffers on both sides hold
	dropped := 0
	for range total {
		if errors.Is(l.write(make([]byte, 1200)), errTCPBacklog) {
			dropped++
		}
		l.mu.Lock()
		q := l.queued
		l.mu.Unlock()
		if q > tcpQueueBytes {
			t.Fatalf("queue holds %d bytes, bound %d", q, tcpQueueBytes)
		}
	}
	if dropped == 0 || a.Stats().TCPDropped != uint64(dropped) {
		t.Errorf("dropped %d, counted %d", dropped, a.Stats().TCPDropped)
	}
	t.Logf("%d of %d datagrams dropped", dropped, total)
}

func mustIdentity(t *testing.T) *Identity {
	t.Helper()
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestTCPAcceptFloodBounded: connections accepted while the path owner is
// busy wait for it at most maxTCPLinks at a time; the rest are refused at
// once, so a stranger flooding the listener cannot fill the owner's queue
// (and make it drop sessions' route events) nor hold more connections.
func TestTCPAcceptFloodBounded(t *testing.T) {
	leakcheck.Check(t)
	n := tcpNode(t)
	ln := tcpListener(t, n)
	gate, busy := make(chan struct{}), make(chan struct{})
	n.paths.Must(func() { close(busy); <-gate })
	<-busy
	defer func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}()
	const total = 3 * maxTCPLinks
	for range total {
		dialTCP(t, ln)
	}
	waitFor(t, 5*time.Second, "the surplus refused while the owner is busy", func() bool {
		return n.Stats().TCPRefused >= total-maxTCPLinks
	})
	if q := n.trav.direct.accepting.Load(); q > maxTCPLinks {
		t.Fatalf("%d connections wait for the owner, bound %d", q, maxTCPLinks)
	}
	close(gate)
	waitFor(t, 5*time.Second, "the owner took the rest", func() bool { return n.trav.direct.accepting.Load() == 0 })
	if got := len(tcpLinks(n)); got > maxTCPLinks {
		t.Fatalf("%d links, bound %d", got, maxTCPLinks)
	}
	if d := n.Stats().PathEventsDropped; d != 0 {
		t.Fatalf("%d path events dropped", d)
	}
}
