package portmap

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Protocol is a port mapping protocol.
type Protocol string

const (
	PCP    Protocol = "pcp"     // Port Control Protocol, RFC 6887
	NATPMP Protocol = "nat-pmp" // NAT Port Mapping Protocol, RFC 6886
	UPnP   Protocol = "upnp"    // UPnP Internet Gateway Device, WANIPConnection / WANPPPConnection
)

// defaultProtocols is Config.Protocols when it is empty.
var defaultProtocols = []Protocol{PCP, NATPMP, UPnP}

const (
	// DefaultLifetime is Config.Lifetime when it is zero: RFC 6886's
	// recommended mapping lifetime.
	DefaultLifetime = 2 * time.Hour
	// MinLifetime is the shortest Config.Lifetime New accepts.
	MinLifetime = 2 * time.Second
	// DefaultDescription labels UPnP mappings when Config.Description is
	// empty.
	DefaultDescription = "gamewire"
)

// Retry intervals of the Client's goroutine once a mapping is lost.
const (
	retryMin = 30 * time.Second
	retryMax = 10 * time.Minute
	// opTimeout bounds one renewal or re-mapping by the Client's
	// goroutine (discovery of three protocols included).
	opTimeout = 30 * time.Second
)

// Config configures a Client.
type Config struct {
	// LocalPort is the UDP port of the socket to map (the node's main
	// socket). Required.
	LocalPort uint16
	// LocalAddr is the LAN address of that socket. Zero: the address the
	// system would send to the gateway from (a socket bound to 0.0.0.0).
	// When set, requests are sent from it, and it must be the address
	// that reaches the gateway (PCP and UPnP's secure mode map to the
	// request's source address).
	LocalAddr netip.Addr
	// Gateway is the router to ask. Zero: the IPv4 default route's next
	// hop (DefaultGateway), looked up again whenever a mapping is made
	// afresh. Only IPv4 is supported.
	Gateway netip.Addr
	// Protocols are the protocols to use, in order of preference. Empty
	// means PCP, NAT-PMP, UPnP. With more than one, Map first asks all of
	// them at once whether the gateway speaks them (Probe), then maps with
	// the first one that does, falling back to the next on failure.
	Protocols []Protocol
	// Lifetime is the mapping lifetime to ask for; gateways may grant
	// less or more. The Client renews at half the granted lifetime. Zero
	// means DefaultLifetime; at least MinLifetime. UPnP leases are capped
	// at 604800 s; a gateway that only keeps permanent UPnP mappings gets
	// one (Mapping.Expires zero), which Close deletes.
	Lifetime time.Duration
	// Description labels UPnP mappings in the router's table. Empty means
	// DefaultDescription.
	Description string
	// OnChange, if set, is called when the current mapping's external
	// address changes after Map returned it: a renewal that got another
	// address or port, the mapping lost (an invalid Mapping, its
	// Protocol that of the mapping lost), or a new mapping made after a
	// loss. Calls come from the Client's goroutine, one at a time, never
	// after Close has returned; a call must not block for long, nor call
	// Close.
	OnChange func(Mapping)
	// Logger receives debug and warning logs. Nil is silent.
	Logger *slog.Logger
	// Dial opens UDP ("udp4") connections to the gateway for PCP and
	// NAT-PMP and TCP connections for UPnP's HTTP, to address literals.
	// Nil: a net.Dialer, bound to LocalAddr when set.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// ListenPacket opens the UDP socket SSDP searches are sent from
	// ("udp4", "<LocalAddr>:0" or ":0"); it must not be connected, since
	// answers come from the gateway's address to a multicast search. Nil:
	// net.ListenConfig.
	ListenPacket func(ctx context.Context, network, address string) (net.PacketConn, error)
}

// Mapping is a port mapping on the gateway.
type Mapping struct {
	Protocol Protocol
	// External is the address and port the gateway forwards to Internal:
	// the candidate to give peers. Its address may itself be private or
	// shared (a gateway behind another NAT); compare it with what STUN
	// reports before relying on it.
	External netip.AddrPort
	Internal netip.AddrPort // the local socket's LAN address and port
	Gateway  netip.Addr     // the router that holds the mapping
	// Lifetime is what the gateway granted; Expires is when the mapping
	// ends unless renewed (zero: a permanent UPnP mapping).
	Lifetime time.Duration
	Expires  time.Time
}

