package p2p

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// memNet is an in-memory datagram network for tests inside synctest
// bubbles: PacketConns on fake addresses, optional per-datagram delay, a
// filter that can drop or rewrite datagrams, and taps that see them.
type memNet struct {
	mu     sync.Mutex
	conns  map[netip.AddrPort]*memConn
	delay  time.Duration
	filter func(from, to netip.AddrPort, b []byte) []byte // nil result drops
	next   uint16
}

func newMemNet(delay time.Duration) *memNet {
	return &memNet{conns: make(map[netip.AddrPort]*memConn), delay: delay, next: 1}
}

// listen returns a PacketConn at 10.0.0.host:port (port 0: next free).
func (m *memNet) listen(host byte, port uint16) *memConn {
	m.mu.Lock()
	defer m.mu.Unlock()
	if port == 0 {
		port = 40000 + m.next
		m.next++
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, host}), port)
	c := &memConn{net: m, addr: addr, in: make(chan memPkt, 1024), closed: make(chan struct{})}
	m.conns[addr] = c
	return c
}

func (m *memNet) setFilter(f func(from, to netip.AddrPort, b []byte) []byte) {
	m.mu.Lock()
	m.filter = f
	m.mu.Unlock()
}

type memPkt struct {
	from netip.AddrPort
	data []byte
}

func (m *memNet) send(from, to netip.AddrPort, b []byte) {
	m.mu.Lock()
	dst, f, delay := m.conns[to], m.filter, m.delay
	m.mu.Unlock()
	b = append([]byte(nil), b...)
	if f != nil {
		if b = f(from, to, b); b == nil {
			return
		}
	}
	if dst == nil {
		return
	}
	deliver := func() {
		select {
		case dst.in <- memPkt{from: from, data: b}:
		case <-dst.closed:
		default: // the receiver's queue is full: lost
		}
	}
	if delay == 0 {
		deliver()
		return
	}
	time.AfterFunc(delay, deliver)
}

// memConn is a net.PacketConn on a memNet.
type memConn struct {
	net    *memNet
	addr   netip.AddrPort
	in     chan memPkt
	once   sync.Once
	closed chan struct{}

	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{} // closed when the deadline changes
}

func (c *memConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl := c.deadline
		if c.wake == nil {
			c.wake = make(chan struct{})
		}
		wake := c.wake
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case pkt := <-c.in:
			n := copy(p, pkt.data)
			return n, net.UDPAddrFromAddrPort(pkt.from), nil
		case <-c.closed:
			return 0, nil, net.ErrClosed
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		case <-wake:
		}
	}
}

func (c *memConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.AddrError{Err: "not a UDP address", Addr: addr.String()}
	}
	ap := ua.AddrPort()
	c.net.send(c.addr, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), p)
	return len(p), nil
}

func (c *memConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.net.mu.Lock()
		delete(c.net.conns, c.addr)
		c.net.mu.Unlock()
	})
	return nil
}

func (c *memConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.addr) }

func (c *memConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
	c.mu.Unlock()
	return nil
}

func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
