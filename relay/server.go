package relay

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
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

	// RelayIP is the IPv4 address put in relayed addresses, RelayIP6 the
	// IPv6 one: the host's public IPs. At least one is required. An
	// allocation is relayed in the family its REQUESTED-ADDRESS-FAMILY
	// asks for, or without one in the family of its client's transport
	// (the source address of its datagrams, or of its TCP connection),
	// when the server has a relay IP of that family, and in the other
	// family otherwise; see the package documentation, IPv6.
	RelayIP  netip.Addr
	RelayIP6 netip.Addr
	// RelayBind is what IPv4 relay sockets bind to, RelayBind6 what IPv6
	// ones do; empty means RelayIP and RelayIP6.
	RelayBind  string
	RelayBind6 string
	// MinPort and MaxPort bound relay ports, in each family (both zero:
	// any port).
	MinPort, MaxPort uint16
	// ListenPacket opens relay sockets ("udp4" or "udp6"); nil means
	// net.ListenPacket.
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
	// server's own addresses, whatever AllowPeers says: RelayIP, RelayIP6,
	// RelayBind, RelayBind6, the local addresses of PacketConns and
	// Listeners, and these. The one
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
	cfg       ServerConfig
	srv       *turn.Server
	policy    *peerPolicy
	relayIP   [2]netip.Addr // by family (ipv4, ipv6); invalid where none
	relayBind [2]string
	wg        sync.WaitGroup // acceptLoop and route goroutines

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
	cfg.RelayIP, cfg.RelayIP6 = cfg.RelayIP.Unmap(), cfg.RelayIP6.WithZone("")
	switch {
	case !cfg.RelayIP.IsValid() && !cfg.RelayIP6.IsValid():
		return nil, errors.New("relay: no RelayIP or RelayIP6")
	case cfg.RelayIP.IsValid() && (!cfg.RelayIP.Is4() || cfg.RelayIP.IsUnspecified()):
		return nil, fmt.Errorf("relay: RelayIP %v: want an IPv4 address that names the host (IPv6 goes in RelayIP6)", cfg.RelayIP)
	case cfg.RelayIP6.IsValid() && (!cfg.RelayIP6.Is6() || cfg.RelayIP6.Is4In6() || cfg.RelayIP6.IsUnspecified()):
		return nil, fmt.Errorf("relay: RelayIP6 %v: want an IPv6 address that names the host (IPv4 goes in RelayIP)", cfg.RelayIP6)
	}
	if cfg.Realm == "" {
		cfg.Realm = DefaultRealm
	}
	if cfg.RelayBind == "" && cfg.RelayIP.IsValid() {
		cfg.RelayBind = cfg.RelayIP.String()
	}
	if cfg.RelayBind6 == "" && cfg.RelayIP6.IsValid() {
		cfg.RelayBind6 = cfg.RelayIP6.String()
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
		relays: map[netip.AddrPort]*relayConn{}, owned: map[string][]*relayConn{}, conns: map[*trackedConn]struct{}{},
		relayIP: [2]netip.Addr{cfg.RelayIP, cfg.RelayIP6}, relayBind: [2]string{cfg.RelayBind, cfg.RelayBind6}}
	own := append([]netip.Addr(nil), cfg.OwnAddrs...)
	for _, b := range s.relayBind {
		if ip, err := netip.ParseAddr(b); err == nil {
			own = append(own, ip)
		}
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
	s.policy = newPeerPolicy([]netip.Addr{cfg.RelayIP, cfg.RelayIP6}, own, cfg.AllowPeers)
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
	// pion's relay address generator is per socket or listener, and
	// asks for "udp4" whoever the client is: a UDP socket's generator
	// allocates in the family of the datagram being handled, and a
	// listener's connections are split by family between two of pion's
	// listeners, a generator each (route).
	for _, pc := range cfg.PacketConns {
		u := &udpTransport{PacketConn: pc, s: s}
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{PacketConn: u,
			RelayAddressGenerator: &relayPorts{srv: s, family: func() int { return u.fam }}, PermissionHandler: s.permit})
	}
	var splits [][2]*familyListener
	for _, l := range cfg.Listeners {
		var split [2]*familyListener
		for fam := range split {
			split[fam] = &familyListener{Listener: l, in: make(chan net.Conn), done: make(chan struct{})}
			sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{Listener: split[fam],
				RelayAddressGenerator: &relayPorts{srv: s, family: func() int { return fam }}, PermissionHandler: s.permit})
		}
		splits = append(splits, split)
	}
	srv, err := turn.NewServer(sc)
	if err != nil {
		return nil, err
	}
	s.srv = srv
	for i, l := range cfg.Listeners {
		s.wg.Add(1)
		go s.acceptLoop(l, splits[i])
	}
	return s, nil
}

