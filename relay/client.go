package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
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

	// DefaultCheckInterval and DefaultCheckTimeout: how often a client
	// refreshes its allocation itself, and how long it waits for the
	// answer before it counts the allocation dead.
	DefaultCheckInterval = 15 * time.Second
	DefaultCheckTimeout  = 3 * time.Second
	// checkGap is the least time between two checks that Check (or a
	// failure pion logged) asked for.
	checkGap = time.Second
	// authTries bounds the attempts of one check: the first may lack a
	// nonce (401), and a nonce may go stale (438).
	authTries = 3
)

// ClientConfig configures a Client. Zero values select the documented
// defaults.
type ClientConfig struct {
	// Server is the TURN server's address, IPv4 or IPv6; Transport how to
	// reach it (zero means UDP).
	Server    netip.AddrPort
	Transport Transport
	// TLSConfig is used for TLS; its ServerName must name the server.
	TLSConfig *tls.Config

	Credentials Credentials

	// ListenPacket opens the client's UDP socket ("udp4", or "udp6" for
	// an IPv6 Server); nil means net.ListenPacket. LocalIP is the address
	// it binds to: "" or an unspecified address (0.0.0.0 or ::) is any
	// address of the server's family, and another address must be of
	// that family.
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

	// CheckInterval is how often the client refreshes its allocation
	// itself, to learn that it still exists; CheckTimeout bounds the wait
	// for the server's answer, past which the allocation counts as dead
	// (Dead). Zero (or less) means DefaultCheckInterval and
	// DefaultCheckTimeout. Check runs one at once. A check within
	// CheckTimeout survives lost datagrams: pion retransmits every 200,
	// 400, 800 ms and then 1.6 s.
	CheckInterval, CheckTimeout time.Duration

	// Logger receives logs (pion's included). Nil means silent.
	Logger *slog.Logger
}

// Client holds one allocation on a TURN server. All methods are safe for
// concurrent use.
//
// A client finds out when its allocation is dead, and says so (Dead, Err):
// its own refreshes (every CheckInterval, or Check) go unanswered for
// CheckTimeout or are refused (437 Allocation Mismatch, 403, 401 with
// our credentials, any error but a stale nonce), a CreatePermission is
// answered 437, or the TCP or TLS connection to the server ends. pion runs
// its own refresh timers (allocation, permissions, channel bindings) and
// only logs their failures; those log lines make the client check at once.
// A server that restarted has forgotten every allocation: gamewire's
// (pion's) server then answers nothing, coturn 437.
type Client struct {
	cfg       ClientConfig
	base      net.PacketConn // the socket or stream to the server
	tc        *turn.Client
	relayed   net.PacketConn
	addr      netip.AddrPort
	integrity stun.MessageIntegrity // read-only once allocated
	queue     chan outbound
	pool      sync.Pool
	done      chan struct{}
	baseDone  chan struct{} // closed when the connection to the server ends
	once      sync.Once
	wg        sync.WaitGroup
	stats     clientCounters

	checkNow chan struct{} // one pending request for a check
	dead     chan struct{} // closed when the allocation is found dead
	deadOnce sync.Once
	mu       sync.Mutex // guards the fields below
	nonce    stun.Nonce // the server's, for the client's own requests
	err      error      // why the allocation is dead
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
	cfg.Server = netip.AddrPortFrom(cfg.Server.Addr().Unmap(), cfg.Server.Port())
	if cfg.Transport == 0 {
		cfg.Transport = UDP
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = DefaultCheckTimeout
	}
	cfg.Logger = quiet(cfg.Logger)
	base, err := openBase(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, base: base, queue: make(chan outbound, cfg.QueueLen), done: make(chan struct{}), baseDone: make(chan struct{}),
		checkNow: make(chan struct{}, 1), dead: make(chan struct{})}
	pionNet, err := stdnet.NewNet()
	if err != nil {
		base.Close()
		return nil, err
	}
	tc, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: cfg.Server.String(),
		TURNServerAddr: cfg.Server.String(),
		Username:       cfg.Credentials.Username,
		Password:       cfg.Credentials.Password,
		Conn:           base,
		Net:            literalNet{pionNet},
		LoggerFactory:  pionLogs{log: cfg.Logger, failed: c.Check},
	})
	if err != nil {
		base.Close()
		return nil, err
	}
	c.tc = tc
	c.wg.Add(1)
	go c.readBase()
	relayed, err := c.allocate(ctx)
	if err != nil {
		c.shutdown()
		return nil, err
	}
	c.relayed = relayed
	c.addr = addrPortOf(relayed.LocalAddr())
	c.integrity = stun.NewLongTermIntegrity(cfg.Credentials.Username, tc.Realm().String(), cfg.Credentials.Password)
	c.wg.Add(3)
	go c.readRelayed()
	go c.writeLoop()
	go c.checkLoop()
	return c, nil
}

