package p2p

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/gamewire/gamewire/nat/portmap"
)

// Port mapping timing (docs/ARCHITECTURE.md, "Port mapping").
const (
	// portMapLifetime is the lease asked for: a node that dies without
	// Close leaves its mapping on the router this long at most, and
	// renewals at half of it cost one small exchange every 10 minutes.
	portMapLifetime = 20 * time.Minute
	// portMapTimeout bounds one attempt at a mapping (probe and map).
	portMapTimeout = 15 * time.Second
	// portMapRetry is the wait after a failed attempt, doubling up to
	// portMapRetryMax: a router may gain the service, or the node may
	// move to a network whose router has it.
	portMapRetry    = time.Minute
	portMapRetryMax = 30 * time.Minute
	// portMapCloseTimeout bounds the deletion on Close.
	portMapCloseTimeout = 2 * time.Second
)

// portMapper holds the node's port mapping on its router: one
// portmap.Client for the main socket's port, and the goroutine that asks
// for the mapping until one is granted (the Client renews it after that).
//
// Ownership: the goroutine (run) owns attempts; mu guards what the
// registration and NATType read.
type portMapper struct {
	t *traversal
	c *portmap.Client

	mu       sync.Mutex
	cur      portmap.Mapping // Valid while the router forwards the port
	tried    bool            // an attempt has finished
	lastErr  error
	attempts int
}

// systemGateway lets port mapping ask the gateway of the process's
// routing table when Config.Gateway is nil. The package's tests turn it
// off: a test node must never ask the real network's router.
var systemGateway = true

// newPortMapper returns the mapper for the node's main socket, or nil when
// port mapping does not apply (portMapSkip says why).
func newPortMapper(t *traversal) *portMapper {
	n := t.n
	local := addrOfConn(n.main.pc)
	if why := portMapSkip(n.cfg, n.main.pc, local, t.server); why != "" {
		n.log.Debug("p2p: no port mapping", "why", why)
		return nil
	}
	m := &portMapper{t: t}
	cfg := portmap.Config{
		LocalPort: local.Port(),
		Lifetime:  portMapLifetime,
		Logger:    n.log,
		OnChange:  m.changed,
		Dial:      n.cfg.Dial,
		ListenPacket: func(_ context.Context, network, address string) (net.PacketConn, error) {
			return n.cfg.ListenPacket(network, address)
		},
	}
	if a := local.Addr(); a.Is4() && !a.IsUnspecified() {
		cfg.LocalAddr = a
	}
	if n.cfg.Gateway == nil && !systemGateway {
		n.log.Debug("p2p: no port mapping", "why", "no Config.Gateway (tests)")
		return nil
	}
	if n.cfg.Gateway != nil {
		gw, err := n.cfg.Gateway()
		if err != nil || !gw.Unmap().Is4() {
			n.log.Debug("p2p: no port mapping", "why", "no IPv4 gateway", "gateway", gw, "err", err)
			return nil
		}
		cfg.Gateway = gw.Unmap()
	}
	c, err := portmap.New(cfg)
	if err != nil {
		n.log.Debug("p2p: no port mapping", "err", err)
		return nil
	}
	m.c = c
	return m
}

// portMapSkip says why a node does not ask its router for a mapping, or
// "" when it does. Port mapping needs a UDP socket (a Config.PacketConn
// wrapping one counts: its local address is a *net.UDPAddr), and is
// pointless for a node bound to loopback or whose server is on loopback:
// only nodes on this machine can reach it, and they need no router.
func portMapSkip(cfg Config, pc net.PacketConn, local netip.AddrPort, server netip.AddrPort) string {
	switch _, udp := pc.LocalAddr().(*net.UDPAddr); {
	case cfg.DisablePortMapping:
		return "Config.DisablePortMapping"
	case !udp:
		return "the socket has no UDP address"
	case !local.IsValid() || local.Port() == 0:
		return "no local port"
	case local.Addr().IsLoopback() || server.Addr().IsLoopback():
		return "loopback"
	case local.Addr().Is6() && !local.Addr().IsUnspecified():
		return "bound to an IPv6 address (mappings are IPv4)"
	}
	return ""
}

