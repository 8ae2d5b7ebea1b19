package relay

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v4"
)

// Server defaults.
const (
	DefaultRealm          = "gamewire"
	DefaultMaxPerUser     = 4
	DefaultMaxPerIP       = 32
	DefaultMaxAllocations = 10000
	portTries             = 64
)

// ServerConfig configures a Server. Zero values select the documented
// defaults.
type ServerConfig struct {
	// Secret is the shared secret credentials are checked against
	// (coturn's static-auth-secret). Required.
	Secret string
	// Realm is the TURN realm. Empty means "gamewire".
	Realm string

	// PacketConns are the UDP sockets the server answers on, Listeners
	// the TCP (or TLS) listeners. At least one of either. The server
	// closes them on Close.
	PacketConns []net.PacketConn
	Listeners   []net.Listener

	// RelayIP is the address put in relayed addresses: the host's public
	// IP. Required.
	RelayIP netip.Addr
	// RelayBind is what relay sockets bind to; empty means RelayIP.
	RelayBind string
	// MinPort and MaxPort bound relay ports (both zero: any port).
	MinPort, MaxPort uint16
	// ListenPacket opens relay sockets; nil means net.ListenPacket.
	ListenPacket func(network, address string) (net.PacketConn, error)

	// AllowPeers opens peer ranges the default denies, as coturn's
	// allowed-peer-ip. By default relay sockets reach no unspecified,
	// loopback, RFC 1918, carrier-grade NAT (100.64.0.0/10), link-local,
	// multicast, reserved (240.0.0.0/4, broadcast included) or IPv6
	// unique-local address, in any IPv4-mapped, IPv4-compatible, 6to4,
	// NAT64 or Teredo form either. A lab or LAN deployment whose peers
	// have private addresses lists their ranges here.
	AllowPeers []netip.Prefix
	// OwnAddrs are more addresses of the server's host (other interfaces,
	// a public IP the host is NATed to). Relay sockets never reach the
	// server's own addresses, whatever AllowPeers says: RelayIP, RelayBind,
	// the local addresses of PacketConns and Listeners, and these. The one
	// exception is relay to relay: the relayed address (IP and port) of a
	// live allocation on this server is always reachable.
	OwnAddrs []netip.Addr

	// MaxPerUser bounds the live allocations of one user (the part of
	// the username after "expiry:", so one peer however often its
	// credentials are reissued), MaxPerIP those made from one client IP
	// (an IPv6 client's /64), MaxAllocations all of them. Identities cost
	// nothing to make, so it is MaxPerIP that keeps a few hosts from taking
	// every allocation. Zero means 4, 32 and 10000.
	MaxPerUser, MaxPerIP, MaxAllocations int

	// Authorize, when set, is asked on every authenticated request
	// (Allocate, Refresh, CreatePermission, ChannelBind) once the
	// username's expiry has checked out, with the username and the
	// client's transport address. False refuses the request as bad
	// credentials are refused (400; counted in AuthFailures and
	// Unauthorized) and ends the allocations that client address holds
	// under that username, so revoking takes effect at the client's next
	// request (pion's client refreshes its permissions every 2 minutes).
	// pion asks for the key before it checks the message's integrity, so
	// Authorize also sees usernames whose HMAC would then fail: it must be
	// cheap, and a refusal ends nothing but the requesting address's own
	// allocations. Nil means the HMAC and the expiry only.
	Authorize func(username string, src net.Addr) bool

	// Logger receives logs (pion's included). Nil means silent.
	Logger *slog.Logger
}

// Server is an embedded TURN server (pion/turn/v4) with use-auth-secret
// credentials. All methods are safe for concurrent use.
type Server struct {
	cfg    ServerConfig
	srv    *turn.Server
	policy *peerPolicy

	mu      sync.Mutex                    // guards the fields below
	perUser map[string]int                // allocations held, live or pending, by user
	perIP   map[netip.Prefix]int          // by client IP (IPv6: /64)
	held    int                           // all of them
	pending map[string]holder             // quota granted, allocation not yet made, by client transport address
	relays  map[netip.AddrPort]*relayConn // open relay sockets by relayed address
	owned   map[string][]*relayConn       // those of allocations, by client transport address
	conns   map[*trackedConn]struct{}
	closed  bool

	stats serverCounters
}

