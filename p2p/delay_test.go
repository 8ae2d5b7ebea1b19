package p2p

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// delayConn holds every datagram it sends for a fixed time before writing
// it: the labs have no netem, and connect time is counted in round trips,
// so tests give nodes and the server a known one-way delay this way.
type delayConn struct {
	net.PacketConn
	delay time.Duration
	q     chan delayed
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup

	dropped atomic.Int64 // datagrams dropped: the queue was full
}

type delayed struct {
	at  time.Time
	b   []byte
	to  net.Addr
	oob []byte         // WriteMsgUDPAddrPort's, with ap
	ap  netip.AddrPort // set for WriteMsgUDPAddrPort
}

// delayQueue bounds the datagrams held: enough for a birthday spray.
const delayQueue = 8192

func newDelayConn(pc net.PacketConn, d time.Duration) *delayConn {
	c := &delayConn{PacketConn: pc, delay: d, q: make(chan delayed, delayQueue), done: make(chan struct{})}
	c.wg.Add(1)
	go c.run()
	return c
}

func (c *delayConn) WriteTo(b []byte, to net.Addr) (int, error) {
	select {
	case c.q <- delayed{at: time.Now().Add(c.delay), b: append([]byte(nil), b...), to: to}:
	case <-c.done:
		return 0, net.ErrClosed
	default:
		c.dropped.Add(1)
	}
	return len(b), nil
}

// WriteMsgUDPAddrPort delays a datagram with ancillary data (a primer's
// TTL) as WriteTo does, if the wrapped socket takes them.
func (c *delayConn) WriteMsgUDPAddrPort(b, oob []byte, ap netip.AddrPort) (int, int, error) {
	if _, ok := c.PacketConn.(msgWriter); !ok {
		return 0, 0, errors.ErrUnsupported
	}
	select {
	case c.q <- delayed{at: time.Now().Add(c.delay), b: append([]byte(nil), b...), oob: append([]byte(nil), oob...), ap: ap}:
	case <-c.done:
		return 0, 0, net.ErrClosed
	default:
		c.dropped.Add(1)
	}
	return len(b), len(oob), nil
}

type msgWriter interface {
	WriteMsgUDPAddrPort(b, oob []byte, addr netip.AddrPort) (n, oobn int, err error)
}

// run writes the datagrams in order; the delay is constant, so the queue is
// sorted by due time.
func (c *delayConn) run() {
	defer c.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case d := <-c.q:
			if wait := time.Until(d.at); wait > 0 {
				t.Reset(wait)
				select {
				case <-c.done:
					return
				case <-t.C:
				}
			}
			if d.ap.IsValid() {
				c.PacketConn.(msgWriter).WriteMsgUDPAddrPort(d.b, d.oob, d.ap)
				continue
			}
			c.PacketConn.WriteTo(d.b, d.to)
		}
	}
}

func (c *delayConn) Close() error {
	c.once.Do(func() { close(c.done) })
	c.wg.Wait()
	return c.PacketConn.Close()
}
