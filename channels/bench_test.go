package channels

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Loopback benchmarks: two Conns over real UDP sockets on 127.0.0.1, beside
// raw UDP (one datagram per message, same payload) measured in the same run.
// Each engine benchmark reports its rate, the raw rate measured right after
// it (raw-*), and their ratio (x-raw).
//
//	go test -run '^$' -bench Loopback -count 5 ./channels

// udpLink sends a Conn's datagrams to one address.
type udpLink struct {
	conn *net.UDPConn
	to   netip.AddrPort
}

func (l *udpLink) SendDatagrams(d [][]byte) error {
	var first error
	for _, b := range d {
		if _, err := l.conn.WriteToUDPAddrPort(b, l.to); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func listenUDP(tb testing.TB) *net.UDPConn {
	tb.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	c.SetWriteBuffer(4 << 20)
	return c
}

// readLoop feeds datagrams from conn to c until conn is closed.
func readLoop(conn *net.UDPConn, c *Conn, done *sync.WaitGroup) {
	defer done.Done()
	buf := make([]byte, 65536)
	for {
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		c.HandleDatagram(buf[:n])
	}
}

// udpPair is two Conns over loopback UDP.
type udpPair struct {
	a, b        *Conn
	ua, ub      *net.UDPConn
	wg          sync.WaitGroup
	delivered   atomic.Int64
	deliveredB  atomic.Int64
	target      atomic.Int64
	reached     chan struct{}
	reachedOnce sync.Once
}

func newUDPPair(tb testing.TB, cfg Config) *udpPair {
	tb.Helper()
	p := &udpPair{reached: make(chan struct{})}
	p.ua, p.ub = listenUDP(tb), listenUDP(tb)
	cfgB := cfg
	cfgB.Deliver = func(m Message) {
		p.deliveredB.Add(int64(len(m.Data)))
		if p.delivered.Add(1) == p.target.Load() {
			p.reachedOnce.Do(func() { close(p.reached) })
		}
	}
	var err error
	if p.a, err = New(&udpLink{p.ua, p.ub.LocalAddr().(*net.UDPAddr).AddrPort()}, cfg); err != nil {
		tb.Fatal(err)
	}
	if p.b, err = New(&udpLink{p.ub, p.ua.LocalAddr().(*net.UDPAddr).AddrPort()}, cfgB); err != nil {
		tb.Fatal(err)
	}
	p.wg.Add(2)
	go readLoop(p.ua, p.a, &p.wg)
	go readLoop(p.ub, p.b, &p.wg)
	return p
}

func (p *udpPair) close() {
	p.a.Close()
	p.b.Close()
	p.ua.Close()
	p.ub.Close()
	p.wg.Wait()
}

// send sends msg n times, waiting for queue space when full.
func (p *udpPair) send(tb testing.TB, n int, msg []byte, flags Flags) {
	for range n {
		for {
			err := p.a.Send(0, msg, flags)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrQueueFull) {
				tb.Fatal(err)
			}
			p.a.WaitSendQueue(context.Background())
		}
	}
	p.a.Flush()
}

// waitAll waits until the peer has delivered every message.
func (p *udpPair) waitAll(tb testing.TB) {
	select {
	case <-p.reached:
	case <-time.After(2 * time.Minute):
		tb.Fatalf("delivered %d of %d", p.delivered.Load(), p.target.Load())
	}
}

// waitQuiet waits until count stops growing for a while: for unreliable
// traffic, which may lose some.
func waitQuiet(count func() int64) {
	last := count()
	for range 500 {
		time.Sleep(20 * time.Millisecond)
		c := count()
		if c == last {
			return
		}
		last = c
	}
}

// rawUDP sends n datagrams of size bytes from one socket to another and
// returns how many arrived and how long it took.
func rawUDP(tb testing.TB, n, size int) (int64, time.Duration) {
	tx, rx := listenUDP(tb), listenUDP(tb)
	defer tx.Close()
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	var got atomic.Int64
	var last atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			if _, _, err := rx.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
			got.Add(1)
			last.Store(time.Now().UnixNano())
		}
	}()
	msg := make([]byte, size)
	start := time.Now()
	for range n {
		tx.WriteToUDPAddrPort(msg, to)
	}
	waitQuiet(got.Load)
	rx.Close()
	<-done
	end := time.Unix(0, last.Load())
	return got.Load(), end.Sub(start)
}

