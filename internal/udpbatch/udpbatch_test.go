package udpbatch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// payload fills a datagram of the given size with bytes that depend on
// batch and index, so a datagram delivered in the wrong place is caught.
func payload(batch, index, size int) []byte {
	b := make([]byte, size)
	for k := range b {
		b[k] = byte(batch*7 + index*13 + k)
	}
	return b
}

// roundTripSize gives datagram i of a batch of n a size in 0..1500; each
// batch size gets a different mix, and the ends of the range appear.
func roundTripSize(n, i int) int {
	switch {
	case i == 0 && n%3 == 0:
		return 0
	case i == n-1 && n%2 == 0:
		return 1500
	}
	return (n*37 + i*211) % 1501
}

// roundTrip sends batches of 1..64 datagrams from s to dst and checks that r
// receives each, in order, intact and from wantSrc.
func roundTrip(t *testing.T, s, r *Conn, dst, wantSrc netip.AddrPort) {
	t.Helper()
	rmsgs := recvBufs(64, 2048)
	for n := 1; n <= 64; n++ {
		msgs := make([]Message, n)
		for i := range msgs {
			msgs[i] = Message{Buf: payload(n, i, roundTripSize(n, i)), Addr: dst}
		}
		if k, err := s.WriteBatch(msgs); k != n || err != nil {
			t.Fatalf("batch %d: WriteBatch = %d, %v", n, k, err)
		}
		readN(t, r, rmsgs[:n])
		for i, m := range rmsgs[:n] {
			want := msgs[i].Buf
			if m.N != len(want) || m.Truncated || !bytes.Equal(m.Buf[:m.N], want) {
				t.Fatalf("batch %d message %d: N %d truncated %v, want %d bytes", n, i, m.N, m.Truncated, len(want))
			}
			if m.Addr != wantSrc {
				t.Fatalf("batch %d message %d: from %v, want %v", n, i, m.Addr, wantSrc)
			}
		}
	}
}

func TestRoundTripIPv4(t *testing.T) {
	leakcheck.Check(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			a, _ := open(t, v, "udp4", "127.0.0.1:0")
			b, _ := open(t, v, "udp4", "127.0.0.1:0")
			if !a.LocalAddr().Addr().Is4() {
				t.Fatalf("LocalAddr %v", a.LocalAddr())
			}
			roundTrip(t, a, b, b.LocalAddr(), a.LocalAddr())
			// An IPv4-mapped destination reaches an IPv4 socket's peer.
			mapped := netip.AddrPortFrom(netip.AddrFrom16(a.LocalAddr().Addr().As16()), a.LocalAddr().Port())
			roundTrip(t, b, a, mapped, b.LocalAddr())
		})
	}
}

func TestRoundTripDualStack(t *testing.T) {
	leakcheck.Check(t)
	v6 := haveIPv6()
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			d, _ := open(t, v, "udp", "[::]:0")
			if got := d.LocalAddr().Addr(); got != netip.IPv6Unspecified() {
				t.Fatalf("dual-stack LocalAddr %v", d.LocalAddr())
			}
			p4, _ := open(t, v, "udp4", "127.0.0.1:0")
			t.Run("v4peer", func(t *testing.T) {
				roundTrip(t, p4, d, loopback4(d), p4.LocalAddr())
				roundTrip(t, d, p4, p4.LocalAddr(), loopback4(d))
			})
			if !v6 {
				t.Skip("no IPv6 loopback")
			}
			p6, _ := open(t, v, "udp6", "[::1]:0")
			t.Run("v6peer", func(t *testing.T) {
				roundTrip(t, p6, d, loopback6(d), p6.LocalAddr())
				roundTrip(t, d, p6, p6.LocalAddr(), loopback6(d))
			})
		})
	}
}

func TestAddressErrors(t *testing.T) {
	leakcheck.Check(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			a, _ := open(t, v, "udp4", "127.0.0.1:0")
			b, _ := open(t, v, "udp4", "127.0.0.1:0")
			msgs := []Message{
				{Buf: []byte("first"), Addr: b.LocalAddr()},
				{Buf: []byte("bad"), Addr: netip.MustParseAddrPort("[::1]:9")},
				{Buf: []byte("never"), Addr: b.LocalAddr()},
			}
			if n, err := a.WriteBatch(msgs); n != 1 || !errors.Is(err, ErrAddrFamily) {
				t.Fatalf("IPv6 destination on IPv4 socket: %d, %v", n, err)
			}
			if n, err := a.WriteBatch([]Message{{Buf: []byte("x")}}); n != 0 || !errors.Is(err, ErrInvalidAddr) {
				t.Fatalf("zero destination: %d, %v", n, err)
			}
			// Only the message before the bad one went out.
			r := recvBufs(1, 64)
			readN(t, b, r)
			if string(r[0].Buf[:r[0].N]) != "first" {
				t.Fatalf("got %q", r[0].Buf[:r[0].N])
			}
			if !haveIPv6() {
				return
			}
			// An IPv6-only socket cannot reach an IPv4 peer.
			only, _ := open(t, v, "udp6", "[::1]:0")
			n, err := only.WriteBatch([]Message{{Buf: []byte("x"), Addr: b.LocalAddr()}})
			if n != 0 || err == nil || (only.Batching() && !errors.Is(err, ErrAddrFamily)) {
				t.Fatalf("IPv4 destination on IPv6-only socket: %d, %v", n, err)
			}
		})
	}
}

