package p2p

import (
	"context"
	"errors"
	"fmt"

	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/internal/udpbatch"
)

// Node benchmarks over loopback UDP, encryption on, each beside batched raw
// UDP (recvmmsg/sendmmsg, one datagram per message, same payload) measured
// right after it in the same process:
//
//	go test -run '^$' -bench . -count 10 ./p2p

// benchPair returns two Nodes with an accepted session, and the sender's
// receive-counting goroutine.
func benchPair(b *testing.B) (a, c *Node) {
	b.Helper()
	var err error
	if a, err = New(Config{ListenAddr: "127.0.0.1:0"}); err != nil {
		b.Fatal(err)
	}
	if c, err = New(Config{ListenAddr: "127.0.0.1:0"}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close(); c.Close() })
	introduce(a, c)
	// Each sends to the other, so each accepts the other.
	a.SendP2PPacket(c.PeerID(), []byte("hi"), SendReliable, 0)
	c.SendP2PPacket(a.PeerID(), []byte("hi"), SendReliable, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range []*Node{a, c} {
		if _, err := n.Receive(ctx, 0); err != nil {
			b.Fatal(err)
		}
	}
	for {
		if st, _ := a.GetP2PSessionState(c.PeerID()); st.ConnectionActive {
			return a, c
		}
		time.Sleep(time.Millisecond)
	}
}

// drain counts packets arriving on channel until stop, into got.
func drain(n *Node, channel int, got *atomic.Int64, bytes *atomic.Int64, stop chan struct{}, done *sync.WaitGroup) {
	defer done.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-stop; cancel() }()
	for {
		p, err := n.Receive(ctx, channel)
		if err != nil {
			return
		}
		got.Add(1)
		bytes.Add(int64(len(p.Data)))
	}
}

// sendAll sends n messages with send, waiting when the queue is full.
func sendAll(b *testing.B, from *Node, to PeerID, n int, msg []byte, send func([]byte) error) {
	for range n {
		for {
			err := send(msg)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrQueueFull) {
				b.Fatal(err)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	from.Flush(to)
}

// waitCount waits until got reaches want, or stops growing for 100 ms when
// loss is allowed.
func waitCount(b *testing.B, got *atomic.Int64, want int64, lossy bool) {
	last, quiet := got.Load(), 0
	for got.Load() < want {
		time.Sleep(5 * time.Millisecond)
		if c := got.Load(); c == last {
			quiet++
			if (lossy && quiet > 20) || quiet > 6000 {
				if !lossy {
					b.Fatalf("delivered %d of %d", c, want)
				}
				return
			}
		} else {
			last, quiet = c, 0
		}
	}
}

// sendType and sendFlags make the send functions of the benchmarks.
func sendType(a *Node, to PeerID, t SendType) func([]byte) error {
	return func(m []byte) error { return a.SendP2PPacket(to, m, t, 1) }
}

func sendFlags(a *Node, to PeerID, f channels.Flags) func([]byte) error {
	return func(m []byte) error { return a.Send(to, m, f, 1) }
}

func benchNodeMessages(b *testing.B, size int, reliable bool, send func(a *Node, to PeerID) func([]byte) error) {
	a, c := benchPair(b)
	var got, nbytes atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go drain(c, 1, &got, &nbytes, stop, &wg)
	msg := make([]byte, size)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	b.ResetTimer()
	start := time.Now()
	sendAll(b, a, c.PeerID(), b.N, msg, send(a, c.PeerID()))
	waitCount(b, &got, int64(b.N), !reliable)
	el := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&m1)
	close(stop)
	wg.Wait()
	rate := float64(got.Load()) / el.Seconds()
	raw := batchedRaw(b, size, b.N)
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(raw, "raw-batched-dgrams/s")
	b.ReportMetric(rate/raw, "x-raw")
	b.ReportMetric(100*float64(got.Load())/float64(b.N), "%delivered")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(b.N), "allocs/msg")
}

