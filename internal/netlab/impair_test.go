package netlab

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestLoss sends 2000 datagrams each way through a site with 200‰ loss on
// its uplink and checks the delivered fraction, then turns loss off.
func TestLoss(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab(t, "loss")
	srv := openServer(t, l)
	s := addSite(t, l, "lossy", SiteConfig{NAT: NATPortRestricted, LossPermille: 200})
	c := udp(t, s.Hosts[0], ":0")
	m := mapped(t, c, srv.A1, srv.a1) // retries through the loss

	const n = 2000
	up := countDelivered(t, c, srv.A1, srv.a1, n)
	down := countDelivered(t, srv.a1, m, c, n)
	t.Logf("200‰ loss: delivered up %d/%d, down %d/%d", up, n, down, n)
	// Binomial(2000, 0.8): mean 1600, sd 17.9; the band is over 5 sd wide
	// each side.
	for dir, got := range map[string]int{"up": up, "down": down} {
		if got < 1500 || got > 1700 {
			t.Errorf("%s: %d of %d delivered with 200‰ loss, want 1500-1700", dir, got, n)
		}
	}

	// 1000‰: everything (numgen's values stop at 999, so it is a rule of
	// its own).
	if err := s.SetLoss(1000); err != nil {
		t.Fatal(err)
	}
	if up, down := countDelivered(t, c, srv.A1, srv.a1, 50), countDelivered(t, srv.a1, m, c, 50); up != 0 || down != 0 {
		t.Errorf("1000‰ loss: delivered up %d/50, down %d/50, want none", up, down)
	}

	if err := s.SetLoss(0); err != nil {
		t.Fatal(err)
	}
	up = countDelivered(t, c, srv.A1, srv.a1, 200)
	down = countDelivered(t, srv.a1, m, c, 200)
	if up < 198 || down < 198 {
		t.Errorf("loss off: delivered up %d/200, down %d/200, want all", up, down)
	}
}

// countDelivered sends n numbered datagrams from c to dst, paced, while a
// goroutine counts those arriving at rcv; it waits until arrivals stop.
func countDelivered(t *testing.T, c *net.UDPConn, dst netip.AddrPort, rcv *net.UDPConn, n int) int {
	t.Helper()
	tag := []byte("count:" + newNonce())
	var got atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			select {
			case <-stop:
				return
			default:
			}
			rcv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			k, _, err := rcv.ReadFromUDPAddrPort(buf)
			if err == nil && bytes.HasPrefix(buf[:k], tag) {
				got.Add(1)
			}
		}
	})
	msg := append(tag, make([]byte, 32)...)
	for i := range n {
		if _, err := c.WriteToUDPAddrPort(msg, dst); err != nil {
			t.Errorf("send: %v", err)
			break
		}
		if i%20 == 19 {
			time.Sleep(time.Millisecond) // stay far below the receive buffer
		}
	}
	// Wait until nothing more arrives (bounded: 5 s).
	for prev, i := int64(-1), 0; i < 25; i++ {
		time.Sleep(200 * time.Millisecond)
		cur := got.Load()
		if cur == prev {
			break
		}
		prev = cur
	}
	close(stop)
	wg.Wait()
	return int(got.Load())
}

// TestBlockUDP: with BlockUDP the site has no UDP to the public side, TCP
// still connects; unblocking restores UDP.
func TestBlockUDP(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab(t, "blockudp")
	srv := openServer(t, l)
	ln, err := l.Server().Listen("tcp", serverAddr1.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() { // echo server
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				io.Copy(conn, conn)
			})
		}
	})

	for i, cfg := range []SiteConfig{{NAT: NATPortRestricted}, {NAT: NATNone}, {NAT: NATFullCone, Outer: NATSymmetric}} {
		s := addSite(t, l, fmt.Sprintf("s%d", i), cfg)
		h := s.Hosts[0]
		c := udp(t, h, ":0")
		m := mapped(t, c, srv.A1, srv.a1)
		if err := s.BlockUDP(true); err != nil {
			t.Fatal(err)
		}
		if reaches(t, c, srv.A1, srv.a1) {
			t.Errorf("%s: UDP to the server passes while blocked", s.Name)
		}
		if reaches(t, srv.a1, m, c) {
			t.Errorf("%s: UDP from the server passes while blocked", s.Name)
		}
		conn, err := h.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("%s: TCP while UDP is blocked: %v", s.Name, err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
			t.Errorf("%s: TCP echo while UDP is blocked: %q %v", s.Name, buf, err)
		}
		conn.Close()
		if err := s.BlockUDP(false); err != nil {
			t.Fatal(err)
		}
		if !reaches(t, c, srv.A1, srv.a1) {
			t.Errorf("%s: UDP to the server still blocked after BlockUDP(false)", s.Name)
		}
	}
}

// TestBlockAddr: a site blocking another site's public address can reach
// neither it nor be reached by it, while the server stays reachable;
// unblocking restores the path.
func TestBlockAddr(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab(t, "blockaddr")
	srv := openServer(t, l)
	a := addSite(t, l, "a", SiteConfig{NAT: NATPortRestricted})
	b := addSite(t, l, "b", SiteConfig{NAT: NATNone})
	ca := udp(t, a.Hosts[0], ":0")
	cb := udp(t, b.Hosts[0], b.Hosts[0].IP.String()+":0")
	B := localAP(cb)
	ma := mapped(t, ca, B, cb) // a -> b opens a's mapping towards b
	if !reaches(t, cb, ma, ca) {
		t.Fatal("b's reply to a lost before blocking")
	}

	for _, blocker := range []*Site{a, b} {
		other := map[*Site]*Site{a: b, b: a}[blocker]
		if err := blocker.BlockAddr(other.PublicIP, true); err != nil {
			t.Fatal(err)
		}
		if reaches(t, ca, B, cb) || reaches(t, cb, ma, ca) {
			t.Errorf("%s blocks %v: traffic between a and b still passes", blocker.Name, other.PublicIP)
		}
		for _, s := range []*Site{a, b} {
			c := map[*Site]*net.UDPConn{a: ca, b: cb}[s]
			m := mapped(t, c, srv.A1, srv.a1)
			if !reaches(t, srv.a1, m, c) {
				t.Errorf("%s blocks %v: server <-> %s lost", blocker.Name, other.PublicIP, s.Name)
			}
		}
		if err := blocker.BlockAddr(other.PublicIP, false); err != nil {
			t.Fatal(err)
		}
		if !reaches(t, ca, B, cb) || !reaches(t, cb, ma, ca) {
			t.Errorf("%s unblocked %v: traffic between a and b still blocked", blocker.Name, other.PublicIP)
		}
	}
}
