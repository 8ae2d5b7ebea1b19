package rendezvous

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/curve25519"

	"github.com/gamewire/gamewire/relay"
)

// Server defaults.
const (
	DefaultTTL      = 60 * time.Second // a registration lasts this long unless refreshed
	DefaultMaxPeers = 100000
	// DefaultMaxPeersPerIP bounds the live registrations of one IPv4
	// address or IPv6 /64.
	DefaultMaxPeersPerIP = 64
	cookieRotate         = 2 * time.Minute
	newKeysPerSecond     = 20 // per source IP: Diffie-Hellman for a client not yet known
	newKeysBurst         = 20
	registerPerSecIP     = 10 // per source IP: REGISTERs with a valid cookie
	registerBurstIP      = 20
	challengesPerSecIP   = 20 // per source IP: CHALLENGEs sent
	challengeBurstIP     = 40
	refreshMin           = time.Second // per peer: the least time between two accepted REGISTERs from one origin
	introducePerSec      = 20          // per registered peer
	introduceBurst       = 40
	introducePerSecIP    = 20 // per source IP, on top of the per-peer bucket
	introduceBurstIP     = 40
	sweepEvery           = time.Second      // expired registrations are evicted at least this often
	requestTTL           = 10 * time.Second // an INTRODUCE stands as consent this long
	maxRequests          = 16               // outstanding introduction requests per peer
	askRepeat            = time.Second      // at most one ASK a second per (asker, target)
	asksPerSec           = 10               // ASKs toward one target, from all askers
	asksBurst            = 20
	maxPacketSize        = 1500 // a rendezvous message, and a TCP frame
	// maxDatagram is the largest UDP datagram the server acts on: room for
	// a full Ethernet frame's payload and for STUN requests padded to
	// 1500 bytes of PADDING (coturn's turnutils_natdiscovery -P sends
	// 1524), above pion TURN's own 1600-byte inbound limit. Anything
	// larger arrived in IP fragments, which nothing that talks to this
	// server sends: it is dropped and counted (Oversized).
	maxDatagram       = 2048
	stunMinRequestLen = 20
	DefaultMaxStreams = 10000
	firstByteTimeout  = 10 * time.Second // a TCP connection must say what it is by then
)

// ServerConfig configures a Server. Zero values select the documented
// defaults.
type ServerConfig struct {
	// PrivateKey is the server's X25519 key; clients may pin its public
	// half (Server.PublicKey). Zero means a random key.
	PrivateKey [32]byte

	// Conns are the server's UDP sockets, in groups: clients may register
	// and ask for STUN at any of them. A socket at (P, p) followed by
	// sockets at (A, a), (P, a) and (A, p), with A another IP of the same
	// family and a another port, is an RFC 5780 group of four: STUN
	// answers from it name and honour CHANGE-REQUEST with its sockets
	// only, so each address family has its own. Any other socket is a
	// group of its own, a plain STUN server. Listen opens them so, one
	// group per primary address. Conns[0] is the primary address (Addr);
	// it and the first socket of the other family are the embedded TURN
	// server's. The server closes them on Close.
	Conns []net.PacketConn

	// TTL is how long a registration lasts without a refresh. Zero means
	// 60 s. Clients refresh at a third of it, and a refresh sooner than
	// 1 s after the last accepted one is dropped: keep it well above 3 s.
	TTL time.Duration

	// MaxPeers bounds the registrations held, and apart from them the
	// tombstones of evicted ones (see doc.go, Abuse). Zero means 100000.
	MaxPeers int

	// MaxPeersPerIP bounds the live registrations of one IPv4 address or
	// IPv6 /64: a new identity registering from there, or a registered
	// one moving there, is refused while it holds that many. Zero means
	// 64. Behind a carrier-grade NAT many players share an address: raise
	// it for such networks.
	MaxPeersPerIP int

	// Listeners are TCP listeners, normally at the primary port: clients
	// whose UDP is blocked register over them (frames, see WriteFrame), and
	// with TURN embedded, TURN over TCP shares them (a connection's first
	// byte tells which). The server closes them on Close.
	Listeners []net.Listener
	// MaxStreams bounds the rendezvous TCP connections held. Zero means
	// 10000.
	MaxStreams int

	// TURN, when set, hands TURN credentials to registered peers that
	// allow relay, and can run the embedded TURN server.
	TURN *TURNConfig

	// Logger receives logs. Nil means silent.
	Logger *slog.Logger

	requestTTL time.Duration // tests: zero means requestTTL
}

