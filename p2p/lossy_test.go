package p2p

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lossyConn is a PacketConn whose sends go through a bad path: each
// datagram is lost with probability loss, sent twice with probability dup,
// and held for delay plus a uniform jitter (so datagrams reorder). It
// stands in for netem, which these machines lack.
type lossyConn struct {
	net.PacketConn
	loss, dup     float64
	delay, jitter time.Duration

	mu      sync.Mutex
	rng     *rand.Rand
	closed  bool
	wg      sync.WaitGroup
	pending atomic.Int64
	lost    atomic.Int64
}

// lossyPending bounds the datagrams held, as a router's queue would.
const lossyPending = 16384

func newLossyConn(pc net.PacketConn, seed uint64, loss, dup float64, delay, jitter time.Duration) *lossyConn {
	return &lossyConn{PacketConn: pc, loss: loss, dup: dup, delay: delay, jitter: jitter, rng: rand.New(rand.NewPCG(seed, 1))}
}

func (c *lossyConn) WriteTo(b []byte, to net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	if c.rng.Float64() < c.loss {
		c.lost.Add(1)
		return len(b), nil
	}
	copies := 1
	if c.rng.Float64() < c.dup {
		copies = 2
	}
	for range copies {
		if c.pending.Load() >= lossyPending {
			c.lost.Add(1)
			continue
		}
		d := c.delay + time.Duration(c.rng.Int64N(int64(c.jitter)+1))
		buf := append([]byte(nil), b...)
		c.pending.Add(1)
		c.wg.Add(1)
		time.AfterFunc(d, func() {
			defer c.wg.Done()
			defer c.pending.Add(-1)
			c.PacketConn.WriteTo(buf, to)
		})
	}
	return len(b), nil
}

// Close waits for the datagrams held to be written (or fail), then closes.
func (c *lossyConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
	return c.PacketConn.Close()
}

// loopbackNodeOn starts a Node on pc, a socket on loopback.
func loopbackNodeOn(t *testing.T, pc net.PacketConn, cfg Config) *Node {
	t.Helper()
	cfg.PacketConn = pc
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}