func benchNodeBulk(b *testing.B) {
	a, c := benchPair(b)
	var got, nbytes atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go drain(c, 1, &got, &nbytes, stop, &wg)
	msg := make([]byte, MaxReliableSize)
	b.SetBytes(MaxReliableSize)
	b.ResetTimer()
	start := time.Now()
	sendAll(b, a, c.PeerID(), b.N, msg, sendType(a, c.PeerID(), SendReliable))
	waitCount(b, &got, int64(b.N), false)
	el := time.Since(start)
	b.StopTimer()
	close(stop)
	wg.Wait()
	mbps := float64(b.N) * MaxReliableSize / el.Seconds() / 1e6
	if testing.Verbose() {
		a.mu.Lock()
		sess := a.sessions[c.PeerID()]
		a.mu.Unlock()
		st := sess.conn.Stats()
		b.Logf("N=%d: sent %d dgrams, lost %d (spurious %d), retx %d, pto %d, srtt %v min %v, cwnd %d, credit-blocked %d; sock soft errors %d",
			b.N, st.PacketsSent, st.PacketsLost, st.SpuriousLosses, st.Retransmissions, st.ProbeTimeouts, st.SmoothedRTT, st.MinRTT, st.CongestionWindow, st.CreditBlocked, a.main.conn.SoftErrors())
	}
	raw := batchedRaw(b, 1200, b.N*MaxReliableSize/1200) * 1200 / 1e6
	b.ReportMetric(mbps, "goodput-MB/s")
	b.ReportMetric(raw, "raw-batched-MB/s")
	b.ReportMetric(mbps/raw, "x-raw")
}

// batchedRaw measures raw UDP on loopback with batched I/O (sendmmsg and
// recvmmsg, 32 datagrams a call) at size bytes, sending about n datagrams
// (1000 to 400000), and returns datagrams received per second.
func batchedRaw(b *testing.B, size, n int) float64 {
	n = min(max(n, 1000), 400000)
	open := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		c.SetReadBuffer(4 << 20)
		c.SetWriteBuffer(4 << 20)
		return c
	}
	txc, rxc := open(), open()
	defer txc.Close()
	tx, rx := udpbatch.New(txc), udpbatch.New(rxc)
	to := rxc.LocalAddr().(*net.UDPAddr).AddrPort()
	var got atomic.Int64
	var last atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		msgs := make([]udpbatch.Message, 32)
		for i := range msgs {
			msgs[i].Buf = make([]byte, 2048)
		}
		for {
			k, err := rx.ReadBatch(msgs)
			if err != nil {
				return
			}
			got.Add(int64(k))
			last.Store(time.Now().UnixNano())
			for i := range msgs[:k] {
				msgs[i].Buf = msgs[i].Buf[:cap(msgs[i].Buf)]
			}
		}
	}()
	payload := make([]byte, size)
	out := make([]udpbatch.Message, 32)
	for i := range out {
		out[i] = udpbatch.Message{Buf: payload, Addr: to}
	}
	start := time.Now()
	for sent := 0; sent < n; sent += len(out) {
		tx.WriteBatch(out[:min(len(out), n-sent)])
	}
	for prev := int64(-1); got.Load() != prev; {
		prev = got.Load()
		time.Sleep(20 * time.Millisecond)
	}
	rxc.Close()
	<-done
	return float64(got.Load()) / time.Unix(0, last.Load()).Sub(start).Seconds()
}

