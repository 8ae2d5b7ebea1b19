package udpbatch

import (
	"errors"
	"net"
	"sync"
)

// Queue sends datagrams on a Conn from a goroutine of its own, so that what
// many callers write in the same moment leaves in shared sendmmsg calls: a
// game server that sends one small datagram to each of a thousand peers
// makes a few dozen system calls instead of a thousand, and no caller waits
// for the kernel.
//
// Write copies the datagrams into one of two arenas and returns; the
// writer goroutine takes the filled arena whole and sends it while the
// callers fill the other. Nothing is added to the latency of a lone
// datagram but a goroutine wake-up: a batch forms only while the writer is
// busy with the one before. The arenas bound the memory: a Write that finds
// no room waits until the writer has sent the arena it holds, which passes
// the socket's own backpressure on to the callers as a blocking write would.
//
// Datagrams of one Write, and of Writes one after the other, leave in
// order. Errors of the socket or of a destination are reported to the
// Queue's error function (the datagram is dropped, as a lost one would be)
// instead of to the caller, which has returned by then.
//
// Ownership: the writer goroutine owns the arena it sends; mu guards
// everything else.
type Queue struct {
	c       batchWriter
	onError func(error)

	mu      sync.Mutex
	work    sync.Cond // the writer waits for datagrams
	room    sync.Cond // writers wait for an arena
	fill    arena     // the arena Writes copy into
	spare   arena     // the other one; empty unless the writer is sending it
	sending bool      // the writer holds spare
	closed  bool
	done    chan struct{}
}

// batchWriter is what a Queue sends through: a *Conn, or a fake in tests.
type batchWriter interface {
	WriteBatch(msgs []Message) (int, error)
}

// arena is a set of datagrams copied into one buffer.
type arena struct {
	buf  []byte
	msgs []Message
}

// DefaultQueueBytes is the size of each of a Queue's two arenas when
// NewQueue is given zero: room for about two hundred full-size datagrams.
const DefaultQueueBytes = 256 << 10

// NewQueue starts a Queue on c with two arenas of size bytes each (zero
// means DefaultQueueBytes). onError, which may be nil, is called from the
// writer goroutine for each datagram that could not be sent.
func NewQueue(c *Conn, size int, onError func(error)) *Queue {
	return newQueue(c, size, onError)
}

func newQueue(c batchWriter, size int, onError func(error)) *Queue {
	if size <= 0 {
		size = DefaultQueueBytes
	}
	q := &Queue{
		c:       c,
		onError: onError,
		fill:    arena{buf: make([]byte, 0, size)},
		spare:   arena{buf: make([]byte, 0, size)},
		done:    make(chan struct{}),
	}
	q.work.L, q.room.L = &q.mu, &q.mu
	go q.run()
	return q
}

// Write queues copies of msgs (Buf and Addr) for sending and returns; msgs
// and their buffers may be reused at once. A datagram larger than an arena
// is sent at once on the caller's goroutine, after those queued before it.
func (q *Queue) Write(msgs []Message) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range msgs {
		m := &msgs[i]
		if len(m.Buf) > cap(q.fill.buf) {
			if err := q.writeLargeLocked(m); err != nil {
				return err
			}
			continue
		}
		for !q.closed && len(m.Buf) > cap(q.fill.buf)-len(q.fill.buf) {
			q.room.Wait()
		}
		if q.closed {
			return ErrQueueClosed
		}
		start := len(q.fill.buf)
		q.fill.buf = append(q.fill.buf, m.Buf...)
		q.fill.msgs = append(q.fill.msgs, Message{Buf: q.fill.buf[start:len(q.fill.buf):len(q.fill.buf)], Addr: m.Addr})
		if len(q.fill.msgs) == 1 {
			q.work.Signal()
		}
	}
	return nil
}

// writeLargeLocked sends one oversized datagram once everything queued
// before it has left, keeping the order.
func (q *Queue) writeLargeLocked(m *Message) error {
	for !q.closed && (len(q.fill.msgs) > 0 || q.sending) {
		q.room.Wait()
	}
	if q.closed {
		return ErrQueueClosed
	}
	_, err := q.c.WriteBatch([]Message{{Buf: m.Buf, Addr: m.Addr}})
	return err
}

// Close sends what is queued, stops the writer and waits for it. Writes
// after Close fail with ErrQueueClosed. It is idempotent.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.work.Signal()
	q.room.Broadcast()
	q.mu.Unlock()
	<-q.done
}

// run is the writer goroutine.
func (q *Queue) run() {
	defer close(q.done)
	q.mu.Lock()
	for {
		for len(q.fill.msgs) == 0 && !q.closed {
			q.work.Wait()
		}
		if len(q.fill.msgs) == 0 {
			q.mu.Unlock()
			return
		}
		q.fill, q.spare = q.spare, q.fill
		q.sending = true
		q.mu.Unlock()
		q.send(q.spare.msgs)
		clear(q.spare.msgs) // the buffers stay; the addresses need not
		q.spare.msgs, q.spare.buf = q.spare.msgs[:0], q.spare.buf[:0]
		q.mu.Lock()
		q.sending = false
		q.room.Broadcast()
	}
}

// send writes msgs, skipping a datagram the socket refuses and giving up
// on the rest once the socket is closed.
func (q *Queue) send(msgs []Message) {
	for len(msgs) > 0 {
		n, err := q.c.WriteBatch(msgs)
		if err == nil {
			return
		}
		if q.onError != nil {
			q.onError(err)
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
		msgs = msgs[n+1:]
	}
}