// Address families, as indices.
const (
	ipv4 = 0
	ipv6 = 1
)

// familyOf is a's family, IPv4-mapped addresses IPv4 (an invalid
// address: IPv4).
func familyOf(a netip.Addr) int {
	if canonical(a).Is6() {
		return ipv6
	}
	return ipv4
}

// relayFamily is the family a client at src is relayed in unless it asks
// for another (allocationFamily): its own, or the other when the server
// has no relay IP of its family.
func (s *Server) relayFamily(src netip.Addr) int {
	if f := familyOf(src); s.relayIP[f].IsValid() {
		return f
	}
	return 1 - familyOf(src)
}

// permit is pion's PermissionHandler: CreatePermission and ChannelBind
// for a peer IP the policy denies, or of another family than the
// client's relay socket (which cannot send there), are refused (403).
func (s *Server) permit(src net.Addr, peer net.IP) bool {
	a, ok := netip.AddrFromSlice(peer)
	if ok && familyOf(a) == s.allocationOf(src) && s.policy.permitIP(a) {
		return true
	}
	s.stats.deniedPeers.Add(1)
	return false
}

// allocationOf is the family of src's allocation. pion asks its
// PermissionHandler only for a client that has one, made
// (OnAllocationCreated, owns) before pion answered its Allocate.
func (s *Server) allocationOf(src net.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if list := s.owned[transportKey(src)]; len(list) > 0 {
		return list[len(list)-1].fam // the newest
	}
	return s.relayFamily(addrPortOf(src).Addr())
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
	err := s.srv.Close() // the sockets, and pion's side of the listeners
	for _, l := range s.cfg.Listeners {
		if lerr := l.Close(); err == nil && lerr != nil && !errors.Is(lerr, net.ErrClosed) {
			err = lerr
		}
	}
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
	s.wg.Wait()
	return err
}

// acceptLoop accepts l's connections, recording them so Close can end
// them, and routes each to pion.
func (s *Server) acceptLoop(l net.Listener, split [2]*familyListener) {
	defer s.wg.Done()
	defer split[ipv4].Close()
	defer split[ipv6].Close()
	for {
		c, err := l.Accept()
		if err != nil {
			return // as pion's own accept loop: any error ends it
		}
		tc := &trackedConn{Conn: c, s: s, fam: s.relayFamily(addrPortOf(c.RemoteAddr()).Addr()), frames: turn.NewSTUNConn(c)}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[tc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.route(tc, split)
	}
}

// route hands tc to pion through the listener of its relay family, which
// its first frame decides: an Allocate that asks for a family the server
// relays in gets it (allocationFamily), any other frame the connection's
// own. A connection holds one allocation at a time; a later Allocate on
// it asking for the other family is refused.
func (s *Server) route(tc *trackedConn, split [2]*familyListener) {
	defer s.wg.Done()
	frame, err := tc.next()
	if err != nil {
		tc.Close()
		return
	}
	tc.held = frame
	tc.fam, _ = s.allocationFamily(frame, tc.fam, true)
	select {
	case split[tc.fam].in <- tc:
	case <-split[tc.fam].done:
		tc.Close()
	}
}

// familyListener is pion's listener for the connections of one relay
// family that a listener accepts (acceptLoop).
type familyListener struct {
	net.Listener // Addr only: the real one is the Server's to close
	in           chan net.Conn
	done         chan struct{}
	once         sync.Once
}

func (l *familyListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.in:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *familyListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// udpTransport is a UDP socket as pion reads it. pion handles each
// datagram before it reads the next (v4.1.4: one reader per socket, and
// the relay address generator called on it), so fam, the relay family of
// the datagram being handled (allocationFamily), is the family the
// socket's generator allocates in.
type udpTransport struct {
	net.PacketConn
	s   *Server
	fam int // pion's reader goroutine only
}

func (u *udpTransport) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := u.PacketConn.ReadFrom(b)
		if err != nil {
			return n, from, err
		}
		fam := u.s.relayFamily(addrPortOf(from).Addr())
		if n < len(b) { // a full buffer may be cut short: pion drops it
			var refusal []byte
			if fam, refusal = u.s.allocationFamily(b[:n], fam, true); refusal != nil {
				u.PacketConn.WriteTo(refusal, from)
				continue
			}
		}
		u.fam = fam
		return n, from, nil
	}
}