// run asks for the mapping until one is granted or the traversal stops;
// the Client keeps a granted one (renewals, re-mapping after a loss).
func (m *portMapper) run(ctx context.Context) {
	wait := portMapRetry
	for {
		actx, cancel := context.WithTimeout(ctx, portMapTimeout)
		got, err := m.c.Map(actx)
		cancel()
		m.mu.Lock()
		m.tried, m.lastErr = true, err
		m.attempts++
		if err == nil {
			m.cur = got
		}
		m.mu.Unlock()
		if err == nil {
			m.t.n.log.Debug("p2p: port mapped", "protocol", got.Protocol, "external", got.External, "lifetime", got.Lifetime)
			m.t.advertise()
			return
		}
		if errors.Is(err, portmap.ErrClosed) || ctx.Err() != nil {
			return
		}
		m.t.n.log.Debug("p2p: port mapping", "err", err, "retry in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, portMapRetryMax)
	}
}

// changed is the Client's OnChange: a renewal moved the mapping, it was
// lost, or it was made again. Peers learn of it with the registration.
func (m *portMapper) changed(got portmap.Mapping) {
	m.mu.Lock()
	m.cur = got
	m.mu.Unlock()
	m.t.n.log.Debug("p2p: port mapping changed", "protocol", got.Protocol, "external", got.External)
	m.t.advertise()
}

// advertise tells the server, and the peers being punched toward or
// waited for, of a new candidate (the port mapping, the other family's
// address): a registration at once, and a new introduction to each such
// peer, which hands it over.
func (t *traversal) advertise() {
	t.mu.Lock()
	ready := t.ready
	t.mu.Unlock()
	if !ready {
		return // the first registration will carry it
	}
	now := time.Now()
	t.reregister(now)
	t.introduceWaiting()
	// An introduction the server handled before the registration with
	// the news (dropped by its rate limit, say, and sent again) told the
	// peers nothing new: once the news is confirmed, tick introduces
	// again (newsConfirmed).
	t.mu.Lock()
	t.newsAt = now
	t.mu.Unlock()
}

// newsConfirmed introduces the waiting peers again once the server has
// confirmed the registration advertise sent (maintenance goroutine).
func (t *traversal) newsConfirmed(now time.Time) {
	t.mu.Lock()
	at := t.newsAt
	t.mu.Unlock()
	if at.IsZero() {
		return
	}
	confirmed := t.rv.Confirmed()
	if confirmed || now.Sub(at) >= confirmWait {
		t.mu.Lock()
		if t.newsAt == at {
			t.newsAt = time.Time{}
		}
		t.mu.Unlock()
	}
	if confirmed {
		t.introduceWaiting()
	}
}

// confirmWait bounds how long advertise waits for the server to confirm
// a registration with news.
const confirmWait = 5 * time.Second

// introduceWaiting asks for a new introduction to every peer a session
// waits for or a punch runs toward.
func (t *traversal) introduceWaiting() {
	now := time.Now()
	t.n.mu.Lock()
	waiting := make([]*session, 0, len(t.n.sessions))
	for _, s := range t.n.sessions {
		waiting = append(waiting, s)
	}
	t.n.mu.Unlock()
	for _, s := range waiting {
		s.mu.Lock()
		asking := s.state == stConnecting && s.introducing
		s.mu.Unlock()
		if asking {
			t.introduce(s.peer, now)
		}
	}
	t.do(func() {
		for peer, pp := range t.peers {
			if pp.punch != nil {
				t.introduce(peer, now)
			}
		}
	})
}

// mapping is the mapping the router holds for us, if any.
func (m *portMapper) mapping() (portmap.Mapping, bool) {
	if m == nil {
		return portmap.Mapping{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur, m.cur.Valid()
}

// candidate is the mapping's external address, for the registration.
func (m *portMapper) candidate() (netip.AddrPort, bool) {
	got, ok := m.mapping()
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(got.External.Addr().Unmap(), got.External.Port()), true
}

// close deletes the mapping from the router, bounded by
// portMapCloseTimeout: an unanswered deletion leaves it to expire.
func (m *portMapper) close() {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), portMapCloseTimeout)
	defer cancel()
	if err := m.c.Close(ctx); err != nil {
		m.t.n.log.Debug("p2p: deleting the port mapping", "err", err)
	}
}
