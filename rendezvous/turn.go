package rendezvous

import (
	"bufio"
	"encoding/base32"
	"encoding/hex"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"

	"github.com/gamewire/gamewire/relay"
)

// TURNConfig makes a Server hand TURN credentials to registered peers that
// allow relay, and optionally run the embedded TURN server on its own
// sockets.
//
// Credentials are coturn's use-auth-secret kind, username "expiry:user"
// with user "PEERID.TAG": the peer's PeerID as p2p prints it and the first
// 8 hex digits of BLAKE2s-256 of this server's public key. The embedded
// relay accepts them only while they have not expired, the tag is this
// server's and the peer holds a live registration here: they die with the
// registration, and with the server (a restart under another key; one
// under the same key accepts them again once the peer has re-registered).
// It also refuses peers on private, loopback and link-local addresses and
// on the server's own ports (relay to relay between allocations aside),
// and caps allocations per user, per client IP and in all: see package
// relay, and Embed's AllowPeers, MaxPerUser, MaxPerIP, MaxAllocations.
//
// An external TURN server (a coturn) checks only the HMAC and the expiry,
// which is all use-auth-secret carries: its credentials cannot be revoked,
// hold for TTL whatever becomes of the registration, and survive a
// restart of this server (not a change of Secret). TTL is not lowered to
// make up for it: a TURN client keeps the credentials an allocation was
// made with for all its refreshes (pion's cannot change them), so a
// relayed session ends when they expire. Give such a coturn its own
// defences: denied-peer-ip for the private, CGNAT and link-local ranges
// (coturn relays to them unless told not to), no-multicast-peers, no
// loopback peers (no-loopback-peers, or allow-loopback-peers left unset,
// by version), user-quota and total-quota.
type TURNConfig struct {
	// Secret is the use-auth-secret shared with the TURN server(s).
	Secret string
	// TTL is how long issued credentials last. Zero means
	// relay.DefaultCredentialTTL.
	TTL time.Duration
	// Servers are the TURN servers peers are told of (a coturn, say), as
	// they are, whatever a peer's family. Empty with Embed means the
	// embedded server's addresses, over UDP and, with listeners, TCP:
	// those of the family a peer registered over first, then the other
	// family's (see embeddedTURN).
	Servers []TURNServer
	// Embed, when not nil, runs the embedded TURN server on the first UDP
	// socket of each address family (Conns[0], the first address given to
	// Listen, and the first of the other family) and on the TCP
	// listeners, at the ports of the rendezvous service. Its Secret,
	// PacketConns and Listeners are filled in here, its RelayIP and
	// RelayIP6, when unset, are the IPs of those sockets (unless
	// unspecified), every address of this server is among its OwnAddrs,
	// and its Authorize is this server's check (above), and the caller's
	// too when it sets one. An IPv6 socket without a RelayIP6 relays over
	// IPv4 (see package relay, IPv6).
	Embed *relay.ServerConfig
}

var peerIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// peerUser is a PeerID as p2p prints it (lowercase base32, no padding).
func peerUser(k Key) string {
	return strings.ToLower(peerIDEncoding.EncodeToString(k[:]))
}

// parsePeerUser reads peerUser's form, and only its canonical form: one
// key, one user.
func parsePeerUser(s string) (Key, bool) {
	var k Key
	if len(s) != peerIDEncoding.EncodedLen(len(k)) {
		return k, false
	}
	b, err := peerIDEncoding.DecodeString(strings.ToUpper(s))
	if err != nil || len(b) != len(k) {
		return k, false
	}
	copy(k[:], b)
	return k, peerUser(k) == s
}

// keyTag names a server key in TURN usernames.
func keyTag(k Key) string {
	h := blake2s.Sum256(k[:])
	return hex.EncodeToString(h[:4])
}

// turnUser is the user part of a peer's TURN username.
func turnUser(peer, server Key) string { return peerUser(peer) + "." + keyTag(server) }

// turnFor issues TURN credentials to a registered peer, registered from
// src: the TURN servers as told to its address family.
func (s *Server) turnFor(peer Key, src netip.AddrPort, now time.Time) *TURN {
	t := s.cfg.TURN
	if t == nil {
		return nil
	}
	servers := s.turnServers[familyIndex(src.Addr())]
	return &TURN{Servers: servers, Credentials: relay.NewCredentials(t.Secret, turnUser(peer, s.public), t.TTL, now)}
}