// NewServer starts a TURN server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Secret == "" {
		return nil, ErrNoCredentials
	}
	if !cfg.RelayIP.IsValid() {
		return nil, errors.New("relay: no RelayIP")
	}
	if cfg.Realm == "" {
		cfg.Realm = DefaultRealm
	}
	if cfg.RelayBind == "" {
		cfg.RelayBind = cfg.RelayIP.String()
	}
	if cfg.ListenPacket == nil {
		cfg.ListenPacket = net.ListenPacket
	}
	if cfg.MaxPerUser <= 0 {
		cfg.MaxPerUser = DefaultMaxPerUser
	}
	if cfg.MaxPerIP <= 0 {
		cfg.MaxPerIP = DefaultMaxPerIP
	}
	if cfg.MaxAllocations <= 0 {
		cfg.MaxAllocations = DefaultMaxAllocations
	}
	if cfg.MinPort > cfg.MaxPort {
		return nil, errors.New("relay: MinPort above MaxPort")
	}
	log := quiet(cfg.Logger)
	s := &Server{cfg: cfg, perUser: map[string]int{}, perIP: map[netip.Prefix]int{}, pending: map[string]holder{},
		relays: map[netip.AddrPort]*relayConn{}, owned: map[string][]*relayConn{}, conns: map[*trackedConn]struct{}{}}
	own := append([]netip.Addr(nil), cfg.OwnAddrs...)
	if ip, err := netip.ParseAddr(cfg.RelayBind); err == nil {
		own = append(own, ip)
	}
	for _, pc := range cfg.PacketConns {
		if ip, ok := ownAddr(pc.LocalAddr()); ok {
			own = append(own, ip)
		}
	}
	for _, l := range cfg.Listeners {
		if ip, ok := ownAddr(l.Addr()); ok {
			own = append(own, ip)
		}
	}
	s.policy = newPeerPolicy(cfg.RelayIP, own, cfg.AllowPeers)
	gen := &relayPorts{cfg: &cfg, srv: s}
	sc := turn.ServerConfig{
		Realm:         cfg.Realm,
		LoggerFactory: pionLogs{log: log},
		AuthHandler:   s.auth(cfg.Secret, cfg.Authorize),
		QuotaHandler: func(username, _ string, src net.Addr) bool {
			return s.quota(username, src)
		},
		EventHandler: turn.EventHandler{
			OnAuth: func(_, _ net.Addr, _, _, _, _ string, verdict bool) {
				if !verdict {
					s.stats.authFailures.Add(1)
				}
			},
			OnAllocationCreated: func(src, _ net.Addr, _, username, _ string, relayed net.Addr, _ int) {
				s.stats.allocations.Add(1)
				s.stats.live.Add(1)
				s.created(src, username)
				s.owns(src, username, relayed)
			},
			OnAllocationDeleted: func(src, _ net.Addr, _, username, _ string) {
				s.stats.live.Add(-1)
				s.release(holderOf(src, username))
			},
			OnAllocationError: func(src, _ net.Addr, _, _ string) {
				s.failed(src)
			},
		},
	}
	for _, pc := range cfg.PacketConns {
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{PacketConn: pc, RelayAddressGenerator: gen,
			PermissionHandler: s.permit})
	}
	for _, l := range cfg.Listeners {
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{Listener: trackedListener{l, s}, RelayAddressGenerator: gen,
			PermissionHandler: s.permit})
	}
	srv, err := turn.NewServer(sc)
	if err != nil {
		return nil, err
	}
	s.srv = srv
	return s, nil
}

// permit is pion's PermissionHandler: CreatePermission and ChannelBind
// for a peer IP the policy denies are refused (403).
func (s *Server) permit(_ net.Addr, peer net.IP) bool {
	a, ok := netip.AddrFromSlice(peer)
	if ok && s.policy.permitIP(a) {
		return true
	}
	s.stats.deniedPeers.Add(1)
	return false
}

// auth checks use-auth-secret credentials, then asks authorize. It counts
// malformed, expired and unauthorized usernames; OnAuth counts wrong
// passwords.
func (s *Server) auth(secret string, authorize func(string, net.Addr) bool) turn.AuthHandler {
	return func(username, realm string, src net.Addr) ([]byte, bool) {
		exp, err := Credentials{Username: username}.Expires()
		if err != nil || !time.Now().Before(exp) {
			s.stats.authFailures.Add(1) // pion raises no OnAuth for these
			return nil, false
		}
		if authorize != nil && !authorize(username, src) {
			s.stats.authFailures.Add(1)
			s.stats.unauthorized.Add(1)
			s.endAllocations(username, src)
			return nil, false
		}
		return turn.GenerateAuthKey(username, realm, password(secret, username)), true
	}
}

