package rendezvous

import (
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/curve25519"

	"github.com/gamewire/gamewire/internal/secure"
	"github.com/gamewire/gamewire/relay"
)

// Server defaults.
const (
	DefaultTTL        = 60 * time.Second // a registration lasts this long unless refreshed
	DefaultMaxPeers   = 100000
	cookieRotate      = 2 * time.Minute
	newKeysPerSecond  = 20 // per source address: Diffie-Hellman for a client not yet known
	newKeysBurst      = 20
	introducePerSec   = 20 // per registered peer
	introduceBurst    = 40
	requestTTL        = 10 * time.Second // an INTRODUCE stands as consent this long
	maxRequests       = 16               // outstanding introduction requests per peer
	askRepeat         = time.Second      // at most one ASK a second per (asker, target)
	asksPerSec        = 10               // ASKs toward one target, from all askers
	asksBurst         = 20
	maxPacketSize     = 1500
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

	// Conns are the server's UDP sockets. Conns[0] is the primary address
	// clients register at. With four sockets the server supports RFC 5780:
	// Conns[1] has another IP and port, Conns[2] the primary IP and
	// Conns[1]'s port, Conns[3] Conns[1]'s IP and the primary port (Listen
	// opens them so). The server closes them on Close.
	Conns []net.PacketConn

	// TTL is how long a registration lasts without a refresh. Zero means
	// 60 s.
	TTL time.Duration

	// MaxPeers bounds the registrations held. Zero means 100000.
	MaxPeers int

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
	log     *slog.Logger
	newKeys *secure.RateLimiter
	wg      sync.WaitGroup
	done    chan struct{}
	closed  atomic.Bool

	turnServers []TURNServer
	turnUDP     *muxConn
	turnTCP     *chanListener
	relay       *relay.Server

	mu        sync.Mutex // guards the fields below
	peers     map[Key]*registration
	streams   map[*stream]struct{}
	secret    [32]byte // current cookie secret
	oldSecret [32]byte
	rotated   time.Time

	stats serverCounters
}