// Server is the rendezvous service: it registers peers by PeerID at the
// public address it sees them at, introduces them to each other, and
// answers STUN Binding requests on the same sockets. All methods are safe
// for concurrent use. One reader goroutine per socket; Close stops them.
type Server struct {
	cfg     ServerConfig
	private [32]byte
	public  Key
	conns   []net.PacketConn
	addrs   []netip.AddrPort
	groups  []sockGroup // per socket, from addrs
	log     *slog.Logger
	wg      sync.WaitGroup
	// Per source IP (ipGroup) token buckets.
	newKeys     *ipLimiter // Diffie-Hellmans for PeerIDs the server has no key for
	registerIP  *ipLimiter // REGISTERs that passed the cookie check
	challengeIP *ipLimiter // CHALLENGEs sent
	introduceIP *ipLimiter // authenticated INTRODUCEs from registered origins
	done        chan struct{}
	closed      atomic.Bool

	turnServers [2][]TURNServer // as told to clients by family (familyIndex)
	turnUDP     []*muxConn      // by socket: the embedded TURN server's view of the sockets it answers at
	turnAddrs   []netip.AddrPort
	turnTCP     *chanListener
	relay       *relay.Server

	mu        sync.Mutex // guards the fields below
	peers     *peerTable
	streams   map[*stream]struct{}
	secret    [32]byte // current cookie secret
	oldSecret [32]byte
	rotated   time.Time

	stats serverCounters
}

// request is a peer's standing INTRODUCE toward a target: its consent to
// be introduced, until expires.
type request struct {
	ts      uint64    // the INTRODUCE's timestamp
	expires time.Time // requestTTL after the last INTRODUCE
	asked   time.Time // when the target was last sent an ASK for it
}

// requestLocked returns r's request toward target, made if need be: past
// maxRequests the one that would expire first (the oldest) gives way.
func (r *registration) requestLocked(target Key, now time.Time) *request {
	if q := r.requests[target]; q != nil {
		return q
	}
	if r.requests == nil {
		r.requests = make(map[Key]*request)
	}
	if len(r.requests) >= maxRequests {
		var oldest Key
		var at time.Time
		for k, q := range r.requests { // at most maxRequests
			if at.IsZero() || q.expires.Before(at) {
				oldest, at = k, q.expires
			}
		}
		delete(r.requests, oldest)
	}
	q := &request{}
	r.requests[target] = q
	return q
}

// origin is where a message came from and its answer goes: a UDP socket
// (by index) and address, or a TCP stream.
type origin struct {
	sock int
	st   *stream
	addr netip.AddrPort
}

