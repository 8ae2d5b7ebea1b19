package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/turn/v4"
)

// Transport is how a client reaches its TURN server.
type Transport uint8

const (
	UDP Transport = 1
	TCP Transport = 2
	TLS Transport = 3 // TCP with TLS (turns:)
)

func (t Transport) String() string {
	switch t {
	case UDP:
		return "udp"
	case TCP:
		return "tcp"
	case TLS:
		return "tls"
	}
	return fmt.Sprintf("transport(%d)", uint8(t))
}

// Client limits.
const (
	DefaultQueueLen = 512
	// MaxDatagram is the largest datagram a client relays: TURN's 1600-byte
	// inbound MTU (pion's default) less its headers.
	MaxDatagram  = 1500
	readBufSize  = 64 << 10 // a TCP frame can be up to 64 KiB
	relayBufSize = 2048
)

// ClientConfig configures a Client. Zero values select the documented
// defaults.
type ClientConfig struct {
	// Server is the TURN server's address; Transport how to reach it
	// (zero means UDP).
	Server    netip.AddrPort
	Transport Transport
	// TLSConfig is used for TLS; its ServerName must name the server.
	TLSConfig *tls.Config

	Credentials Credentials

	// ListenPacket opens the client's UDP socket; nil means
	// net.ListenPacket. LocalIP is the address it binds to ("" any).
	ListenPacket func(network, address string) (net.PacketConn, error)
	LocalIP      string
	// Dial opens TCP connections; nil means a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// Receive is called on the relayed reader's goroutine with every
	// datagram a peer sent to the relayed address. b is only valid during
	// the call.
	Receive func(b []byte, from netip.AddrPort)

	// QueueLen bounds the datagrams waiting to be written. Zero means
	// DefaultQueueLen.
	QueueLen int

	// Logger receives logs (pion's included). Nil means silent.
	Logger *slog.Logger
}

// Client holds one allocation on a TURN server. All methods are safe for
// concurrent use.
type Client struct {
	cfg      ClientConfig
	base     net.PacketConn // the socket or stream to the server
	tc       *turn.Client
	relayed  net.PacketConn
	addr     netip.AddrPort
	queue    chan outbound
	pool     sync.Pool
	done     chan struct{}
	baseDone chan struct{} // closed when the connection to the server ends
	once     sync.Once
	wg       sync.WaitGroup
	stats    clientCounters
}

type outbound struct {
	buf *[]byte
	to  netip.AddrPort
}

// Allocate connects to the server and makes an allocation. It returns
// when the allocation exists, or fails when ctx ends first.
func Allocate(ctx context.Context, cfg ClientConfig) (*Client, error) {
	if cfg.Credentials.Username == "" || cfg.Credentials.Password == "" {
		return nil, ErrNoCredentials
	}
	if cfg.Transport == 0 {
		cfg.Transport = UDP
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	cfg.Logger = quiet(cfg.Logger)
	base, err := openBase(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	tc, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: cfg.Server.String(),
		TURNServerAddr: cfg.Server.String(),
		Username:       cfg.Credentials.Username,
		Password:       cfg.Credentials.Password,
		Conn:           base,
		LoggerFactory:  pionLogs{cfg.Logger},
	})
	if err != nil {
		base.Close()
		return nil, err
	}
	c := &Client{cfg: cfg, base: base, tc: tc, queue: make(chan outbound, cfg.QueueLen), done: make(chan struct{}), baseDone: make(chan struct{})}
	c.wg.Add(1)
	go c.readBase()
	relayed, err := c.allocate(ctx)
	if err != nil {
		c.shutdown()
		return nil, err
	}
	c.relayed = relayed
	c.addr = addrPortOf(relayed.LocalAddr())
	c.wg.Add(2)
	go c.readRelayed()
	go c.writeLoop()
	return c, nil
}

func openBase(ctx context.Context, cfg *ClientConfig) (net.PacketConn, error) {
	switch cfg.Transport {
	case UDP:
		listen := cfg.ListenPacket
		if listen == nil {
			listen = net.ListenPacket
		}
		return listen("udp4", net.JoinHostPort(cfg.LocalIP, "0"))
	case TCP, TLS:
		dial := cfg.Dial
		if dial == nil {
			dial = (&net.Dialer{}).DialContext
		}
		conn, err := dial(ctx, "tcp", cfg.Server.String())
		if err != nil {
			return nil, err
		}
		if cfg.Transport == TLS {
			tconn := tls.Client(conn, cfg.TLSConfig)
			if err := tconn.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, err
			}
			conn = tconn
		}
		return turn.NewSTUNConn(conn), nil
	}
	return nil, errBadTransport
}