func TestTruncationAndEmpty(t *testing.T) {
	leakcheck.Check(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			a, _ := open(t, v, "udp4", "127.0.0.1:0")
			b, _ := open(t, v, "udp4", "127.0.0.1:0")
			long := payload(1, 1, 100)
			sent := []Message{
				{Buf: long},
				{Buf: nil},
				{Buf: []byte("hello")},
				{Buf: []byte("seven!!")},
				{Buf: []byte{}},
				{Buf: []byte("0123456789")},
			}
			for i := range sent {
				sent[i].Addr = b.LocalAddr()
			}
			if n, err := a.WriteBatch(sent); n != len(sent) || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			got := []Message{
				{Buf: make([]byte, 10)},
				{Buf: make([]byte, 10)},
				{Buf: make([]byte, 10)},
				{Buf: nil},              // no room at all: truncated
				{Buf: nil},              // no room, empty datagram: fits
				{Buf: make([]byte, 10)}, // exactly full: not truncated
			}
			readN(t, b, got)
			want := []struct {
				n     int
				trunc bool
				data  []byte
			}{
				{100, true, long[:10]},
				{0, false, nil},
				{5, false, []byte("hello")},
				{7, true, nil},
				{0, false, nil},
				{10, false, []byte("0123456789")},
			}
			for i, w := range want {
				m := got[i]
				if m.N != w.n || m.Truncated != w.trunc || m.Addr != a.LocalAddr() {
					t.Errorf("message %d: N %d truncated %v from %v, want N %d truncated %v from %v",
						i, m.N, m.Truncated, m.Addr, w.n, w.trunc, a.LocalAddr())
				}
				if n := min(m.N, len(m.Buf)); !bytes.Equal(m.Buf[:n], w.data) {
					t.Errorf("message %d: data %q, want %q", i, m.Buf[:n], w.data)
				}
			}
		})
	}
}

// TestFallbackMatchesBatch feeds the same datagrams to a Conn on each path
// and compares every field of what they read.
func TestFallbackMatchesBatch(t *testing.T) {
	leakcheck.Check(t)
	s, _ := open(t, variants[0], "udp", "[::]:0")
	var conns [2]*Conn
	for i, v := range variants {
		conns[i], _ = open(t, v, "udp4", "127.0.0.1:0")
	}
	var msgs []Message
	for i, size := range []int{0, 1, 63, 64, 65, 700, 1200, 1500, 3000, 0, 200} {
		msgs = append(msgs, Message{Buf: payload(2, i, size)})
	}
	var results [2][]Message
	for i, c := range conns {
		for j := range msgs {
			msgs[j].Addr = loopback4(c)
		}
		if n, err := s.WriteBatch(msgs); n != len(msgs) || err != nil {
			t.Fatalf("WriteBatch = %d, %v", n, err)
		}
		results[i] = recvBufs(len(msgs), 1200)
		readN(t, c, results[i])
	}
	for j := range msgs {
		b, f := results[0][j], results[1][j]
		if b.N != f.N || b.Truncated != f.Truncated || b.Addr != f.Addr || !bytes.Equal(b.Buf, f.Buf) {
			t.Errorf("message %d: batch {N %d T %v %v} fallback {N %d T %v %v}", j, b.N, b.Truncated, b.Addr, f.N, f.Truncated, f.Addr)
		}
	}
}