// Valid reports whether m is a mapping (the zero Mapping, and the one
// OnChange reports a loss with, are not).
func (m Mapping) Valid() bool { return m.External.IsValid() }

// Availability says which protocols the gateway answered (Probe).
type Availability struct {
	Gateway netip.Addr
	PCP     bool
	NATPMP  bool
	UPnP    bool
}

// Stats are a Client's counters.
type Stats struct {
	// Dropped counts datagrams ignored while waiting for an answer:
	// malformed ones, answers with another nonce, opcode or port, SSDP
	// answers from other addresses or for other targets.
	Dropped uint64
	// Renewals counts successful renewals; Lost counts mappings that
	// ended because renewals failed until they expired.
	Renewals uint64
	Lost     uint64
}

// Client maps one local UDP port on the gateway and keeps the mapping.
//
// Goroutine ownership: the first Map that succeeds starts the Client's
// one goroutine, which renews the mapping at half its lifetime, makes a
// new one when it is lost (retrying every 30 s, backing off to 10 min),
// and calls Config.OnChange. Close ends it and waits for it. All methods
// are safe for concurrent use; gateway operations (Map, renewals, the
// deletion in Close) run one at a time.
type Client struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // ended by Close
	cancel context.CancelFunc
	sem    chan struct{} // held during a gateway operation
	wake   chan struct{} // tells the goroutine the mapping changed
	done   chan struct{} // closed when the goroutine ends

	mu        sync.Mutex
	closed    bool
	started   bool
	cur       *mapping
	announced netip.AddrPort // the external address the user last learnt (Map or OnChange)
	annProto  Protocol       // and its protocol
	upnp      *upnpService   // found by the last discovery
	retry     time.Duration  // the goroutine's wait after a failed re-mapping

	dropped  atomic.Uint64
	renewals atomic.Uint64
	lost     atomic.Uint64
}

// mapping is a Mapping plus what renewing and deleting it need.
type mapping struct {
	Mapping
	renewAt time.Time
	// deadline is when failed renewals make it lost: Expires, or for a
	// permanent UPnP mapping a Lifetime after it was last re-added (the
	// gateway may be gone).
	deadline time.Time
	nonce    [12]byte     // PCP
	upnp     *upnpService // UPnP
}

// New returns a Client for cfg. It sends nothing: Map does.
func New(cfg Config) (*Client, error) {
	if cfg.LocalPort == 0 {
		return nil, errors.New("portmap: Config.LocalPort is required")
	}
	if cfg.LocalAddr.IsValid() && !cfg.LocalAddr.Unmap().Is4() {
		return nil, fmt.Errorf("portmap: LocalAddr %v: only IPv4 is supported", cfg.LocalAddr)
	}
	if cfg.Gateway.IsValid() && !cfg.Gateway.Unmap().Is4() {
		return nil, fmt.Errorf("portmap: Gateway %v: only IPv4 is supported", cfg.Gateway)
	}
	cfg.LocalAddr, cfg.Gateway = cfg.LocalAddr.Unmap(), cfg.Gateway.Unmap()
	if len(cfg.Protocols) == 0 {
		cfg.Protocols = defaultProtocols
	}
	seen := map[Protocol]bool{}
	for _, p := range cfg.Protocols {
		if p != PCP && p != NATPMP && p != UPnP {
			return nil, fmt.Errorf("portmap: unknown protocol %q", p)
		}
		if seen[p] {
			return nil, fmt.Errorf("portmap: protocol %q listed twice", p)
		}
		seen[p] = true
	}
	cfg.Protocols = append([]Protocol(nil), cfg.Protocols...)
	if cfg.Lifetime == 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.Lifetime < MinLifetime {
		return nil, fmt.Errorf("portmap: Lifetime %v: at least %v", cfg.Lifetime, MinLifetime)
	}
	if cfg.Description == "" {
		cfg.Description = DefaultDescription
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{
		cfg:    cfg,
		log:    cfg.Logger.With("port", cfg.LocalPort),
		ctx:    ctx,
		cancel: cancel,
		sem:    make(chan struct{}, 1),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}, nil
}

func (c *Client) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if c.cfg.Dial != nil {
		return c.cfg.Dial(ctx, network, address)
	}
	var d net.Dialer
	if c.cfg.LocalAddr.IsValid() {
		switch network {
		case "udp", "udp4":
			d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.cfg.LocalAddr, 0))
		case "tcp", "tcp4":
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(c.cfg.LocalAddr, 0))
		}
	}
	return d.DialContext(ctx, network, address)
}