// familyIndex is 0 for IPv4 (and IPv4-mapped) addresses, 1 for IPv6.
func familyIndex(a netip.Addr) int {
	if a.Unmap().Is6() {
		return 1
	}
	return 0
}

// authorizeTURN is the embedded relay's Authorize: the username must name
// this server's key and a peer registered here now.
func (s *Server) authorizeTURN(username string, _ net.Addr) bool {
	_, user, ok := strings.Cut(username, ":")
	if !ok {
		return false
	}
	id, tag, ok := strings.Cut(user, ".")
	if !ok || tag != keyTag(s.public) {
		return false
	}
	peer, ok := parsePeerUser(id)
	return ok && s.IsRegistered(peer)
}

// startTURN sets up the TURN side of the server (NewServer).
func (s *Server) startTURN() error {
	t := s.cfg.TURN
	if t == nil {
		return nil
	}
	if t.Secret == "" {
		return relay.ErrNoCredentials
	}
	if t.TTL == 0 {
		t.TTL = relay.DefaultCredentialTTL
	}
	s.turnServers = [2][]TURNServer{t.Servers, t.Servers}
	if t.Embed == nil {
		return nil
	}
	cfg := *t.Embed
	cfg.Secret = t.Secret
	if also := cfg.Authorize; also != nil {
		cfg.Authorize = func(username string, src net.Addr) bool {
			return s.authorizeTURN(username, src) && also(username, src)
		}
	} else {
		cfg.Authorize = s.authorizeTURN
	}
	// The first socket of each family: Conns[0] and the first of the
	// other family, if any. Each group's first socket is its primary one.
	first := [2]int{-1, -1}
	for i, a := range s.addrs {
		if f := familyIndex(a.Addr()); first[f] < 0 {
			first[f] = i
		}
	}
	s.turnUDP = make([]*muxConn, len(s.conns))
	cfg.PacketConns = nil
	for _, i := range first {
		if i >= 0 {
			s.turnUDP[i] = newMuxConn(s.conns[i])
			cfg.PacketConns = append(cfg.PacketConns, s.turnUDP[i])
			s.turnAddrs = append(s.turnAddrs, s.addrs[i])
		}
	}
	slices.SortFunc(s.turnAddrs, func(a, b netip.AddrPort) int { return familyIndex(a.Addr()) - familyIndex(b.Addr()) })
	cfg.Listeners = nil
	if len(s.cfg.Listeners) > 0 {
		s.turnTCP = newChanListener(s.cfg.Listeners[0].Addr())
		cfg.Listeners = []net.Listener{s.turnTCP} // relay.Server tells its connections' families apart
	}
	relayIP := [2]*netip.Addr{&cfg.RelayIP, &cfg.RelayIP6}
	for f, i := range first {
		if i < 0 || relayIP[f].IsValid() {
			continue
		}
		if ip := s.addrs[i].Addr(); !ip.IsUnspecified() {
			*relayIP[f] = ip
		}
	}
	// Every socket and listener of this server is its own: no relay
	// socket reaches them (STUN alternates included).
	cfg.OwnAddrs = slices.Clone(cfg.OwnAddrs)
	for _, a := range s.addrs {
		cfg.OwnAddrs = append(cfg.OwnAddrs, a.Addr())
	}
	for _, l := range s.cfg.Listeners {
		if ap, ok := addrPortOf(l.Addr()); ok {
			cfg.OwnAddrs = append(cfg.OwnAddrs, ap.Addr())
		}
	}
	rs, err := relay.NewServer(cfg)
	if err != nil {
		return err
	}
	s.relay = rs
	if len(t.Servers) == 0 {
		for f := range s.turnServers {
			s.turnServers[f] = s.embeddedTURN(f, first, [2]netip.Addr{cfg.RelayIP, cfg.RelayIP6})
		}
	}
	return nil
}