// owns records whose allocation the relay socket at relayed serves.
func (s *Server) owns(src net.Addr, username string, relayed net.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.relays[addrPortOf(relayed)]
	if c == nil {
		return
	}
	c.owner, c.user = transportKey(src), username
	s.owned[c.owner] = append(s.owned[c.owner], c)
}

// endAllocations ends the allocations of username made from src, which
// Authorize has just refused: closing the relay socket ends pion's
// allocation. Only src's own: a request from elsewhere naming the
// username, forged or not, ends nothing of another client's.
func (s *Server) endAllocations(username string, src net.Addr) {
	s.mu.Lock()
	var end []*relayConn
	for _, c := range s.owned[transportKey(src)] {
		if c.user == username {
			end = append(end, c)
		}
	}
	s.mu.Unlock()
	for _, c := range end {
		c.Close()
	}
}

// forget drops a closed relay socket.
func (s *Server) forget(c *relayConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.relays[c.relayed] == c {
		delete(s.relays, c.relayed)
	}
	if c.owner == "" {
		return
	}
	list := s.owned[c.owner]
	for i, o := range list {
		if o == c {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.owned, c.owner)
	} else {
		s.owned[c.owner] = list
	}
}

// holder is whom an allocation counts against.
type holder struct {
	user string
	ip   netip.Prefix
}

func holderOf(src net.Addr, username string) holder {
	user := username
	if _, u, ok := strings.Cut(username, ":"); ok {
		user = u
	}
	a := addrPortOf(src).Addr()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits) // an invalid address gives the zero Prefix: one bucket for all such
	return holder{user, p}
}

// transportKey names a client's transport address: requests from one are
// handled one at a time (one reader per UDP socket, one per TCP
// connection), so it has at most one Allocate between the quota check and
// its outcome.
func transportKey(src net.Addr) string { return src.Network() + " " + src.String() }

// quota admits an allocation (pion asks before allocating) and reserves
// its place at once, so requests racing on many connections cannot pass
// the check together. The reservation becomes the allocation
// (OnAllocationCreated) or is given back when the request fails
// (OnAllocationError: pion reports every failure after the check).
func (s *Server) quota(username string, src net.Addr) bool {
	h := holderOf(src, username)
	s.mu.Lock()
	defer s.mu.Unlock()
	var refused *atomic.Uint64
	switch {
	case s.perUser[h.user] >= s.cfg.MaxPerUser:
		refused = &s.stats.refusedUser
	case s.perIP[h.ip] >= s.cfg.MaxPerIP:
		refused = &s.stats.refusedIP
	case s.held >= s.cfg.MaxAllocations:
		refused = &s.stats.refusedFull
	}
	if refused != nil {
		refused.Add(1)
		s.stats.refused.Add(1)
		return false
	}
	k := transportKey(src)
	if old, ok := s.pending[k]; ok {
		// pion v4.1.4 settles each reservation before it reads the next
		// request of a transport address; should one be left, it is
		// given back, not leaked.
		s.releaseLocked(old)
	}
	s.pending[k] = h
	s.holdLocked(h)
	return true
}

// created turns the reservation into the allocation.
func (s *Server) created(src net.Addr, username string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := transportKey(src)
	if _, ok := s.pending[k]; ok {
		delete(s.pending, k)
		return
	}
	s.holdLocked(holderOf(src, username)) // made without a quota check: count it still
}

// failed gives back the reservation of a request that failed.
func (s *Server) failed(src net.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := transportKey(src)
	if h, ok := s.pending[k]; ok {
		delete(s.pending, k)
		s.releaseLocked(h)
	}
}

func (s *Server) release(h holder) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked(h)
}

func (s *Server) holdLocked(h holder) {
	s.perUser[h.user]++
	s.perIP[h.ip]++
	s.held++
}

func (s *Server) releaseLocked(h holder) {
	if s.perUser[h.user]--; s.perUser[h.user] <= 0 {
		delete(s.perUser, h.user)
	}
	if s.perIP[h.ip]--; s.perIP[h.ip] <= 0 {
		delete(s.perIP, h.ip)
	}
	s.held--
}

// Close stops the server and closes its sockets, listeners and the TCP
// connections it accepted (pion's Close leaves those to their clients).
func (s *Server) Close() error {
	err := s.srv.Close()
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
	return err
}

// trackedListener records the connections it accepts, so Close can end
// them.
type trackedListener struct {
	net.Listener
	s *Server
}

func (l trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: l.s}
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if l.s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	l.s.conns[tc] = struct{}{}
	return tc, nil
}