func (c *Client) listenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	if c.cfg.ListenPacket != nil {
		return c.cfg.ListenPacket(ctx, network, address)
	}
	var lc net.ListenConfig
	return lc.ListenPacket(ctx, network, address)
}

// opContext returns a context that ends with ctx or with Close.
func (c *Client) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// acquire takes the gateway operation slot.
func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) release() { <-c.sem }

// closedErr returns ErrClosed if the client is closed, else err.
func (c *Client) closedErr(err error) error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	return err
}

// Map returns the current mapping, or makes one: with each protocol of
// Config.Protocols in turn (those the gateway answers first, when there
// are several) until one succeeds. On success the Client keeps the
// mapping, renewing it, until Close. ctx bounds the attempt; without a
// deadline each protocol gives up after its retransmission schedule
// (PCP, NAT-PMP: 3.75 s; UPnP: 2 s for SSDP, 5 s per HTTP request). The
// error joins each protocol's (match with errors.Is: ErrNoResponse,
// ErrUnsupported, ErrUntrustedURL, *ResultError, ...).
func (c *Client) Map(ctx context.Context) (Mapping, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if err := c.acquire(ctx); err != nil {
		return Mapping{}, c.closedErr(err)
	}
	defer c.release()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Mapping{}, ErrClosed
	}
	if cur := c.cur; cur != nil && time.Now().Before(cur.deadline) {
		c.announced, c.annProto = cur.External, cur.Protocol
		c.mu.Unlock()
		return cur.Mapping, nil
	}
	c.mu.Unlock()

	m, err := c.establish(ctx)
	if err != nil {
		return Mapping{}, c.closedErr(err)
	}
	c.mu.Lock()
	c.cur, c.announced, c.annProto, c.retry = m, m.External, m.Protocol, 0
	closed := c.closed
	if !c.started && !closed {
		c.started = true
		go c.run()
	}
	c.mu.Unlock()
	if closed {
		return Mapping{}, ErrClosed // Close, waiting for this Map, deletes it
	}
	c.poke()
	c.log.Info("portmap: mapped", "protocol", m.Protocol, "external", m.External, "lifetime", m.Lifetime)
	return m.Mapping, nil
}

// Current returns the mapping the Client holds, if any.
func (c *Client) Current() (Mapping, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return Mapping{}, false
	}
	return c.cur.Mapping, true
}

// Stats returns the Client's counters.
func (c *Client) Stats() Stats {
	return Stats{Dropped: c.dropped.Load(), Renewals: c.renewals.Load(), Lost: c.lost.Load()}
}

// Probe asks the gateway, for each protocol of Config.Protocols at once,
// whether it speaks it, without mapping anything: a PCP ANNOUNCE, a
// NAT-PMP external address request, and UPnP discovery up to the WAN
// connection service's external address. The error is non-nil only when
// the gateway or the local address cannot be found or the Client is
// closed.
func (c *Client) Probe(ctx context.Context) (Availability, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	gw, local, err := c.route(ctx)
	if err != nil {
		return Availability{}, c.closedErr(err)
	}
	a, _ := c.probe(ctx, gw, local, c.cfg.Protocols)
	return a, c.closedErr(ctx.Err())
}