// embeddedTURN lists the embedded TURN server's addresses for a client
// that registered over family reg (familyIndex): that family's first, UDP
// then TCP, at an unspecified IP, which the client fills in with the
// address it reaches this server at; then the other family's, if this
// server has a socket of it, at an explicit IP for the client to reach if
// it is dual-stack: that family's relay IP (the host's public one), or
// else the socket's own when it is not unspecified. TCP goes with a
// family that has a listener of its own, or for IPv4 a listener at the
// unspecified IPv6 address, which Go makes dual-stack unless told
// otherwise. At most 4 servers: REGISTERED's limit.
func (s *Server) embeddedTURN(reg int, first [2]int, relayIP [2]netip.Addr) []TURNServer {
	var out []TURNServer
	for _, f := range []int{reg, 1 - reg} {
		i := first[f]
		if i < 0 {
			continue
		}
		ip := []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}[f]
		if f != reg {
			ip = relayIP[f]
			if !ip.IsValid() {
				ip = s.addrs[i].Addr()
			}
			if ip.IsUnspecified() {
				continue // nowhere to tell
			}
		}
		out = append(out, TURNServer{Transport: relay.UDP, Addr: netip.AddrPortFrom(ip, s.addrs[i].Port())})
		if port, ok := s.tcpPort(f); ok {
			out = append(out, TURNServer{Transport: relay.TCP, Addr: netip.AddrPortFrom(ip, port)})
		}
	}
	return out
}

// tcpPort is the port of the first listener of family f (familyIndex),
// or for IPv4 the first at the unspecified IPv6 address.
func (s *Server) tcpPort(f int) (uint16, bool) {
	var dual []uint16
	for _, l := range s.cfg.Listeners {
		ap, ok := addrPortOf(l.Addr())
		switch {
		case !ok:
		case familyIndex(ap.Addr()) == f:
			return ap.Port(), true
		case f == 0 && ap.Addr() == netip.IPv6Unspecified():
			dual = append(dual, ap.Port())
		}
	}
	if len(dual) > 0 {
		return dual[0], true
	}
	return 0, false
}

// TURNAddrs returns the UDP addresses the embedded TURN server answers at
// (it answers over TCP at the Listeners), IPv4 first: the first socket of
// each address family (see TURNConfig.Embed). Nil without it.
func (s *Server) TURNAddrs() []netip.AddrPort { return slices.Clone(s.turnAddrs) }

// Relay returns the embedded TURN server, or nil.
func (s *Server) Relay() *relay.Server { return s.relay }

// isTURN reports a datagram for the TURN server: a STUN message that is
// not a Binding request (those the rendezvous answers), or ChannelData.
func isTURN(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	if b[0] >= 0x40 && b[0] <= 0x7F {
		return true
	}
	return b[0] <= 0x03 && !(b[0] == 0x00 && b[1] == 0x01) // 0x0001: Binding request
}

// muxConn is the TURN server's view of the primary UDP socket: the
// rendezvous reader hands it TURN datagrams (a bounded queue: past it they
// are dropped, and TURN retransmits), and its writes go out on the socket.
type muxConn struct {
	net.PacketConn
	in   chan muxPacket
	bufs sync.Pool // *[]byte of maxDatagram, reused: relayed traffic passes here
	done chan struct{}
	once sync.Once
}

type muxPacket struct {
	b    *[]byte
	from netip.AddrPort
}

const muxQueue = 1024

func newMuxConn(pc net.PacketConn) *muxConn {
	return &muxConn{PacketConn: pc, in: make(chan muxPacket, muxQueue), done: make(chan struct{})}
}

func (m *muxConn) push(b []byte, from netip.AddrPort) bool {
	buf, ok := m.bufs.Get().(*[]byte)
	if !ok {
		nb := make([]byte, 0, maxDatagram)
		buf = &nb
	}
	*buf = append((*buf)[:0], b...)
	select {
	case m.in <- muxPacket{buf, from}:
		return true
	default:
		m.bufs.Put(buf)
		return false
	}
}

func (m *muxConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-m.in:
		n := copy(b, *p.b)
		m.bufs.Put(p.b)
		return n, net.UDPAddrFromAddrPort(p.from), nil
	case <-m.done:
		return 0, nil, net.ErrClosed
	}
}

// Close ends the TURN server's reads; the socket stays the rendezvous
// server's.
func (m *muxConn) Close() error {
	m.once.Do(func() { close(m.done) })
	return nil
}

func (m *muxConn) SetDeadline(time.Time) error     { return nil }
func (m *muxConn) SetReadDeadline(time.Time) error { return nil }

// chanListener hands the TURN server the TCP connections whose first byte
// says TURN.
type chanListener struct {
	addr net.Addr
	in   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, in: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.in <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.in:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// peekedConn is a connection whose first bytes were read into r already.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