// BenchmarkNodeLoopback: 64-byte messages coalesced (ReliableWithBuffering,
// and unreliable unsequenced without FlushHint), as the channels benchmarks
// send them; Steam's SendUnreliable, which sends every message at once in a
// datagram of its own; and 1 MiB reliable messages.
func BenchmarkNodeLoopback(b *testing.B) {
	b.Run("reliable-64B", func(b *testing.B) {
		benchNodeMessages(b, 64, true, func(a *Node, to PeerID) func([]byte) error {
			return sendType(a, to, SendReliableWithBuffering)
		})
	})
	b.Run("unreliable-64B", func(b *testing.B) {
		benchNodeMessages(b, 64, false, func(a *Node, to PeerID) func([]byte) error {
			return sendFlags(a, to, channels.Unreliable|channels.Unsequenced)
		})
	})
	b.Run("unreliable-64B-immediate", func(b *testing.B) {
		benchNodeMessages(b, 64, false, func(a *Node, to PeerID) func([]byte) error {
			return sendType(a, to, SendUnreliable)
		})
	})
	b.Run("reliable-1MiB", benchNodeBulk)
}

// BenchmarkHandshake measures sessions established per second by one node:
// fresh peers each send one message; an op ends when the node holds it.
// Each peer has its own loopback address, as real peers would: past its
// handshake budget the node is under load and wants a cookie round trip
// and at most 20 handshakes a second from each address.
func BenchmarkHandshake(b *testing.B) {
	hub, err := New(Config{ListenAddr: "127.0.0.1:0", MaxPendingSessions: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer hub.Close()
	peers := make([]*Node, b.N)
	for i := range peers {
		ip := fmt.Sprintf("127.0.%d.%d:0", 1+i/250, 2+i%250)
		if peers[i], err = New(Config{ListenAddr: ip}); err != nil {
			b.Fatal(err)
		}
		peers[i].AddPeerAddr(hub.PeerID(), addrOf(hub))
	}
	defer func() {
		for _, p := range peers {
			p.Close()
		}
	}()
	b.ResetTimer()
	start := time.Now()
	for _, p := range peers {
		p.SendP2PPacket(hub.PeerID(), []byte("hi"), SendReliable, 0)
	}
	for got := 0; got < b.N; {
		select {
		case e := <-hub.Events():
			if _, ok := e.(SessionRequest); ok {
				got++
			}
		case <-time.After(30 * time.Second):
			b.Fatalf("%d of %d sessions", got, b.N)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
}

// BenchmarkIdleSessionMemory measures what an idle session costs a node:
// heap and goroutine stacks, with both ends in this process, halved. The
// peers' Nodes exist before the baseline, so only sessions are counted.
func BenchmarkIdleSessionMemory(b *testing.B) {
	const peersPerOp = 200
	for range b.N {
		m := newMemNet(0)
		hubConn := m.listen(1, 0)
		hub, _ := New(Config{PacketConn: hubConn, MaxPendingSessions: 1 << 20})
		peers := make([]*Node, peersPerOp)
		for i := range peers {
			pc := m.listen(byte(2+i%250), uint16(1000+i))
			peers[i], _ = New(Config{PacketConn: pc})
			peers[i].AddPeerAddr(hub.PeerID(), addrOf(hub))
			hub.AddPeerAddr(peers[i].PeerID(), netip.AddrPortFrom(pc.addr.Addr(), pc.addr.Port()))
		}
		before := memInUse()
		for _, p := range peers {
			p.SendP2PPacket(hub.PeerID(), []byte("hi"), SendReliable, 0)
			hub.SendP2PPacket(p.PeerID(), []byte("hi"), SendReliable, 0)
		}
		deadline := time.Now().Add(20 * time.Second)
		for _, p := range peers {
			for {
				st, _ := hub.GetP2PSessionState(p.PeerID())
				if st.ConnectionActive {
					break
				}
				if time.Now().After(deadline) {
					b.Fatal("sessions did not connect")
				}
				time.Sleep(time.Millisecond)
			}
			hub.ReadP2PPacket(0)
			p.ReadP2PPacket(0)
		}
		time.Sleep(2 * time.Second) // idle: only keepalives
		after := memInUse()
		b.ReportMetric(float64(after-before)/(2*peersPerOp), "bytes/session")
		for _, p := range peers {
			p.Close()
		}
		hub.Close()
		hubConn.Close()
	}
}

// memInUse returns live heap plus goroutine stacks after a collection.
func memInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}