type trackedConn struct {
	net.Conn
	s *Server
}

func (c *trackedConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}

// ServerStats counts what a Server did.
type ServerStats struct {
	Allocations  uint64 // made since start
	Live         int64  // held now
	QuotaRefused uint64 // allocations refused (486): RefusedUser+RefusedIP+RefusedFull
	RefusedUser  uint64 // the user held MaxPerUser
	RefusedIP    uint64 // the client IP held MaxPerIP
	RefusedFull  uint64 // the server held MaxAllocations
	AuthFailures uint64 // unknown, expired, forged or unauthorized credentials
	Unauthorized uint64 // of AuthFailures: refused by ServerConfig.Authorize
	BytesRelayed uint64 // peer datagram bytes in and out of relay sockets
	DeniedPeers  uint64 // permissions, channel binds and datagrams refused by the peer policy
}

type serverCounters struct {
	allocations, refused, authFailures, bytes atomic.Uint64
	refusedUser, refusedIP, refusedFull       atomic.Uint64
	deniedPeers, unauthorized                 atomic.Uint64
	live                                      atomic.Int64
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	c := &s.stats
	return ServerStats{Allocations: c.allocations.Load(), Live: c.live.Load(), QuotaRefused: c.refused.Load(),
		RefusedUser: c.refusedUser.Load(), RefusedIP: c.refusedIP.Load(), RefusedFull: c.refusedFull.Load(),
		AuthFailures: c.authFailures.Load(), BytesRelayed: c.bytes.Load(), DeniedPeers: c.deniedPeers.Load(),
		Unauthorized: c.unauthorized.Load()}
}

// relayPorts opens relay sockets through ServerConfig.ListenPacket, in the
// configured port range; they count the bytes they carry and write only
// where the peer policy allows.
type relayPorts struct {
	cfg *ServerConfig
	srv *Server
}

func (r *relayPorts) Validate() error { return nil }

func (r *relayPorts) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	pc, err := r.listen(network, requestedPort)
	if err != nil {
		return nil, nil, err
	}
	ap := netip.AddrPortFrom(r.cfg.RelayIP, addrPortOf(pc.LocalAddr()).Port())
	c := &relayConn{PacketConn: pc, srv: r.srv, relayed: ap}
	r.srv.policy.addLive(ap)
	r.srv.mu.Lock()
	r.srv.relays[ap] = c
	r.srv.mu.Unlock()
	return c, net.UDPAddrFromAddrPort(ap), nil
}

func (r *relayPorts) listen(network string, requested int) (net.PacketConn, error) {
	if requested != 0 || r.cfg.MaxPort == 0 {
		return r.cfg.ListenPacket(network, net.JoinHostPort(r.cfg.RelayBind, strconv.Itoa(requested)))
	}
	span := uint32(r.cfg.MaxPort-r.cfg.MinPort) + 1
	for range portTries {
		var b [4]byte
		rand.Read(b[:])
		port := uint32(r.cfg.MinPort) + binary.LittleEndian.Uint32(b[:])%span
		pc, err := r.cfg.ListenPacket(network, net.JoinHostPort(r.cfg.RelayBind, strconv.Itoa(int(port))))
		if err == nil {
			return pc, nil
		}
	}
	return nil, errNoPort
}

func (r *relayPorts) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errNoTCPRelay
}

// relayConn is an allocation's relay socket. Its relayed address is live
// (reachable from other relay sockets) until it closes.
type relayConn struct {
	net.PacketConn
	srv     *Server
	relayed netip.AddrPort
	once    sync.Once

	owner, user string // the allocation's client transport address and username; guarded by srv.mu
}

func (c *relayConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	c.srv.stats.bytes.Add(uint64(n))
	return n, a, err
}

// WriteTo sends to peers the policy allows: pion's permission check is by
// IP, and the relay's own IP passes it for relay to relay, so this is
// where its other ports are refused.
func (c *relayConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if !c.srv.policy.writable(addrPortOf(a)) {
		c.srv.stats.deniedPeers.Add(1)
		return 0, errDeniedPeer
	}
	n, err := c.PacketConn.WriteTo(b, a)
	c.srv.stats.bytes.Add(uint64(n))
	return n, err
}

// Close closes the socket once: endAllocations and pion may both close
// it.
func (c *relayConn) Close() error {
	var err error
	c.once.Do(func() {
		c.srv.policy.removeLive(c.relayed)
		c.srv.forget(c)
		err = c.PacketConn.Close()
	})
	return err
}
