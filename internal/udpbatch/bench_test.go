package udpbatch

import (
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// The benchmarks move b.N datagrams from one loopback socket to another,
// sender and receiver in separate goroutines, and report the rate at which
// datagrams were received (dgrams/s; ns/op and allocs/op are per datagram,
// both ends together). The sender keeps at most benchWindow datagrams
// ahead of the receiver, well inside the 8 MiB receive buffer, so it
// measures the socket path rather than drops; any datagram lost anyway is
// reported as lost/op. dgrams/read is the mean number of datagrams each
// read call returned.

const (
	benchBatch  = 32
	benchWindow = 1024
)

var benchSizes = []int{64, 1200}

// pipe is one way of moving datagrams: send sends n ≤ benchBatch datagrams,
// recv receives at least one and returns how many.
type pipe struct {
	send func(n int) error
	recv func() (int, error)
}

func BenchmarkWriteReadBatch(b *testing.B) {
	benchAll(b, func(s, r *net.UDPConn, size int) pipe {
		sc, rc := New(s), New(r)
		out := make([]Message, benchBatch)
		for i := range out {
			out[i] = Message{Buf: make([]byte, size), Addr: rc.LocalAddr()}
		}
		in := recvBufs(benchBatch, 2048)
		return pipe{
			send: func(n int) error {
				_, err := sc.WriteBatch(out[:n])
				return err
			},
			recv: func() (int, error) { return rc.ReadBatch(in) },
		}
	})
}

func BenchmarkXNetBatch(b *testing.B) {
	benchAll(b, func(s, r *net.UDPConn, size int) pipe {
		sc, rc := ipv4.NewPacketConn(s), ipv4.NewPacketConn(r)
		dst := r.LocalAddr()
		out := make([]ipv4.Message, benchBatch)
		in := make([]ipv4.Message, benchBatch)
		for i := range out {
			out[i] = ipv4.Message{Buffers: [][]byte{make([]byte, size)}, Addr: dst}
			in[i] = ipv4.Message{Buffers: [][]byte{make([]byte, 2048)}}
		}
		return pipe{
			send: func(n int) error {
				for sent := 0; sent < n; {
					k, err := sc.WriteBatch(out[sent:n], 0)
					if err != nil {
						return err
					}
					sent += k
				}
				return nil
			},
			recv: func() (int, error) { return rc.ReadBatch(in, 0) },
		}
	})
}

func BenchmarkPlain(b *testing.B) {
	benchAll(b, func(s, r *net.UDPConn, size int) pipe {
		dst := r.LocalAddr().(*net.UDPAddr).AddrPort()
		out := make([]byte, size)
		in := make([]byte, 2048)
		return pipe{
			send: func(n int) error {
				for range n {
					if _, err := s.WriteToUDPAddrPort(out, dst); err != nil {
						return err
					}
				}
				return nil
			},
			recv: func() (int, error) {
				_, _, err := r.ReadFromUDPAddrPort(in)
				if err != nil {
					return 0, err
				}
				return 1, nil
			},
		}
	})
}

func benchAll(b *testing.B, setup func(s, r *net.UDPConn, size int) pipe) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			s := listen(b, "udp4", "127.0.0.1:0")
			r := listen(b, "udp4", "127.0.0.1:0")
			r.SetReadDeadline(time.Time{})
			runPipe(b, r, setup(s, r, size))
		})
	}
}

func runPipe(b *testing.B, r *net.UDPConn, p pipe) {
	total := int64(b.N)
	var received atomic.Int64
	progress := make(chan struct{}, 1)
	done := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var calls int64 // read by this goroutine after <-done
	go func() {
		for received.Load() < total {
			calls++
			n, err := p.recv()
			if err != nil {
				done <- err
				return
			}
			received.Add(int64(n))
			select {
			case progress <- struct{}{}:
			default:
			}
		}
		done <- nil
	}()
	stall := time.NewTimer(time.Hour)
send:
	for sent := int64(0); sent < total; {
		for sent-received.Load() > benchWindow-benchBatch {
			stall.Reset(time.Second)
			select {
			case <-progress:
			case <-stall.C: // datagrams were lost: stop waiting for them
				break send
			}
		}
		n := min(benchBatch, total-sent)
		if err := p.send(int(n)); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	// The receiver reads the last window quickly; a deadline ends it if
	// datagrams were lost.
	r.SetReadDeadline(time.Now().Add(time.Second))
	err := <-done
	elapsed := time.Since(start)
	b.StopTimer()
	got := received.Load()
	if err != nil && got == 0 {
		b.Fatal(err)
	}
	b.ReportMetric(float64(got)/elapsed.Seconds(), "dgrams/s")
	b.ReportMetric(float64(total-got)/float64(total), "lost/op")
	b.ReportMetric(float64(got)/float64(calls), "dgrams/read")
}

// BenchmarkReadQueued measures the receive path alone: the receive buffer
// is filled with queuedRound datagrams (timer stopped), then the reader
// drains them. In the pipelined benchmarks above the loopback sender does
// most of the kernel's work and the reader, woken per datagram or two,
// has spare time, which hides its own cost; here it is all that is timed.
func BenchmarkReadQueued(b *testing.B) {
	readers := []struct {
		name  string
		setup func(r *net.UDPConn) func() (int, error)
	}{
		{"udpbatch", func(r *net.UDPConn) func() (int, error) {
			c := New(r)
			in := recvBufs(benchBatch, 2048)
			return func() (int, error) { return c.ReadBatch(in) }
		}},
		{"xnet", func(r *net.UDPConn) func() (int, error) {
			c := ipv4.NewPacketConn(r)
			in := make([]ipv4.Message, benchBatch)
			for i := range in {
				in[i].Buffers = [][]byte{make([]byte, 2048)}
			}
			return func() (int, error) { return c.ReadBatch(in, 0) }
		}},
		{"plain", func(r *net.UDPConn) func() (int, error) {
			in := make([]byte, 2048)
			return func() (int, error) {
				_, _, err := r.ReadFromUDPAddrPort(in)
				return 1, err
			}
		}},
	}
	for _, rd := range readers {
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("%s/%dB", rd.name, size), func(b *testing.B) {
				s, _ := open(b, variants[0], "udp4", "127.0.0.1:0")
				r := listen(b, "udp4", "127.0.0.1:0")
				read := rd.setup(r)
				out := make([]Message, benchBatch)
				for i := range out {
					out[i] = Message{Buf: make([]byte, size), Addr: r.LocalAddr().(*net.UDPAddr).AddrPort()}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; {
					b.StopTimer()
					k := min(b.N-done, queuedRound)
					for sent := 0; sent < k; sent += benchBatch {
						if _, err := s.WriteBatch(out[:min(benchBatch, k-sent)]); err != nil {
							b.Fatal(err)
						}
					}
					r.SetReadDeadline(time.Now().Add(10 * time.Second))
					b.StartTimer()
					for got := 0; got < k; {
						n, err := read()
						if err != nil {
							b.Fatalf("after %d of %d: %v", got, k, err)
						}
						got += n
					}
					done += k
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "dgrams/s")
			})
		}
	}
}

// queuedRound datagrams of 1200 bytes take about 5 MB of receive buffer
// (skb overhead included), inside the 8 MiB a 4 MiB SetReadBuffer gives.
const queuedRound = 2048