func benchRaw(b *testing.B, size int) {
	got, el := rawUDP(b, b.N, size)
	b.ReportMetric(float64(got)/el.Seconds(), "dgrams/s")
	b.ReportMetric(float64(got)*float64(size)/el.Seconds()/1e6, "MB/s")
	b.ReportMetric(100*float64(got)/float64(b.N), "%delivered")
}

// pairedRaw measures raw UDP at size bytes right after an engine run, with
// the timer stopped, sending about as many datagrams as the engine did
// (between 1000 and 400000), and returns datagrams per second. Pairing each
// engine run with its own baseline keeps the ratio honest on a machine
// whose speed drifts: with -count, Go runs a sub-benchmark's repetitions
// back to back, so a baseline from another sub-benchmark would be minutes
// away.
func pairedRaw(b *testing.B, size int, datagrams int) float64 {
	b.StopTimer()
	defer b.StartTimer()
	got, el := rawUDP(b, min(max(datagrams, 1000), 400000), size)
	return float64(got) / el.Seconds()
}

func benchMessages(b *testing.B, size int, flags Flags) {
	p := newUDPPair(b, Config{})
	defer p.close()
	msg := make([]byte, size)
	p.target.Store(int64(b.N))
	b.ReportAllocs()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	b.ResetTimer()
	start := time.Now()
	p.send(b, b.N, msg, flags)
	if flags.IsReliable() {
		p.waitAll(b)
	} else {
		waitQuiet(p.delivered.Load)
	}
	el := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(b.N), "allocs/msg")
	got := p.delivered.Load()
	rate := float64(got) / el.Seconds()
	s := p.a.Stats()
	raw := pairedRaw(b, size, b.N)
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(raw, "raw-dgrams/s")
	b.ReportMetric(rate/raw, "x-raw")
	b.ReportMetric(100*float64(got)/float64(b.N), "%delivered")
	b.ReportMetric(float64(s.MessagesSent)/float64(max(s.PacketsSent, 1)), "msgs/dgram")
}

func benchBulk(b *testing.B) {
	p := newUDPPair(b, Config{})
	defer p.close()
	msg := make([]byte, 1<<20)
	p.target.Store(int64(b.N))
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	p.send(b, b.N, msg, Reliable)
	p.waitAll(b)
	el := time.Since(start)
	b.StopTimer()
	mbps := float64(b.N) * (1 << 20) / el.Seconds() / 1e6
	s := p.a.Stats()
	raw := pairedRaw(b, 1200, b.N*(1<<20)/1200) * 1200 / 1e6
	b.ReportMetric(mbps, "goodput-MB/s")
	b.ReportMetric(raw, "raw-MB/s")
	b.ReportMetric(mbps/raw, "x-raw")
	b.ReportMetric(100*float64(s.Retransmissions)/float64(max(s.PacketsSent, 1)), "%retx")
	if testing.Verbose() {
		r := p.b.Stats()
		b.Logf("N=%d sent %d dgrams, lost %d spurious %d pto %d, srtt %v min %v, cwnd %d, pacing %.0f MB/s, credit-blocked %d; receiver sent %d dgrams",
			b.N, s.PacketsSent, s.PacketsLost, s.SpuriousLosses, s.ProbeTimeouts, s.SmoothedRTT, s.MinRTT, s.CongestionWindow, s.PacingRate/1e6, s.CreditBlocked, r.PacketsSent)
	}
}

// BenchmarkLoopback runs the engine and, for reference, raw UDP alone.
func BenchmarkLoopback(b *testing.B) {
	b.Run("raw-udp-64B", func(b *testing.B) { benchRaw(b, 64) })
	b.Run("reliable-64B", func(b *testing.B) { benchMessages(b, 64, Reliable) })
	b.Run("unreliable-64B", func(b *testing.B) { benchMessages(b, 64, Unreliable|Unsequenced) })
	b.Run("raw-udp-1200B", func(b *testing.B) { benchRaw(b, 1200) })
	b.Run("reliable-1MiB", benchBulk)
}
