package p2p

import (
	"context"
	"sync"

	"github.com/gamewire/gamewire/channels"
)

// Packet is a message received from a peer.
type Packet struct {
	From    PeerID
	Channel int
	// Data belongs to the caller.
	Data []byte
}

// maxUnreliableQueued bounds the bytes of unreliable packets waiting to be
// read across all channels; past it new ones are dropped and counted.
// Reliable packets are bounded by each session's receive window instead,
// which is given back only as they are read.
const maxUnreliableQueued = 4 << 20

// queuedPacket is a packet waiting to be read. conn is set for reliable
// packets: reading one gives its share of the window back to the sender.
type queuedPacket struct {
	pkt  Packet
	conn *channels.Conn
}

// recvQueues holds received packets per channel, in arrival order, for
// ReadP2PPacket and Receive. Its lock is taken after session locks.
type recvQueues struct {
	mu         sync.Mutex
	chans      map[int]*chanQueue
	unrelBytes int
	dropped    uint64 // unreliable packets dropped: queue full
	closed     bool
	closedCh   chan struct{}
}

type chanQueue struct {
	pkts []queuedPacket
	head int
	// ready has capacity 1: a push signals one waiting Receive, which
	// passes the signal on if packets remain.
	ready chan struct{}
}

func newRecvQueues() *recvQueues {
	return &recvQueues{chans: make(map[int]*chanQueue), closedCh: make(chan struct{})}
}

func (r *recvQueues) queue(ch int) *chanQueue {
	q := r.chans[ch]
	if q == nil {
		q = &chanQueue{ready: make(chan struct{}, 1)}
		r.chans[ch] = q
	}
	return q
}

func (q *chanQueue) len() int { return len(q.pkts) - q.head }

func (q *chanQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// push queues a packet; it reports false when an unreliable packet was
// dropped for want of room.
func (r *recvQueues) push(p queuedPacket) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	if p.conn == nil {
		if r.unrelBytes+len(p.pkt.Data) > maxUnreliableQueued {
			r.dropped++
			return false
		}
		r.unrelBytes += len(p.pkt.Data)
	}
	q := r.queue(p.pkt.Channel)
	q.pkts = append(q.pkts, p)
	q.signal()
	return true
}

// pop removes the oldest packet on ch.
func (r *recvQueues) pop(ch int) (Packet, bool) {
	r.mu.Lock()
	q := r.chans[ch]
	if q == nil || q.len() == 0 {
		r.mu.Unlock()
		return Packet{}, false
	}
	p := q.pkts[q.head]
	q.pkts[q.head] = queuedPacket{}
	q.head++
	if q.head == len(q.pkts) {
		q.pkts, q.head = q.pkts[:0], 0
	} else {
		q.signal()
	}
	if p.conn == nil {
		r.unrelBytes -= len(p.pkt.Data)
	}
	r.mu.Unlock()
	if p.conn != nil {
		p.conn.Release(len(p.pkt.Data))
	}
	return p.pkt, true
}

// peek returns the size of the oldest packet on ch.
func (r *recvQueues) peek(ch int) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.chans[ch]
	if q == nil || q.len() == 0 {
		return 0, false
	}
	return len(q.pkts[q.head].pkt.Data), true
}

// wait blocks until a packet is on ch, ctx is done, or the queues close.
func (r *recvQueues) wait(ctx context.Context, ch int) (Packet, error) {
	for {
		if p, ok := r.pop(ch); ok {
			return p, nil
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return Packet{}, ErrClosed
		}
		q := r.queue(ch)
		r.mu.Unlock()
		select {
		case <-q.ready:
		case <-r.closedCh:
		case <-ctx.Done():
			return Packet{}, ctx.Err()
		}
	}
}

// drop removes the packets from peer, on channel ch or on every channel
// when all is set, giving reliable ones' window back.
func (r *recvQueues) drop(peer PeerID, ch int, all bool) {
	var release []queuedPacket
	r.mu.Lock()
	for c, q := range r.chans {
		if !all && c != ch {
			continue
		}
		kept := q.pkts[:q.head]
		for _, p := range q.pkts[q.head:] {
			if p.pkt.From != peer {
				kept = append(kept, p)
				continue
			}
			if p.conn == nil {
				r.unrelBytes -= len(p.pkt.Data)
			} else {
				release = append(release, p)
			}
		}
		clear(q.pkts[len(kept):])
		q.pkts = kept
		if q.len() == 0 {
			q.pkts, q.head = q.pkts[:0], 0
		}
	}
	r.mu.Unlock()
	for _, p := range release {
		p.conn.Release(len(p.pkt.Data))
	}
}

func (r *recvQueues) droppedCount() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// close wakes every Receive; later pushes are dropped.
func (r *recvQueues) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		close(r.closedCh)
		r.chans = map[int]*chanQueue{}
	}
}