// TestConcurrentWriters has 8 goroutines share one Conn's WriteBatch while
// one goroutine reads; every datagram must arrive exactly once. A credit
// window keeps the datagrams in flight well inside the receive buffer, so
// none is dropped for lack of room.
func TestConcurrentWriters(t *testing.T) {
	leakcheck.Check(t)
	const (
		writers = 8
		batches = 50
		batch   = 16
		window  = 256
	)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			s, _ := open(t, v, "udp4", "127.0.0.1:0")
			r, _ := open(t, v, "udp4", "127.0.0.1:0")
			credit := make(chan struct{}, window)
			done := make(chan struct{})
			errs := make(chan error, writers)
			var wg sync.WaitGroup
			defer wg.Wait()
			defer close(done)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- writeSeq(s, r.LocalAddr(), w, batches, batch, credit, done)
				}()
			}
			var seen [writers][batches * batch]bool
			msgs := recvBufs(64, 2048)
			for total := 0; total < writers*batches*batch; {
				n, err := r.ReadBatch(msgs)
				if err != nil {
					t.Fatalf("ReadBatch after %d datagrams: %v", total, err)
				}
				for _, m := range msgs[:n] {
					w, seq, ok := parseSeq(m)
					if !ok || m.Addr != s.LocalAddr() {
						t.Fatalf("bad datagram of %d bytes from %v", m.N, m.Addr)
					}
					if seen[w][seq] {
						t.Fatalf("writer %d datagram %d twice", w, seq)
					}
					seen[w][seq] = true
					<-credit
				}
				total += n
			}
			for range writers {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// writeSeq sends batches of datagrams numbered by writer and sequence, of
// sizes 8..199, taking one credit per datagram.
func writeSeq(c *Conn, dst netip.AddrPort, w, batches, batch int, credit chan struct{}, done chan struct{}) error {
	msgs := make([]Message, batch)
	for b := range batches {
		for i := range msgs {
			seq := b*batch + i
			size := 8 + (w*31+seq*17)%192
			p := make([]byte, size)
			binary.BigEndian.PutUint32(p, uint32(w))
			binary.BigEndian.PutUint32(p[4:], uint32(seq))
			for k := 8; k < size; k++ {
				p[k] = byte(seq + k)
			}
			msgs[i] = Message{Buf: p, Addr: dst}
			select {
			case credit <- struct{}{}:
			case <-done:
				return nil
			}
		}
		if n, err := c.WriteBatch(msgs); n != batch || err != nil {
			return fmt.Errorf("writer %d: WriteBatch = %d, %v", w, n, err)
		}
	}
	return nil
}

func parseSeq(m Message) (w, seq int, ok bool) {
	if m.Truncated || m.N < 8 {
		return 0, 0, false
	}
	p := m.Buf[:m.N]
	w, seq = int(binary.BigEndian.Uint32(p)), int(binary.BigEndian.Uint32(p[4:]))
	if w >= 8 || seq >= 50*16 || m.N != 8+(w*31+seq*17)%192 {
		return 0, 0, false
	}
	for k := 8; k < m.N; k++ {
		if p[k] != byte(seq+k) {
			return 0, 0, false
		}
	}
	return w, seq, true
}

func TestCloseUnblocksRead(t *testing.T) {
	leakcheck.Check(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			c, u := open(t, v, "udp4", "127.0.0.1:0")
			errc := make(chan error, 1)
			go func() {
				_, err := c.ReadBatch(recvBufs(4, 64))
				errc <- err
			}()
			waitParked(t)
			u.Close()
			if err := <-errc; !errors.Is(err, net.ErrClosed) {
				t.Fatalf("ReadBatch after Close: %v", err)
			}
			if _, err := c.ReadBatch(recvBufs(1, 64)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("ReadBatch on closed socket: %v", err)
			}
			if _, err := c.WriteBatch([]Message{{Buf: []byte("x"), Addr: loopback4(c)}}); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("WriteBatch on closed socket: %v", err)
			}
		})
	}
}

func TestReadDeadline(t *testing.T) {
	leakcheck.Check(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			c, u := open(t, v, "udp4", "127.0.0.1:0")
			msgs := recvBufs(4, 64)
			u.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if n, err := c.ReadBatch(msgs); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("ReadBatch past deadline = %d, %v", n, err)
			}
			// The Conn still works once the deadline is lifted.
			u.SetReadDeadline(time.Time{})
			if _, err := c.WriteBatch([]Message{{Buf: []byte("after"), Addr: c.LocalAddr()}}); err != nil {
				t.Fatal(err)
			}
			readN(t, c, msgs[:1])
			if string(msgs[0].Buf[:msgs[0].N]) != "after" {
				t.Fatalf("got %q", msgs[0].Buf[:msgs[0].N])
			}
		})
	}
}

// TestConnRefusedIsSkipped sends from a connected socket to a closed port:
// the ICMP port unreachable that comes back makes the next read fail with
// ECONNREFUSED, which ReadBatch must count and skip, then go on to deliver
// the next datagram.
func TestConnRefusedIsSkipped(t *testing.T) {
	leakcheck.Check(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			peer := listen(t, "udp4", "127.0.0.1:0")
			peerAddr := peer.LocalAddr().(*net.UDPAddr)
			peer.Close()
			u, err := net.DialUDP("udp4", nil, peerAddr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { u.Close() })
			u.SetReadDeadline(time.Now().Add(30 * time.Second))
			c := New(v.wrap(u))
			if _, err := u.Write([]byte("to nobody")); err != nil {
				t.Fatal(err)
			}
			type result struct {
				msg Message
				err error
			}
			got := make(chan result, 1)
			go func() {
				msgs := recvBufs(4, 64)
				_, err := c.ReadBatch(msgs)
				got <- result{msgs[0], err}
			}()
			waitFor(t, "the refusal to be counted", func() bool { return c.SoftErrors() > 0 })

			// The port comes back to life and answers; the reader must get it.
			peer, err = net.ListenUDP("udp4", peerAddr)
			if err != nil {
				t.Fatalf("rebinding the closed port: %v", err)
			}
			defer peer.Close()
			if _, err := peer.WriteToUDPAddrPort([]byte("back"), c.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			res := <-got
			if res.err != nil {
				t.Fatalf("ReadBatch: %v", res.err)
			}
			if string(res.msg.Buf[:res.msg.N]) != "back" || res.msg.Addr != peerAddr.AddrPort() {
				t.Fatalf("got %q from %v", res.msg.Buf[:res.msg.N], res.msg.Addr)
			}
		})
	}
}