type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time, perSec, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*perSec)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// NewServer starts a server on cfg.Conns.
func NewServer(cfg ServerConfig) (*Server, error) {
	if len(cfg.Conns) == 0 {
		return nil, errors.New("rendezvous: no sockets")
	}
	s := newServer(cfg)
	if s.private == ([32]byte{}) {
		rand.Read(s.private[:])
	}
	pub, err := curve25519.X25519(s.private[:], curve25519.Basepoint)
	if err != nil {
		return nil, err
	}
	copy(s.public[:], pub)
	for _, c := range cfg.Conns {
		ap, err := netip.ParseAddrPort(c.LocalAddr().String())
		if err != nil {
			return nil, err
		}
		s.addrs = append(s.addrs, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	s.groups = groupSockets(s.addrs)
	if err := s.startTURN(); err != nil {
		return nil, err
	}
	for i := range s.conns {
		s.wg.Add(1)
		go s.readLoop(i)
	}
	for _, l := range cfg.Listeners {
		s.wg.Add(1)
		go s.acceptLoop(l)
	}
	s.wg.Add(1)
	go s.sweepLoop()
	return s, nil
}

// newServer makes a server's state from cfg, with the defaults filled in:
// no key, addresses or goroutines yet.
func newServer(cfg ServerConfig) *Server {
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.MaxPeers == 0 {
		cfg.MaxPeers = DefaultMaxPeers
	}
	if cfg.MaxPeersPerIP == 0 {
		cfg.MaxPeersPerIP = DefaultMaxPeersPerIP
	}
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.requestTTL == 0 {
		cfg.requestTTL = requestTTL
	}
	if cfg.TURN != nil {
		t := *cfg.TURN
		cfg.TURN = &t
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	shards := limiterShards(cfg.MaxPeers)
	s := &Server{
		cfg:         cfg,
		private:     cfg.PrivateKey,
		conns:       cfg.Conns,
		log:         cfg.Logger,
		newKeys:     newIPLimiter(newKeysPerSecond, newKeysBurst, shards),
		registerIP:  newIPLimiter(registerPerSecIP, registerBurstIP, shards),
		challengeIP: newIPLimiter(challengesPerSecIP, challengeBurstIP, shards),
		introduceIP: newIPLimiter(introducePerSecIP, introduceBurstIP, shards),
		done:        make(chan struct{}),
		peers:       newPeerTable(cfg.TTL, cfg.MaxPeers, cfg.MaxPeersPerIP),
		streams:     make(map[*stream]struct{}),
	}
	rand.Read(s.secret[:])
	rand.Read(s.oldSecret[:])
	s.rotated = time.Now()
	return s
}

// sweepLoop evicts expired registrations every sweepEvery, so they go
// even when no message comes to do it.
func (s *Server) sweepLoop() {
	defer s.wg.Done()
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.mu.Lock()
			s.peers.evict(time.Now())
			s.mu.Unlock()
		}
	}
}

// Listen opens the server's sockets and starts it: one at each primary
// address, and for RFC 5780 three more for each primary address that has
// an alternate (see ServerConfig.Conns). Alternates go with primary
// addresses of their own family, in order: the first IPv4 alternate with
// the first IPv4 primary address, and so on; a primary address left
// without one is a plain STUN server. An alternate has another IP and
// another port than its primary address, and neither is unspecified or
// zero. IPv4 addresses are bound with "udp4" and IPv6 ones with "udp6",
// which is IPv6-only: 0.0.0.0 and [::] at one port are two sockets that
// coexist, and each family's STUN answers come from its own group. The
// first primary address is Addr; it and the first of the other family
// are the embedded TURN server's sockets.
func Listen(cfg ServerConfig, primary, alternate []netip.AddrPort) (*Server, error) {
	if len(primary) == 0 {
		return nil, fmt.Errorf("%w: none given", ErrListen)
	}
	unmap := func(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
	alts := map[bool][]netip.AddrPort{} // by "is IPv4"
	for _, a := range alternate {
		a = unmap(a)
		if !a.Addr().IsValid() {
			return nil, fmt.Errorf("%w: an invalid alternate address", ErrListen)
		}
		alts[a.Addr().Is4()] = append(alts[a.Addr().Is4()], a)
	}
	var addrs []netip.AddrPort
	for _, p := range primary {
		p = unmap(p)
		if !p.Addr().IsValid() {
			return nil, fmt.Errorf("%w: an invalid address", ErrListen)
		}
		addrs = append(addrs, p)
		fam := p.Addr().Is4()
		if len(alts[fam]) == 0 {
			continue
		}
		a := alts[fam][0]
		alts[fam] = alts[fam][1:]
		switch {
		case a.Addr() == p.Addr() || a.Port() == p.Port():
			return nil, fmt.Errorf("%w: alternate %v for %v: it needs another IP and another port", ErrListen, a, p)
		case p.Addr().IsUnspecified() || a.Addr().IsUnspecified() || p.Port() == 0 || a.Port() == 0:
			// The four sockets combine the two IPs and ports, and
			// OTHER-ADDRESS must name where answers really leave from.
			return nil, fmt.Errorf("%w: alternate %v for %v: RFC 5780 needs both IPs and ports given", ErrListen, a, p)
		}
		addrs = append(addrs, a, netip.AddrPortFrom(p.Addr(), a.Port()), netip.AddrPortFrom(a.Addr(), p.Port()))
	}
	for _, left := range alts {
		if len(left) > 0 {
			return nil, fmt.Errorf("%w: alternate %v has no primary address of its family left to go with", ErrListen, left[0])
		}
	}
	for _, a := range addrs {
		network := "udp4"
		if a.Addr().Is6() {
			network = "udp6" // Go sets IPV6_V6ONLY for it
		}
		c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(a))
		if err != nil {
			for _, c := range cfg.Conns {
				c.Close()
			}
			return nil, err
		}
		cfg.Conns = append(cfg.Conns, c)
	}
	s, err := NewServer(cfg)
	if err != nil {
		for _, c := range cfg.Conns {
			c.Close()
		}
		return nil, err
	}
	return s, nil
}

// PublicKey returns the server's public key, which clients may pin.
func (s *Server) PublicKey() Key { return s.public }

// Addr returns the primary address.
func (s *Server) Addr() netip.AddrPort { return s.addrs[0] }

// Addrs returns the primary address of each group of sockets (see
// ServerConfig.Conns), Addr first: each is an address clients may
// register at.
func (s *Server) Addrs() []netip.AddrPort {
	var out []netip.AddrPort
	for i, g := range s.groups {
		if g.base == i {
			out = append(out, s.addrs[i])
		}
	}
	return out
}

// Alternates returns, for each of Addrs, its group's RFC 5780 alternate
// address (another IP and port), or the zero AddrPort when it has none.
func (s *Server) Alternates() []netip.AddrPort {
	var out []netip.AddrPort
	for i, g := range s.groups {
		if g.base == i {
			a, _ := s.otherAddr(i)
			out = append(out, a)
		}
	}
	return out
}

// Close stops the server and closes its sockets. It is idempotent.
func (s *Server) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.done)
	if s.relay != nil {
		s.relay.Close()
	}
	for _, c := range s.conns {
		c.Close()
	}
	for _, l := range s.cfg.Listeners {
		l.Close()
	}
	s.mu.Lock()
	for st := range s.streams {
		st.conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) readLoop(i int) {
	defer s.wg.Done()
	// One byte more than maxDatagram: a read that fills it was a longer
	// datagram, cut short by the kernel, whatever the PacketConn (no
	// MSG_TRUNC needed), and is counted rather than parsed truncated.
	buf := make([]byte, maxDatagram+1)
	for {
		n, from, err := s.conns[i].ReadFrom(buf)
		if err != nil {
			if s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.stats.readErrors.Add(1)
			continue
		}
		if n > maxDatagram {
			s.stats.oversized.Add(1)
			continue
		}
		src, ok := addrPortOf(from)
		if !ok {
			continue
		}
		s.handle(origin{sock: i, addr: src}, buf[:n])
	}
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		ap, err := netip.ParseAddrPort(a.String())
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), err == nil
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