// literalNet is pion's network with ResolveUDPAddr taking an IP literal
// of either family as it is: pion's client resolves its server's address
// as "udp4", which refuses an IPv6 one.
type literalNet struct{ transport.Net }

func (n literalNet) ResolveUDPAddr(network, address string) (*net.UDPAddr, error) {
	if ap, err := netip.ParseAddrPort(address); err == nil {
		return net.UDPAddrFromAddrPort(ap), nil
	}
	return n.Net.ResolveUDPAddr(network, address)
}

func openBase(ctx context.Context, cfg *ClientConfig) (net.PacketConn, error) {
	switch cfg.Transport {
	case UDP:
		listen := cfg.ListenPacket
		if listen == nil {
			listen = net.ListenPacket
		}
		network, local := "udp4", cfg.LocalIP
		if cfg.Server.Addr().Is6() {
			network = "udp6"
		}
		if ip, err := netip.ParseAddr(local); err == nil {
			switch {
			case ip.IsUnspecified():
				local = "" // any address, of the server's family
			case familyOf(ip) != familyOf(cfg.Server.Addr()):
				return nil, fmt.Errorf("relay: LocalIP %v cannot reach the TURN server %v, of the other address family", ip, cfg.Server)
			}
		}
		return listen(network, net.JoinHostPort(local, "0"))
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
			c.die(fmt.Errorf("connection to the server ended: %w", err))
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
	case <-c.dead:
		return c.Err()
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
// to the server. An answer 437 (Allocation Mismatch) means the allocation
// is dead (Dead); other refusals (403 for a peer the server's policy
// denies) concern the peers only.
func (c *Client) Permit(peers ...netip.AddrPort) error {
	select {
	case <-c.dead:
		return c.Err()
	default:
	}
	addrs := make([]net.Addr, len(peers))
	for i, p := range peers {
		addrs[i] = net.UDPAddrFromAddrPort(p)
	}
	err := c.tc.CreatePermission(addrs...)
	if code, ok := turnCode(err); ok && code == stun.CodeAllocMismatch {
		c.die(fmt.Errorf("CreatePermission: %w", err))
	}
	return err
}

// Check asks for a check of the allocation now (a refresh, see
// ClientConfig.CheckInterval), e.g. when traffic through it has stopped;
// it does not wait. Checks asked for this way run at most once a second.
func (c *Client) Check() {
	select {
	case c.checkNow <- struct{}{}:
	default: // one is pending already
	}
}

// Dead is closed when the allocation is found dead (see Client); Err
// then says why. The client stays open, refusing writes, until closed: a
// new allocation takes a new Client.
func (c *Client) Dead() <-chan struct{} { return c.dead }

// Err reports why the allocation is dead: an error matching ErrDead, and
// the cause. It is nil while the allocation is thought alive, and after a
// Close of a live one.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// die records that the allocation is dead, once; a closed client does not
// die.
func (c *Client) die(cause error) {
	select {
	case <-c.done:
		return
	default:
	}
	c.deadOnce.Do(func() {
		c.mu.Lock()
		c.err = fmt.Errorf("%w: %w", ErrDead, cause)
		c.mu.Unlock()
		c.cfg.Logger.Debug("relay: allocation dead", "server", c.cfg.Server, "transport", c.cfg.Transport, "err", cause)
		close(c.dead)
	})
}

// checkLoop refreshes the allocation every CheckInterval, and when Check
// asks (at most once per checkGap), until it is closed or found dead.
func (c *Client) checkLoop() {
	defer c.wg.Done()
	gap := min(checkGap, c.cfg.CheckInterval)
	var last time.Time
	next := time.Now().Add(c.cfg.CheckInterval)
	t := time.NewTimer(c.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.dead:
			return
		case <-c.checkNow:
			if soon := last.Add(gap); soon.Before(next) {
				next = soon
				t.Reset(time.Until(next))
			}
			continue
		case <-t.C:
		}
		last = time.Now()
		if err := c.check(); err != nil {
			c.die(err)
			return
		}
		next = time.Now().Add(c.cfg.CheckInterval)
		t.Reset(c.cfg.CheckInterval)
	}
}

// check refreshes the allocation and waits CheckTimeout for the answer.
// The refresh goroutine ends with pion's transaction, at the latest when
// Close closes the TURN client.
func (c *Client) check() error {
	res := make(chan error, 1)
	c.wg.Add(1) // the loop's count is held: no Wait has returned
	go func() {
		defer c.wg.Done()
		_, err := c.request(stun.MethodRefresh)
		res <- err
	}()
	timeout := time.NewTimer(c.cfg.CheckTimeout)
	defer timeout.Stop()
	select {
	case err := <-res:
		if err != nil {
			return fmt.Errorf("refresh: %w", err)
		}
		c.stats.checks.Add(1)
		return nil
	case <-timeout.C:
		return fmt.Errorf("refresh unanswered for %v", c.cfg.CheckTimeout)
	case <-c.done:
		return nil
	}
}

// request runs an authenticated request on the allocation's five-tuple,
// with the client's own nonce: pion keeps the allocation's to itself. It
// learns a nonce from a 401 or 438 answer and tries again, authTries
// times in all. A refusal comes back as a stun.TurnError.
func (c *Client) request(method stun.Method, setters ...stun.Setter) (*stun.Message, error) {
	for range authTries {
		c.mu.Lock()
		nonce := c.nonce
		c.mu.Unlock()
		attrs := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, setters...)
		if nonce != nil {
			attrs = append(attrs, c.tc.Username(), c.tc.Realm(), nonce, c.integrity)
		}
		msg, err := stun.Build(append(attrs, stun.Fingerprint)...)
		if err != nil {
			return nil, err
		}
		tr, err := c.tc.PerformTransaction(msg, c.tc.TURNServerAddr(), false)
		if err != nil {
			return nil, err
		}
		res := tr.Msg
		if res.Type.Class != stun.ClassErrorResponse {
			if err := c.integrity.Check(res); err != nil {
				return nil, fmt.Errorf("answer fails its integrity check: %w", err)
			}
			return res, nil
		}
		var code stun.ErrorCodeAttribute
		if err := code.GetFrom(res); err != nil {
			return nil, fmt.Errorf("%v without an error code", res.Type)
		}
		var fresh stun.Nonce
		if (code.Code == stun.CodeStaleNonce || (code.Code == stun.CodeUnauthorized && nonce == nil)) && fresh.GetFrom(res) == nil {
			c.mu.Lock()
			c.nonce = fresh
			c.mu.Unlock()
			continue
		}
		return nil, stun.TurnError{StunMessageType: res.Type, ErrorCodeAttr: code}
	}
	return nil, errNonceRefused
}

// turnCode is the error code of a TURN refusal.
func turnCode(err error) (stun.ErrorCode, bool) {
	var te stun.TurnError
	if errors.As(err, &te) {
		return te.ErrorCodeAttr.Code, true
	}
	var pte *stun.TurnError
	if errors.As(err, &pte) && pte != nil {
		return pte.ErrorCodeAttr.Code, true
	}
	return 0, false
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

// ClientStats counts a client's traffic, and its checks that the
// allocation lives (refreshes answered).
type ClientStats struct {
	Sent, Received, Dropped, WriteErrors, Malformed uint64
	BytesOut, BytesIn                               uint64
	Checks                                          uint64
}

type clientCounters struct {
	sent, received, dropped, writeErrors, malformed atomic.Uint64
	bytesOut, bytesIn                               atomic.Uint64
	checks                                          atomic.Uint64
}

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	s := &c.stats
	return ClientStats{
		Sent: s.sent.Load(), Received: s.received.Load(), Dropped: s.dropped.Load(),
		WriteErrors: s.writeErrors.Load(), Malformed: s.malformed.Load(),
		BytesOut: s.bytesOut.Load(), BytesIn: s.bytesIn.Load(),
		Checks: s.checks.Load(),
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