func (c *Client) probe(ctx context.Context, gw, local netip.Addr, protos []Protocol) (Availability, map[Protocol]error) {
	a := Availability{Gateway: gw}
	errs := map[Protocol]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range protos {
		wg.Go(func() {
			var err error
			switch p {
			case PCP:
				err = c.pcpAnnounce(ctx, gw, local)
			case NATPMP:
				_, err = c.pmpExternal(ctx, gw)
			case UPnP:
				var s *upnpService
				if s, err = c.discoverUPnP(ctx, gw, local); err == nil {
					c.mu.Lock()
					c.upnp = s
					c.mu.Unlock()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			errs[p] = err
			switch ok := err == nil; p {
			case PCP:
				a.PCP = ok
			case NATPMP:
				a.NATPMP = ok
			case UPnP:
				a.UPnP = ok
			}
		})
	}
	wg.Wait()
	return a, errs
}

// route returns the gateway and the local address that reaches it (the
// source address of a UDP socket connected to it: nothing is sent).
func (c *Client) route(ctx context.Context) (gw, local netip.Addr, err error) {
	gw = c.cfg.Gateway
	if !gw.IsValid() {
		if gw, err = DefaultGateway(); err != nil {
			return netip.Addr{}, netip.Addr{}, err
		}
	}
	conn, err := c.dialGateway(ctx, gw)
	if err != nil {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("portmap: no route to gateway %v: %w", gw, err)
	}
	defer conn.Close()
	ap, err := netip.ParseAddrPort(conn.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("portmap: local address: %w", err)
	}
	local = ap.Addr().Unmap()
	if c.cfg.LocalAddr.IsValid() && local != c.cfg.LocalAddr {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("portmap: gateway %v is reached from %v, not LocalAddr %v", gw, local, c.cfg.LocalAddr)
	}
	return gw, local, nil
}

// establish makes a new mapping.
func (c *Client) establish(ctx context.Context) (*mapping, error) {
	gw, local, err := c.route(ctx)
	if err != nil {
		return nil, err
	}
	protos := c.cfg.Protocols
	var probeErrs map[Protocol]error
	if len(protos) > 1 {
		var a Availability
		a, probeErrs = c.probe(ctx, gw, local, protos)
		var avail []Protocol
		for _, p := range protos {
			if (p == PCP && a.PCP) || (p == NATPMP && a.NATPMP) || (p == UPnP && a.UPnP) {
				avail = append(avail, p)
			}
		}
		if len(avail) == 0 {
			var errs []error
			for _, p := range protos {
				errs = append(errs, fmt.Errorf("%s: %w", p, probeErrs[p]))
			}
			return nil, errors.Join(errs...)
		}
		protos = avail
	}
	var errs []error
	for _, p := range protos {
		m, err := c.mapWith(ctx, p, gw, local, nil)
		if err == nil {
			return m, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c.log.Debug("portmap: mapping failed", "protocol", p, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", p, err))
	}
	return nil, errors.Join(errs...)
}

// mapWith maps (prev nil) or renews prev with protocol p.
func (c *Client) mapWith(ctx context.Context, p Protocol, gw, local netip.Addr, prev *mapping) (*mapping, error) {
	switch p {
	case PCP:
		return c.pcpMap(ctx, gw, local, prev)
	case NATPMP:
		return c.pmpMap(ctx, gw, local, prev)
	default:
		if prev != nil {
			return c.upnpMap(ctx, prev.upnp, local, prev)
		}
		c.mu.Lock()
		s := c.upnp
		c.mu.Unlock()
		if s != nil && s.gw == gw {
			m, err := c.upnpMap(ctx, s, local, nil)
			if err == nil || ctx.Err() != nil {
				return m, err
			}
			// The service found earlier may be stale (a restarted
			// router's HTTP port moves): look again.
			c.log.Debug("portmap: upnp: known service failed", "control", s.control, "err", err)
		}
		s, err := c.discoverUPnP(ctx, gw, local)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.upnp = s
		c.mu.Unlock()
		return c.upnpMap(ctx, s, local, nil)
	}
}

// leaseSeconds is Config.Lifetime in whole seconds, rounded up, at
// most max.
func (c *Client) leaseSeconds(max uint32) uint32 {
	s := (c.cfg.Lifetime + time.Second - 1) / time.Second
	if s > time.Duration(max) {
		return max
	}
	return uint32(s)
}

func newMapping(p Protocol, ext, internal netip.AddrPort, gw netip.Addr, lifetime time.Duration) *mapping {
	now := time.Now()
	m := &mapping{}
	m.Protocol, m.External, m.Internal, m.Gateway, m.Lifetime = p, ext, internal, gw, lifetime
	m.Expires = now.Add(lifetime)
	m.deadline = m.Expires
	m.renewAt = now.Add(lifetime / 2)
	return m
}

func (c *Client) pcpMap(ctx context.Context, gw, local netip.Addr, prev *mapping) (*mapping, error) {
	req := &pcpMapRequest{client: local, internal: c.cfg.LocalPort, lifetime: c.leaseSeconds(^uint32(0))}
	if prev != nil {
		// Same nonce: the server renews the mapping it has (RFC 6887
		// §11.2.1), and the previous external address is the suggestion.
		req.nonce, req.suggest = prev.nonce, prev.External
	} else {
		rand.Read(req.nonce[:])
		req.suggest = netip.AddrPortFrom(netip.Addr{}, c.cfg.LocalPort)
	}
	conn, err := c.dialGateway(ctx, gw)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var res pcpMapResult
	err = c.exchange(ctx, conn, req.marshal(), func(b []byte) (err error) {
		res, err = parsePCPMap(b, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	m := newMapping(PCP, res.external, netip.AddrPortFrom(local, c.cfg.LocalPort), gw, res.lifetime)
	m.nonce = req.nonce
	return m, nil
}

func (c *Client) pcpAnnounce(ctx context.Context, gw, local netip.Addr) error {
	conn, err := c.dialGateway(ctx, gw)
	if err != nil {
		return err
	}
	defer conn.Close()
	return c.exchange(ctx, conn, pcpAnnounceRequest(local), parsePCPAnnounce)
}

func (c *Client) pcpDelete(ctx context.Context, m *mapping) error {
	req := &pcpMapRequest{client: m.Internal.Addr(), nonce: m.nonce, internal: c.cfg.LocalPort}
	conn, err := c.dialGateway(ctx, m.Gateway)
	if err != nil {
		return err
	}
	defer conn.Close()
	return c.exchange(ctx, conn, req.marshal(), func(b []byte) error {
		_, err := parsePCPMap(b, req)
		return err
	})
}

func (c *Client) pmpExternal(ctx context.Context, gw netip.Addr) (netip.Addr, error) {
	conn, err := c.dialGateway(ctx, gw)
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	var ip netip.Addr
	err = c.exchange(ctx, conn, pmpExternalRequest(), func(b []byte) (err error) {
		ip, err = parsePMPExternal(b)
		return err
	})
	return ip, err
}

func (c *Client) pmpMap(ctx context.Context, gw, local netip.Addr, prev *mapping) (*mapping, error) {
	ip, err := c.pmpExternal(ctx, gw)
	if err != nil {
		return nil, err
	}
	suggest := c.cfg.LocalPort
	if prev != nil {
		suggest = prev.External.Port()
	}
	lifetime := c.leaseSeconds(^uint32(0))
	conn, err := c.dialGateway(ctx, gw)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var res pmpMapResult
	err = c.exchange(ctx, conn, pmpMapRequest(c.cfg.LocalPort, suggest, lifetime), func(b []byte) (err error) {
		res, err = parsePMPMap(b, c.cfg.LocalPort, lifetime)
		return err
	})
	if err != nil {
		return nil, err
	}
	return newMapping(NATPMP, netip.AddrPortFrom(ip, res.external), netip.AddrPortFrom(local, c.cfg.LocalPort), gw, res.lifetime), nil
}

func (c *Client) pmpDelete(ctx context.Context, m *mapping) error {
	conn, err := c.dialGateway(ctx, m.Gateway)
	if err != nil {
		return err
	}
	defer conn.Close()
	// RFC 6886 §3.4: lifetime 0 and suggested external port 0 delete.
	return c.exchange(ctx, conn, pmpMapRequest(c.cfg.LocalPort, 0, 0), func(b []byte) error {
		_, err := parsePMPMap(b, c.cfg.LocalPort, 0)
		return err
	})
}

// remove deletes m on the gateway.
func (c *Client) remove(ctx context.Context, m *mapping) error {
	var err error
	switch m.Protocol {
	case PCP:
		err = c.pcpDelete(ctx, m)
	case NATPMP:
		err = c.pmpDelete(ctx, m)
	case UPnP:
		err = c.upnpDelete(ctx, m.upnp, m.External.Port())
	}
	if err != nil {
		return fmt.Errorf("portmap: deleting the %s mapping %v: %w", m.Protocol, m.External, err)
	}
	return nil
}

// Close deletes the mapping on the gateway (bounded by ctx) and ends the
// Client's goroutine. A Client cannot be used after Close; Map then
// returns ErrClosed. If ctx ends before the gateway confirms, the mapping
// stays until its lifetime ends (or, for a permanent UPnP mapping, until
// the gateway restarts), and Close returns ctx's error. Close is
// idempotent: later calls return nil.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	started := c.started
	c.mu.Unlock()
	c.cancel() // ends the goroutine and any gateway operation in progress
	if started {
		<-c.done
	}
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	c.mu.Lock()
	cur := c.cur
	c.cur = nil
	c.mu.Unlock()
	if cur == nil {
		return nil
	}
	err := c.remove(ctx, cur)
	if err == nil {
		c.log.Info("portmap: deleted", "protocol", cur.Protocol, "external", cur.External)
	}
	return err
}

// poke wakes the goroutine to look at the mapping again.
func (c *Client) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run is the Client's goroutine: it sleeps until the mapping's renewal
// time (or, with no mapping, the retry time), then renews or re-maps.
func (c *Client) run() {
	defer close(c.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	next := time.Now()
	for {
		c.mu.Lock()
		if c.cur != nil {
			next = c.cur.renewAt
		}
		c.mu.Unlock()
		t.Reset(time.Until(next))
		select {
		case <-c.ctx.Done():
			return
		case <-c.wake:
			continue
		case <-t.C:
		}
		next = c.step()
	}
}

// step renews the mapping, or makes a new one when there is none, and
// tells OnChange what changed. It returns when to try again if there is
// no mapping afterwards.
func (c *Client) step() time.Time {
	ctx, cancel := context.WithTimeout(c.ctx, opTimeout)
	defer cancel()
	if c.acquire(ctx) != nil {
		return time.Now()
	}
	c.mu.Lock()
	cur := c.cur
	c.mu.Unlock()
	now := time.Now()
	var next time.Time
	switch {
	case cur != nil && now.Before(cur.renewAt):
		// Map replaced it meanwhile.
	case cur != nil:
		m, err := c.mapWith(ctx, cur.Protocol, cur.Gateway, cur.Internal.Addr(), cur)
		if err == nil {
			c.renewals.Add(1)
			c.log.Debug("portmap: renewed", "protocol", m.Protocol, "external", m.External, "lifetime", m.Lifetime)
			c.set(m)
			break
		}
		if c.ctx.Err() != nil {
			break
		}
		if now.Before(cur.deadline) {
			// Try again before it ends: at half the time left, at least
			// a second from now, at most 5 minutes.
			wait := min(max(cur.deadline.Sub(now)/2, time.Second), 5*time.Minute)
			c.log.Warn("portmap: renewal failed", "protocol", cur.Protocol, "err", err, "retry", wait)
			c.mu.Lock()
			if c.cur == cur {
				cp := *cur
				cp.renewAt = now.Add(wait)
				c.cur = &cp
			}
			c.mu.Unlock()
			break
		}
		c.log.Warn("portmap: mapping lost", "protocol", cur.Protocol, "external", cur.External, "err", err)
		c.lost.Add(1)
		c.set(nil)
		next = c.remap(ctx)
	default:
		next = c.remap(ctx)
	}
	c.release()
	c.notify()
	return next
}

// remap makes a new mapping after a loss. It returns when to try again
// if it failed.
func (c *Client) remap(ctx context.Context) time.Time {
	m, err := c.establish(ctx)
	if err == nil {
		c.log.Info("portmap: mapped again", "protocol", m.Protocol, "external", m.External)
		c.set(m)
		return time.Time{}
	}
	c.mu.Lock()
	c.retry = min(max(2*c.retry, retryMin), retryMax)
	wait := c.retry
	c.mu.Unlock()
	c.log.Debug("portmap: mapping failed", "err", err, "retry", wait)
	return time.Now().Add(wait)
}

func (c *Client) set(m *mapping) {
	c.mu.Lock()
	c.cur = m
	if m != nil {
		c.retry = 0
	}
	c.mu.Unlock()
}

// notify calls OnChange if the external address differs from the one
// the user last learnt.
func (c *Client) notify() {
	c.mu.Lock()
	var m Mapping
	if c.cur != nil {
		m = c.cur.Mapping
	}
	if m.External == c.announced || c.closed {
		c.mu.Unlock()
		return
	}
	if !m.Valid() {
		m.Protocol = c.annProto // the protocol of the mapping lost
	}
	c.announced, c.annProto = m.External, m.Protocol
	c.mu.Unlock()
	if f := c.cfg.OnChange; f != nil {
		f(m)
	}
}