func (s *Server) send(o origin, b []byte) {
	var err error
	if o.st != nil {
		err = o.st.write(b)
	} else {
		_, err = s.conns[o.sock].WriteTo(b, net.UDPAddrFromAddrPort(o.addr))
	}
	if err != nil {
		s.stats.writeErrors.Add(1)
	}
}

// handle dispatches one message. Nothing that is not authenticated is
// answered with more bytes than it carried (TURN aside: it answers as TURN
// servers do, see doc.go).
func (s *Server) handle(o origin, b []byte) {
	s.stats.packets.Add(1)
	switch {
	case o.st == nil && s.turnUDP != nil && s.turnUDP[o.sock] != nil && isTURN(b):
		if !s.turnUDP[o.sock].push(b, o.addr) {
			s.stats.turnDropped.Add(1)
		}
	case o.st == nil && len(b) >= stunMinRequestLen && b[0] <= 0x03:
		s.handleSTUN(o.sock, b, o.addr)
	case len(b) > 0 && b[0] == typeRegister:
		s.handleRegister(o, b)
	case len(b) > 0 && b[0] == typeIntroduce:
		s.handleIntroduce(o, b)
	default:
		s.stats.malformed.Add(1)
	}
}

// cookie binds a registration to the address it comes from: only a client
// that receives at that address learns it.
func (s *Server) cookie(secret *[32]byte, src netip.AddrPort) [cookieLen]byte {
	h, _ := blake2s.New128(secret[:])
	ip := src.Addr().As16()
	h.Write(ip[:])
	h.Write([]byte{byte(src.Port() >> 8), byte(src.Port())})
	var c [cookieLen]byte
	h.Sum(c[:0])
	return c
}

