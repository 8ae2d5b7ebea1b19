package udpbatch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// fakeWriter records each WriteBatch call; while gate is set, every call
// waits for a value from it first.
type fakeWriter struct {
	mu    sync.Mutex
	calls [][]Message // copies
	gate  chan struct{}
	fail  func(call int, msgs []Message) (int, error)
}

func (f *fakeWriter) WriteBatch(msgs []Message) (int, error) {
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cp := make([]Message, len(msgs))
	for i, m := range msgs {
		cp[i] = Message{Buf: bytes.Clone(m.Buf), Addr: m.Addr}
	}
	f.calls = append(f.calls, cp)
	if f.fail != nil {
		return f.fail(len(f.calls)-1, msgs)
	}
	return len(msgs), nil
}

func (f *fakeWriter) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		for _, m := range c {
			out = append(out, string(m.Buf))
		}
	}
	return out
}

var dst = netip.MustParseAddrPort("127.0.0.1:9")

func one(s string) []Message { return []Message{{Buf: []byte(s), Addr: dst}} }

// While the writer is busy, what callers write waits and then leaves in
// one call, in order; Write copies, so callers may reuse their buffers.
func TestQueueBatchesWhileBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeWriter{gate: make(chan struct{})}
		q := newQueue(f, 0, nil)
		if err := q.Write(one("first")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the writer holds "first", waiting at the gate
		buf := make([]byte, 8)
		for i := range 100 {
			n := copy(buf, fmt.Sprintf("m%d", i))
			if err := q.Write([]Message{{Buf: buf[:n], Addr: dst}}); err != nil {
				t.Fatal(err)
			}
		}
		close(f.gate)
		q.Close()
		if len(f.calls) != 2 || len(f.calls[0]) != 1 || len(f.calls[1]) != 100 {
			t.Fatalf("calls of %d datagrams, want 1 then 100", lens(f.calls))
		}
		for i, m := range f.calls[1] {
			if want := fmt.Sprintf("m%d", i); string(m.Buf) != want || m.Addr != dst {
				t.Fatalf("datagram %d = %q to %v, want %q to %v", i, m.Buf, m.Addr, want, dst)
			}
		}
	})
}

func lens(calls [][]Message) []int {
	var n []int
	for _, c := range calls {
		n = append(n, len(c))
	}
	return n
}

// A Write that finds both arenas taken waits: memory stays bounded while
// the socket is slow.
func TestQueueBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeWriter{gate: make(chan struct{})}
		q := newQueue(f, 1000, nil)
		data := make([]byte, 100)
		q.Write(one("hold"))
		synctest.Wait() // the writer holds the first arena
		for range 10 {  // fills the second
			q.Write([]Message{{Buf: data, Addr: dst}})
		}
		done := make(chan struct{})
		go func() {
			q.Write([]Message{{Buf: data, Addr: dst}})
			close(done)
		}()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("a Write with no room in either arena returned")
		default:
		}
		if c := cap(q.fill.buf); c != 1000 {
			t.Fatalf("arena grew to %d bytes", c)
		}
		f.gate <- struct{}{} // the first arena is sent: room again
		<-done
		close(f.gate)
		q.Close()
		if got := len(f.sent()); got != 12 {
			t.Fatalf("%d datagrams sent, want 12", got)
		}
	})
}

// A datagram the socket refuses is reported and skipped; the ones after
// it still leave. A closed socket ends the batch.
func TestQueueErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refused := errors.New("refused")
		f := &fakeWriter{gate: make(chan struct{})}
		f.fail = func(call int, msgs []Message) (int, error) {
			for i, m := range msgs {
				switch string(m.Buf) {
				case "bad":
					return i, refused
				case "closed":
					return i, net.ErrClosed
				}
			}
			return len(msgs), nil
		}
		var errs []error
		q := newQueue(f, 0, func(err error) { errs = append(errs, err) })
		q.Write(one("hold"))
		synctest.Wait()
		for _, s := range []string{"a", "bad", "b", "closed", "c"} {
			q.Write(one(s))
		}
		close(f.gate)
		q.Close()
		if len(errs) != 2 || !errors.Is(errs[0], refused) || !errors.Is(errs[1], net.ErrClosed) {
			t.Fatalf("errors %v, want refused then closed", errs)
		}
		// Calls: [hold], [a bad b closed c] fails at bad, [b closed c] at closed.
		if n := lens(f.calls); len(n) != 3 || n[1] != 5 || n[2] != 3 {
			t.Fatalf("calls of %v datagrams, want [1 5 3]", n)
		}
	})
}

// Close sends what is queued; Writes after it fail.
func TestQueueClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeWriter{}
		q := newQueue(f, 0, nil)
		for i := range 10 {
			q.Write(one(fmt.Sprint(i)))
		}
		q.Close()
		q.Close()
		if got := len(f.sent()); got != 10 {
			t.Fatalf("%d of 10 queued datagrams sent by Close", got)
		}
		if err := q.Write(one("late")); !errors.Is(err, ErrQueueClosed) {
			t.Fatalf("Write after Close: %v, want ErrQueueClosed", err)
		}
	})
}

// Through a real socket, concurrent writers' datagrams all arrive, each
// writer's in order, with the contents they had when written.
func TestQueueSocket(t *testing.T) {
	leakcheck.Check(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			s, _ := open(t, v, "udp4", "127.0.0.1:0")
			r, _ := open(t, v, "udp4", "127.0.0.1:0")
			q := NewQueue(s, 4096, func(err error) { t.Error(err) })
			const writers, each = 4, 300
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 200)
					for i := range each {
						binary.BigEndian.PutUint32(buf, uint32(w))
						binary.BigEndian.PutUint32(buf[4:], uint32(i))
						if err := q.Write([]Message{{Buf: buf, Addr: loopback4(r)}}); err != nil {
							t.Error(err)
							return
						}
						clear(buf[8:]) // reused at once: the queue copied it
					}
				}()
			}
			msgs := recvBufs(writers*each, 256)
			readN(t, r, msgs)
			wg.Wait()
			q.Close()
			next := make([]uint32, writers)
			for _, m := range msgs {
				w, i := binary.BigEndian.Uint32(m.Buf), binary.BigEndian.Uint32(m.Buf[4:])
				if m.N != 200 || w >= writers || i != next[w] {
					t.Fatalf("datagram of %d bytes from writer %d seq %d, want seq %d", m.N, w, i, next[min(w, writers-1)])
				}
				next[w]++
			}
		})
	}
}