// trackedConn is a TCP (or TLS) connection pion serves: Close forgets it,
// and reads go through whole TURN frames, so an Allocate asking for a
// family it does not get is answered here (allocationFamily).
type trackedConn struct {
	net.Conn
	s       *Server
	fam     int            // the connection's relay family, set by route
	frames  *turn.STUNConn // frames of Conn; route's, then pion's reader's, as the fields below
	buf     []byte         // the last frame read
	held    []byte         // the frame route read, for pion
	pending []byte         // the part of a frame pion has not read yet
}

// frameBuf holds the frames a connection passes on: pion drops those of
// its inbound MTU (1600 bytes) or more, and this one those longer than
// the buffer.
const frameBuf = 2048

// next returns the next frame: the one held, or one read that fits the
// buffer (longer ones are past pion's MTU, and it would drop them).
func (c *trackedConn) next() ([]byte, error) {
	if f := c.held; f != nil {
		c.held = nil
		return f, nil
	}
	if c.buf == nil {
		c.buf = make([]byte, frameBuf)
	}
	for {
		n, _, err := c.frames.ReadFrom(c.buf)
		if err != nil {
			return nil, err
		}
		if n <= len(c.buf) {
			return c.buf[:n], nil
		}
	}
}

func (c *trackedConn) Read(b []byte) (int, error) {
	for len(c.pending) == 0 {
		frame, err := c.next()
		if err != nil {
			return 0, err
		}
		if _, refusal := c.s.allocationFamily(frame, c.fam, false); refusal != nil {
			if _, err := c.Conn.Write(refusal); err != nil {
				return 0, err
			}
			continue
		}
		c.pending = frame
	}
	n := copy(b, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

func (c *trackedConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}

// familyCodes are REQUESTED-ADDRESS-FAMILY's values (RFC 6156), by
// family.
var familyCodes = [2]byte{0x01, 0x02}

// allocationFamily reads an Allocate request's REQUESTED-ADDRESS-FAMILY
// (RFC 6156), which pion does not: it returns the family to relay in,
// the one asked for when the server relays in it and choose allows a
// choice, fam otherwise (no attribute, not an Allocate request). And it
// answers, instead of pion, an authenticated request that asks for
// another family than the one returned, or one the server has no relay IP
// for, or one it does not know (440 Address Family not Supported), or
// whose attribute is malformed (400), signed as pion signs its answers:
// a non-nil refusal is to be sent, and the request dropped. An
// unauthenticated one goes to pion whatever it asks (pion answers 401,
// and the client's authenticated retry is judged here).
func (s *Server) allocationFamily(b []byte, fam int, choose bool) (int, []byte) {
	if len(b) < 20 || b[0] != 0x00 || b[1] != 0x03 || !stun.IsMessage(b) { // 0x0003: Allocate request
		return fam, nil
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil {
		return fam, nil
	}
	v, err := m.Get(stun.AttrRequestedAddressFamily)
	if err != nil {
		return fam, nil
	}
	if len(v) == 4 {
		for f, code := range familyCodes {
			if v[0] == code && s.relayIP[f].IsValid() && (f == fam || choose) {
				return f, nil
			}
		}
	}
	var user stun.Username
	var realm stun.Realm
	if user.GetFrom(m) != nil || realm.GetFrom(m) != nil || !m.Contains(stun.AttrMessageIntegrity) {
		return fam, nil
	}
	if exp, err := (Credentials{Username: user.String()}).Expires(); err != nil || !time.Now().Before(exp) {
		return fam, nil
	}
	integrity := stun.MessageIntegrity(turn.GenerateAuthKey(user.String(), realm.String(), password(s.cfg.Secret, user.String())))
	if integrity.Check(m) != nil {
		return fam, nil // pion refuses it
	}
	code := stun.CodeAddrFamilyNotSupported
	if len(v) != 4 {
		code = stun.CodeBadRequest
	}
	res, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID), stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		stun.ErrorCodeAttribute{Code: code}, integrity, stun.Fingerprint)
	if err != nil {
		return fam, nil
	}
	s.stats.familyRefused.Add(1)
	return fam, res.Raw
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
	DeniedPeers  uint64 // permissions, channel binds and datagrams refused by the peer policy or for their family
	// FamilyRefused counts Allocates refused for their
	// REQUESTED-ADDRESS-FAMILY: 440 (Address Family not Supported) for a
	// family the server has no relay IP for (or the other family on a TCP
	// connection relayed in one already), 400 for a malformed attribute.
	FamilyRefused uint64
}

type serverCounters struct {
	allocations, refused, authFailures, bytes atomic.Uint64
	refusedUser, refusedIP, refusedFull       atomic.Uint64
	deniedPeers, unauthorized, familyRefused  atomic.Uint64
	live                                      atomic.Int64
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	c := &s.stats
	return ServerStats{Allocations: c.allocations.Load(), Live: c.live.Load(), QuotaRefused: c.refused.Load(),
		RefusedUser: c.refusedUser.Load(), RefusedIP: c.refusedIP.Load(), RefusedFull: c.refusedFull.Load(),
		AuthFailures: c.authFailures.Load(), BytesRelayed: c.bytes.Load(), DeniedPeers: c.deniedPeers.Load(),
		Unauthorized: c.unauthorized.Load(), FamilyRefused: c.familyRefused.Load()}
}

// relayPorts opens relay sockets through ServerConfig.ListenPacket, in the
// configured port range and the family family says (whatever pion asks
// for: always "udp4"); they count the bytes they carry and write only
// where the peer policy allows.
type relayPorts struct {
	srv    *Server
	family func() int
}

func (r *relayPorts) Validate() error { return nil }

func (r *relayPorts) AllocatePacketConn(_ string, requestedPort int) (net.PacketConn, net.Addr, error) {
	fam := r.family()
	pc, err := r.listen(fam, requestedPort)
	if err != nil {
		return nil, nil, err
	}
	ap := netip.AddrPortFrom(r.srv.relayIP[fam], addrPortOf(pc.LocalAddr()).Port())
	c := &relayConn{PacketConn: pc, srv: r.srv, relayed: ap, fam: fam}
	r.srv.policy.addLive(ap)
	r.srv.mu.Lock()
	r.srv.relays[ap] = c
	r.srv.mu.Unlock()
	return c, net.UDPAddrFromAddrPort(ap), nil
}

func (r *relayPorts) listen(fam, requested int) (net.PacketConn, error) {
	cfg := &r.srv.cfg
	network, bind := "udp4", r.srv.relayBind[fam]
	if fam == ipv6 {
		network = "udp6" // IPv6-only: an IPv6 allocation relays to IPv6 peers
	}
	if requested != 0 || cfg.MaxPort == 0 {
		return cfg.ListenPacket(network, net.JoinHostPort(bind, strconv.Itoa(requested)))
	}
	span := uint32(cfg.MaxPort-cfg.MinPort) + 1
	for range portTries {
		var b [4]byte
		rand.Read(b[:])
		port := uint32(cfg.MinPort) + binary.LittleEndian.Uint32(b[:])%span
		pc, err := cfg.ListenPacket(network, net.JoinHostPort(bind, strconv.Itoa(int(port))))
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
	fam     int // relayed's
	once    sync.Once

	owner, user string // the allocation's client transport address and username; guarded by srv.mu
}

func (c *relayConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	c.srv.stats.bytes.Add(uint64(n))
	return n, a, err
}

// WriteTo sends to peers of its family the policy allows: pion's
// permission check is by IP, and the relay's own IP passes it for relay
// to relay, so this is where its other ports are refused.
func (c *relayConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if dst := addrPortOf(a); familyOf(dst.Addr()) != c.fam || !c.srv.policy.writable(dst) {
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