// cookies returns the current cookie for src and whether c is valid (made
// under the current or the previous secret).
func (s *Server) cookies(src netip.AddrPort, c [cookieLen]byte, now time.Time) ([cookieLen]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Rotation is lazy; after a quiet spell of two periods or more both
	// secrets are new, so a cookie is never valid past 2×cookieRotate.
	switch since := now.Sub(s.rotated); {
	case since >= 2*cookieRotate:
		rand.Read(s.oldSecret[:])
		rand.Read(s.secret[:])
		s.rotated = now
	case since >= cookieRotate:
		s.oldSecret = s.secret
		rand.Read(s.secret[:])
		s.rotated = now
	}
	cur := s.cookie(&s.secret, src)
	return cur, c == cur || c == s.cookie(&s.oldSecret, src)
}

func (s *Server) handleRegister(o origin, b []byte) {
	src := o.addr
	r, ok := decodeRegister(b)
	if !ok {
		s.stats.malformed.Add(1)
		return
	}
	now := time.Now()
	cur, valid := s.cookies(src, r.Cookie, now)
	if !valid {
		if !s.challengeIP.Allow(src.Addr(), now) {
			s.stats.rateLimited.Add(1)
			return
		}
		s.stats.challenges.Add(1)
		s.send(o, encodeChallenge(cur, s.public)) // 52 bytes for at least 76
		return
	}
	if !s.registerIP.Allow(src.Addr(), now) {
		s.stats.rateLimited.Add(1)
		return
	}
	group := ipGroup(src.Addr())
	s.mu.Lock()
	s.peers.evict(now)
	key, known, live := s.peers.known(r.Peer)
	ipFull := s.peers.ipFull(group)
	s.mu.Unlock()
	if !live && ipFull {
		s.stats.peersPerIPRefused.Add(1) // before any Diffie-Hellman
		return
	}
	if !known {
		if !s.newKeys.Allow(src.Addr(), now) {
			s.stats.rateLimited.Add(1)
			return
		}
		var err error
		if key, err = deriveKey(s.private, r.Peer, r.Peer, s.public); err != nil {
			s.stats.badMAC.Add(1) // a low-order PeerID: no one holds its key
			return
		}
	}
	if !checkMAC(&key, b) {
		s.stats.badMAC.Add(1)
		return
	}
	s.mu.Lock()
	t := s.peers
	t.evict(now)
	reg := t.peers[r.Peer]
	switch {
	case reg == nil && r.Timestamp <= t.tombReg(r.Peer):
		s.mu.Unlock()
		s.stats.replayed.Add(1)
		return
	case reg == nil && len(t.peers) >= t.maxPeers:
		s.mu.Unlock()
		s.stats.full.Add(1)
		return
	case reg == nil && t.ipFull(group):
		s.mu.Unlock()
		s.stats.peersPerIPRefused.Add(1)
		return
	case reg == nil:
		reg = t.add(r.Peer, key)
	case r.Timestamp <= reg.lastReg:
		s.mu.Unlock()
		s.stats.replayed.Add(1)
		return
	case reg.at == o && now.Sub(reg.accepted) < refreshMin && reg.holds(r):
		s.mu.Unlock()
		s.stats.refreshLimited.Add(1)
		return
	case reg.group != group && t.ipFull(group):
		s.mu.Unlock()
		s.stats.peersPerIPRefused.Add(1) // a move into a full IP
		return
	}
	reg.lastReg = r.Timestamp
	reg.candidates = r.Candidates
	reg.mapping = r.Mapping
	reg.relayOK, reg.relayAddr = r.RelayAllowed, r.Relay
	t.accept(reg, o, now)
	s.mu.Unlock()
	s.stats.registrations.Add(1)
	reply := Registered{Observed: src, TTL: uint16(s.cfg.TTL / time.Second), Timestamp: r.Timestamp}
	if r.RelayAllowed {
		reply.TURN = s.turnFor(r.Peer, src, now)
	}
	s.send(o, reply.encode(&key))
}