// allocate runs pion's blocking Allocate, giving up when ctx ends: closing
// the client fails its transactions.
func (c *Client) allocate(ctx context.Context) (net.PacketConn, error) {
	type result struct {
		pc  net.PacketConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		pc, err := c.tc.Allocate()
		ch <- result{pc, err}
	}()
	select {
	case r := <-ch:
		return r.pc, r.err
	case <-ctx.Done():
		c.tc.Close()
		c.base.Close()
		if r := <-ch; r.pc != nil {
			r.pc.Close()
		}
		return nil, ctx.Err()
	}
}

// readBase feeds everything the server sends to the TURN client. Unlike
// pion's Listen loop it survives malformed packets: they are counted.
func (c *Client) readBase() {
	defer c.wg.Done()
	defer close(c.baseDone)
	buf := make([]byte, readBufSize)
	for {
		n, from, err := c.base.ReadFrom(buf)
		if err != nil {
			return
		}
		if _, err := c.tc.HandleInbound(buf[:n], from); err != nil {
			c.stats.malformed.Add(1)
		}
	}
}

func (c *Client) readRelayed() {
	defer c.wg.Done()
	buf := make([]byte, relayBufSize)
	for {
		n, from, err := c.relayed.ReadFrom(buf)
		if err != nil {
			return
		}
		c.stats.received.Add(1)
		c.stats.bytesIn.Add(uint64(n))
		if c.cfg.Receive != nil {
			c.cfg.Receive(buf[:n], addrPortOf(from))
		}
	}
}

func (c *Client) writeLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.done:
			return
		case o := <-c.queue:
			b := *o.buf
			if _, err := c.relayed.WriteTo(b, net.UDPAddrFromAddrPort(o.to)); err != nil {
				c.stats.writeErrors.Add(1)
			} else {
				c.stats.sent.Add(1)
				c.stats.bytesOut.Add(uint64(len(b)))
			}
			c.pool.Put(o.buf)
		}
	}
}

// RelayedAddr is the allocation's address on the server: where peers send
// to reach this client.
func (c *Client) RelayedAddr() netip.AddrPort { return c.addr }

// Server is the TURN server's address and Transport how it is reached.
func (c *Client) Server() (netip.AddrPort, Transport) { return c.cfg.Server, c.cfg.Transport }

// WriteTo queues b for to through the allocation. It never blocks: when
// the queue is full the datagram is dropped and ErrQueueFull returned. The
// first datagram to a new peer IP installs a permission for it.
func (c *Client) WriteTo(b []byte, to netip.AddrPort) error {
	if len(b) > MaxDatagram {
		return ErrTooLarge
	}
	select {
	case <-c.done:
		return ErrClosed
	default:
	}
	buf, ok := c.pool.Get().(*[]byte)
	if !ok {
		nb := make([]byte, 0, MaxDatagram)
		buf = &nb
	}
	*buf = append((*buf)[:0], b...)
	select {
	case c.queue <- outbound{buf: buf, to: to}:
		return nil
	default:
		c.pool.Put(buf)
		c.stats.dropped.Add(1)
		return ErrQueueFull
	}
}

// Permit installs permissions for peers' IPs, so their datagrams reach
// this client before it has sent them anything. It blocks for a round trip
// to the server.
func (c *Client) Permit(peers ...netip.AddrPort) error {
	addrs := make([]net.Addr, len(peers))
	for i, p := range peers {
		addrs[i] = net.UDPAddrFromAddrPort(p)
	}
	return c.tc.CreatePermission(addrs...)
}

// Close releases the allocation (a refresh with lifetime zero, not waited
// for) and stops the client's goroutines.
func (c *Client) Close() error {
	c.shutdown()
	return nil
}

func (c *Client) shutdown() {
	c.once.Do(func() {
		close(c.done)
		if c.relayed != nil {
			c.relayed.Close()
		}
		c.tc.Close()
		c.base.Close()
		c.wg.Wait()
	})
}

// Done is closed when the client is closed.
func (c *Client) Done() <-chan struct{} { return c.done }

// ClientStats counts a client's traffic.
type ClientStats struct {
	Sent, Received, Dropped, WriteErrors, Malformed uint64
	BytesOut, BytesIn                               uint64
}

type clientCounters struct {
	sent, received, dropped, writeErrors, malformed atomic.Uint64
	bytesOut, bytesIn                               atomic.Uint64
}

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	s := &c.stats
	return ClientStats{
		Sent: s.sent.Load(), Received: s.received.Load(), Dropped: s.dropped.Load(),
		WriteErrors: s.writeErrors.Load(), Malformed: s.malformed.Load(),
		BytesOut: s.bytesOut.Load(), BytesIn: s.bytesIn.Load(),
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ua, ok := a.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