// registration is what the server knows of a peer. The key and the
// timestamps outlive the registration itself, so a replay of an old
// REGISTER stays refused.
type registration struct {
	key        SessionKey
	at         origin // where the peer registered from: pushes go there
	candidates []netip.AddrPort
	mapping    Mapping
	relayOK    bool
	relayAddr  netip.AddrPort
	expires    time.Time
	lastReg    uint64
	lastIntro  uint64
	intro      bucket // INTRODUCEs from this peer
	asks       bucket // ASKs toward this peer, from every asker
	// requests are the introductions this peer asked for that their
	// targets have not answered yet, by target: at most maxRequests.
	requests map[Key]*request
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
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.MaxPeers == 0 {
		cfg.MaxPeers = DefaultMaxPeers
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
	s := &Server{
		cfg:     cfg,
		private: cfg.PrivateKey,
		conns:   cfg.Conns,
		log:     cfg.Logger,
		newKeys: secure.NewRateLimiter(newKeysPerSecond, newKeysBurst),
		done:    make(chan struct{}),
		peers:   make(map[Key]*registration),
		streams: make(map[*stream]struct{}),
	}
	if s.private == ([32]byte{}) {
		rand.Read(s.private[:])
	}
	pub, err := curve25519.X25519(s.private[:], curve25519.Basepoint)
	if err != nil {
		return nil, err
	}
	copy(s.public[:], pub)
	rand.Read(s.secret[:])
	s.rotated = time.Now()
	for _, c := range cfg.Conns {
		ap, err := netip.ParseAddrPort(c.LocalAddr().String())
		if err != nil {
			return nil, err
		}
		s.addrs = append(s.addrs, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
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
	return s, nil
}

// Listen opens the server's sockets and starts it: one at primary, and for
// RFC 5780, when alternate is set, three more (see ServerConfig.Conns).
func Listen(cfg ServerConfig, primary, alternate string) (*Server, error) {
	p, err := netip.ParseAddrPort(primary)
	if err != nil {
		return nil, err
	}
	addrs := []netip.AddrPort{p}
	if alternate != "" {
		a, err := netip.ParseAddrPort(alternate)
		if err != nil {
			return nil, err
		}
		if a.Addr() == p.Addr() || a.Port() == p.Port() {
			return nil, errors.New("rendezvous: the alternate address needs another IP and another port")
		}
		addrs = append(addrs, a, netip.AddrPortFrom(p.Addr(), a.Port()), netip.AddrPortFrom(a.Addr(), p.Port()))
	}
	for _, a := range addrs {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
		if err != nil {
			for _, c := range cfg.Conns {
				c.Close()
			}
			return nil, err
		}
		cfg.Conns = append(cfg.Conns, c)
	}
	return NewServer(cfg)
}

// PublicKey returns the server's public key, which clients may pin.
func (s *Server) PublicKey() Key { return s.public }

// Addr returns the primary address.
func (s *Server) Addr() netip.AddrPort { return s.addrs[0] }

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
	buf := make([]byte, maxPacketSize)
	for {
		n, from, err := s.conns[i].ReadFrom(buf)
		if err != nil {
			if s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.stats.readErrors.Add(1)
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
	case o.st == nil && o.sock == 0 && s.turnUDP != nil && isTURN(b):
		if !s.turnUDP.push(b, o.addr) {
			s.stats.turnDropped.Add(1)
		}
	case o.st == nil && len(b) >= stunMinRequestLen && b[0] <= 0x03:
		s.handleSTUN(o.sock, b, o.addr)
	case len(b) > 0 && b[0] == TypeRegister:
		s.handleRegister(o, b)
	case len(b) > 0 && b[0] == TypeIntroduce:
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
	if now.Sub(s.rotated) >= cookieRotate {
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
		s.stats.challenges.Add(1)
		s.send(o, encodeChallenge(cur, s.public)) // 52 bytes for at least 76
		return
	}
	key, ok := s.keyFor(r.Peer, src.Addr(), now)
	if !ok {
		s.stats.rateLimited.Add(1)
		return
	}
	if !checkMAC(&key, b) {
		s.stats.badMAC.Add(1)
		return
	}
	s.mu.Lock()
	reg := s.peers[r.Peer]
	if reg == nil {
		if len(s.peers) >= s.cfg.MaxPeers && !s.evictExpiredLocked(now) {
			s.mu.Unlock()
			s.stats.full.Add(1)
			return
		}
		reg = &registration{key: key}
		s.peers[r.Peer] = reg
	}
	if r.Timestamp <= reg.lastReg {
		s.mu.Unlock()
		s.stats.replayed.Add(1)
		return
	}
	reg.lastReg = r.Timestamp
	reg.at = o
	reg.candidates = r.Candidates
	reg.mapping = r.Mapping
	reg.relayOK, reg.relayAddr = r.RelayAllowed, r.Relay
	reg.expires = now.Add(s.cfg.TTL)
	s.mu.Unlock()
	s.stats.registrations.Add(1)
	reply := Registered{Observed: src, TTL: uint16(s.cfg.TTL / time.Second), Timestamp: r.Timestamp}
	if r.RelayAllowed {
		reply.TURN = s.turnFor(r.Peer, now)
	}
	s.send(o, reply.encode(&key))
}

// keyFor returns the session key of peer: cached, or computed (a
// Diffie-Hellman, rate-limited per source address).
func (s *Server) keyFor(peer Key, src netip.Addr, now time.Time) (SessionKey, bool) {
	s.mu.Lock()
	reg := s.peers[peer]
	s.mu.Unlock()
	if reg != nil {
		return reg.key, true
	}
	if !s.newKeys.Allow(src, now) {
		return SessionKey{}, false
	}
	k, err := DeriveKey(s.private, peer, peer, s.public)
	return k, err == nil
}

// evictExpiredLocked drops expired registrations; it reports whether any
// room was made.
func (s *Server) evictExpiredLocked(now time.Time) bool {
	freed := false
	for k, r := range s.peers {
		if now.After(r.expires) {
			delete(s.peers, k)
			freed = true
		}
	}
	return freed
}

func (s *Server) handleIntroduce(o origin, b []byte) {
	m, ok := decodeIntroduce(b)
	if !ok {
		s.stats.malformed.Add(1)
		return
	}
	now := time.Now()
	s.mu.Lock()
	req := s.peers[m.Peer]
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
	if m.Timestamp <= req.lastIntro {
		s.mu.Unlock()
		s.stats.replayed.Add(1)
		return
	}
	req.lastIntro = m.Timestamp
	if !req.intro.take(now, introducePerSec, introduceBurst) {
		s.mu.Unlock()
		s.stats.rateLimited.Add(1)
		return
	}
	// The requester's own address follows where it asks from.
	req.at = o
	target := s.peers[m.Target]
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
	ask := Ask{Asker: m.Peer, Timestamp: m.Timestamp, Observed: req.at.addr}
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
	Packets, Registrations, Introductions, Unknown uint64
	Challenges, STUNAnswered, STUNDropped          uint64
	Malformed, BadMAC, Replayed, RateLimited       uint64
	Unregistered, Full, ReadErrors, WriteErrors    uint64
	Streams, StreamsRefused, TURNDropped           uint64 // TCP connections accepted and refused; TURN datagrams dropped at a full queue
	Registered                                     int    // registrations held now (expired ones included until evicted)
	// Asks counts ASKs sent to the targets of introductions; AsksLimited
	// those held back by the per-target rate (10 a second, burst 20).
	// Retries of a request within a second of its ASK are neither.
	Asks, AsksLimited uint64
}

type serverCounters struct {
	packets, registrations, introductions, unknown atomic.Uint64
	challenges, stunAnswered, stunDropped          atomic.Uint64
	malformed, badMAC, replayed, rateLimited       atomic.Uint64
	unregistered, full, readErrors, writeErrors    atomic.Uint64
	streams, streamsRefused, turnDropped           atomic.Uint64
	asks, asksLimited                              atomic.Uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	c := &s.stats
	s.mu.Lock()
	n := len(s.peers)
	s.mu.Unlock()
	return ServerStats{
		Packets: c.packets.Load(), Registrations: c.registrations.Load(),
		Introductions: c.introductions.Load(), Unknown: c.unknown.Load(),
		Challenges: c.challenges.Load(), STUNAnswered: c.stunAnswered.Load(), STUNDropped: c.stunDropped.Load(),
		Malformed: c.malformed.Load(), BadMAC: c.badMAC.Load(), Replayed: c.replayed.Load(),
		RateLimited: c.rateLimited.Load(), Unregistered: c.unregistered.Load(), Full: c.full.Load(),
		ReadErrors: c.readErrors.Load(), WriteErrors: c.writeErrors.Load(), Registered: n,
		Streams: c.streams.Load(), StreamsRefused: c.streamsRefused.Load(), TURNDropped: c.turnDropped.Load(),
		Asks: c.asks.Load(), AsksLimited: c.asksLimited.Load(),
	}
}

// IsRegistered reports whether peer holds a live registration.
func (s *Server) IsRegistered(peer Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.peers[peer]
	return r != nil && time.Now().Before(r.expires)
}