func (s *Server) handleIntroduce(o origin, b []byte) {
	m, ok := decodeIntroduce(b)
	if !ok {
		s.stats.malformed.Add(1)
		return
	}
	now := time.Now()
	s.mu.Lock()
	s.peers.evict(now)
	req := s.peers.peers[m.Peer]
	if req == nil || now.After(req.expires) {
		s.mu.Unlock()
		s.stats.unregistered.Add(1) // it must register (again) first
		return
	}
	key := req.key
	if !checkMAC(&key, b) {
		s.mu.Unlock()
		s.stats.badMAC.Add(1)
		return
	}
	// Only from where the peer registered, which its cookie proved it
	// receives at: a copy sent from elsewhere is nobody's request, and a
	// peer that moved registers again (its cookie does not hold at its
	// new address, so it is challenged there first).
	if o != req.at {
		s.mu.Unlock()
		s.stats.unverified.Add(1)
		return
	}
	if m.Timestamp <= req.lastIntro {
		s.mu.Unlock()
		s.stats.replayed.Add(1)
		return
	}
	req.lastIntro = m.Timestamp
	if !req.intro.take(now, introducePerSec, introduceBurst) || !s.introduceIP.Allow(o.addr.Addr(), now) {
		s.mu.Unlock()
		s.stats.rateLimited.Add(1)
		return
	}
	target := s.peers.peers[m.Target]
	if target == nil || now.After(target.expires) || m.Target == m.Peer {
		s.mu.Unlock()
		s.stats.unknown.Add(1)
		u := Unknown{Target: m.Target, Timestamp: m.Timestamp}
		s.send(o, u.encode(&key))
		return
	}
	tkey, tat := target.key, target.at
	if back := target.requests[m.Peer]; back != nil && now.Before(back.expires) {
		// Both asked: each is told of the other, with its own request's
		// timestamp, at the same moment, so both start punching together.
		delete(target.requests, m.Peer)
		delete(req.requests, m.Target)
		toReq := target.peerMessage(m.Target, m.Timestamp)
		toTarget := req.peerMessage(m.Peer, back.ts)
		s.mu.Unlock()
		s.stats.introductions.Add(1)
		s.send(tat, toTarget.encode(&tkey))
		s.send(o, toReq.encode(&key))
		return
	}
	// Only the requester asked: its request stands as consent, and the
	// target is asked whether it consents too. The requester hears
	// nothing until it does.
	q := req.requestLocked(m.Target, now)
	q.ts, q.expires = m.Timestamp, now.Add(s.cfg.requestTTL)
	if !q.asked.IsZero() && now.Sub(q.asked) < askRepeat {
		s.mu.Unlock() // a retry within the pair's second: the request is refreshed, no more
		return
	}
	if !target.asks.take(now, asksPerSec, asksBurst) {
		s.mu.Unlock()
		s.stats.asksLimited.Add(1)
		return
	}
	q.asked = now
	ask := Ask{Asker: m.Peer, Timestamp: m.Timestamp, Observed: req.at.addr, Mapping: req.mapping}
	s.mu.Unlock()
	s.stats.asks.Add(1)
	s.send(tat, ask.encode(&tkey))
}

// peerMessage describes r (registered as about) to another peer.
func (r *registration) peerMessage(about Key, ts uint64) Peer {
	return Peer{About: about, Timestamp: ts, Mapping: r.mapping, Observed: r.at.addr,
		Candidates: r.candidates, RelayAllowed: r.relayOK, Relay: r.relayAddr, TCP: r.at.st != nil}
}

// ServerStats counts what a Server did and dropped.
type ServerStats struct {
	Packets       uint64 // datagrams and frames handled
	Registrations uint64 // REGISTERs accepted (new, refreshed or moved)
	Introductions uint64 // pairs introduced (PEER to both)
	Unknown       uint64 // INTRODUCEs answered UNKNOWN
	Challenges    uint64 // CHALLENGEs sent
	STUNAnswered  uint64
	STUNDropped   uint64
	Malformed     uint64
	BadMAC        uint64
	Replayed      uint64 // REGISTERs and INTRODUCEs with a timestamp not past the last
	// RateLimited counts what a token bucket dropped: REGISTERs past 10 a
	// second (burst 20) per source IP, Diffie-Hellmans for unknown PeerIDs
	// past 20 a second per source IP, CHALLENGEs past 20 a second (burst
	// 40) per source IP, INTRODUCEs past 20 a second (burst 40) per peer
	// or per source IP.
	RateLimited  uint64
	Unregistered uint64 // INTRODUCEs from a PeerID not registered
	Full         uint64 // new registrations refused at MaxPeers
	ReadErrors   uint64
	WriteErrors  uint64
	Streams      uint64 // TCP connections accepted
	// StreamsRefused: TCP connections refused at MaxStreams; TURNDropped:
	// TURN datagrams dropped at a full queue.
	StreamsRefused, TURNDropped uint64
	// Registered is the number of live registrations.
	Registered int
	// Asks counts ASKs sent to the targets of introductions; AsksLimited
	// those held back by the per-target rate (10 a second, burst 20).
	// Retries of a request within a second of its ASK are neither.
	Asks, AsksLimited uint64
	// Unverified counts INTRODUCEs with a valid MAC that did not come from
	// the origin (socket and address, or TCP stream) their sender is
	// registered at: dropped.
	Unverified uint64
	// PeersPerIPRefused counts REGISTERs refused because the source IP
	// (IPv4 address or IPv6 /64) holds MaxPeersPerIP live registrations.
	PeersPerIPRefused uint64
	// RefreshLimited counts REGISTERs dropped because the peer's last one
	// from the same origin was accepted less than a second before.
	RefreshLimited uint64
	// Evicted counts registrations dropped on expiry.
	Evicted uint64
	// Oversized counts UDP datagrams dropped for being larger than 2048
	// bytes.
	Oversized uint64
}

type serverCounters struct {
	packets, registrations, introductions, unknown atomic.Uint64
	challenges, stunAnswered, stunDropped          atomic.Uint64
	malformed, badMAC, replayed, rateLimited       atomic.Uint64
	unregistered, full, readErrors, writeErrors    atomic.Uint64
	streams, streamsRefused, turnDropped           atomic.Uint64
	asks, asksLimited, unverified                  atomic.Uint64
	peersPerIPRefused, refreshLimited, oversized   atomic.Uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	c := &s.stats
	s.mu.Lock()
	s.peers.evict(time.Now())
	n, evicted := len(s.peers.peers), s.peers.evicted
	s.mu.Unlock()
	return ServerStats{
		Packets: c.packets.Load(), Registrations: c.registrations.Load(),
		Introductions: c.introductions.Load(), Unknown: c.unknown.Load(),
		Challenges: c.challenges.Load(), STUNAnswered: c.stunAnswered.Load(), STUNDropped: c.stunDropped.Load(),
		Malformed: c.malformed.Load(), BadMAC: c.badMAC.Load(), Replayed: c.replayed.Load(),
		RateLimited: c.rateLimited.Load(), Unregistered: c.unregistered.Load(), Full: c.full.Load(),
		ReadErrors: c.readErrors.Load(), WriteErrors: c.writeErrors.Load(), Registered: n,
		Streams: c.streams.Load(), StreamsRefused: c.streamsRefused.Load(), TURNDropped: c.turnDropped.Load(),
		Asks: c.asks.Load(), AsksLimited: c.asksLimited.Load(), Unverified: c.unverified.Load(),
		PeersPerIPRefused: c.peersPerIPRefused.Load(), RefreshLimited: c.refreshLimited.Load(), Evicted: evicted,
		Oversized: c.oversized.Load(),
	}
}

// IsRegistered reports whether peer holds a live registration.
func (s *Server) IsRegistered(peer Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.peers.peers[peer]
	return r != nil && time.Now().Before(r.expires)
}
