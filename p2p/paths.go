package p2p

import (
	"net/netip"
	"time"

	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/p2p/internal/path"
)

// pathKindOf is the public kind of a socket kind.
func pathKindOf(k path.Kind) PathKind {
	switch k {
	case path.Relay:
		return PathRelay
	case path.TCP:
		return PathTCP
	}
	return PathDirect
}

// pathReporter hears the path layer's route changes (its owner goroutine,
// no lock held) and tells the session's side: PathChanged, the traversal's
// record, and the Conn, which resends at once what the old path swallowed.
type pathReporter struct{ n *Node }

func (r pathReporter) RouteChanged(p *path.Peer[*session], old, cur *path.Route, why path.Reason) {
	s, n := p.Owner, r.n
	if why == path.Begin || why == path.Establish {
		return // the session set these itself
	}
	s.lastPath.Store(time.Now().UnixNano())
	if u, ok := cur.Sock.(*udpSocket); ok && !u.main {
		u.grow() // an extra socket now carries a session
	}
	if why == path.Heard && n.trav != nil {
		n.trav.followed(s.peer, cur.Remote, cur.Sock)
	}
	if !s.live.Load() {
		return
	}
	kind := pathKindOf(cur.Kind())
	n.stats.pathChanges.Add(1)
	n.log.Debug("p2p: path changed", "peer", s.peer, "path", kind, "remote", cur.Remote, "why", why)
	n.events.push(PathChanged{Peer: s.peer, Path: kind, Remote: cur.Remote})
	s.mu.Lock()
	conn := s.conn
	s.unlock()
	if conn != nil {
		conn.ProbeNow()
	}
}

// Health is how s's current route is doing now, for an offer the path
// layer considers again (owner goroutine).
func (r pathReporter) Health(p *path.Peer[*session], now time.Time) path.Health {
	s := p.Owner
	s.mu.Lock()
	conn := s.conn
	s.unlock()
	return s.health(conn, now.UnixNano())
}

// offerSource is what found a route offered to a session.
type offerSource int

const (
	fromCheck offerSource = iota // a connectivity check validated it
	fromRelay                    // the relay: our allocation and the peer's relayed address
	fromTCP                      // a proven TCP link
)

// offer hands s a route path code found; the caller holds no lock. A
// session still connecting sends its handshake there (offerHandshakeLocked
// says when); an established one passes it to the path layer, which
// decides whether to move.
func (s *session) offer(o path.Offer, from offerSource, now time.Time) {
	if o.Route.Sock == nil {
		o.Route.Sock = s.node.main
	}
	s.mu.Lock()
	state, conn := s.state, s.conn
	if state == stConnecting {
		s.offerHandshakeLocked(o.Route, from, now)
	}
	s.unlock()
	if state != stEstablished {
		return
	}
	o.Route.Gen = s.gen.Load()
	o.Health = s.health(conn, now.UnixNano())
	if from == fromCheck {
		s.node.paths.Validate(s.paths, o)
	} else {
		s.node.paths.Offer(s.paths, o)
	}
}

// offerHandshakeLocked sends a connecting session's handshake on r: a
// session without one starts it there; one under way moves to a path a
// check validated (the speculative copy may not have got through), to the
// relay unless a TCP link carries it, and to a TCP link unless a punched
// UDP path does. Retries start over on the new path, as the peer's
// permission or link may still be on its way.
func (s *session) offerHandshakeLocked(r path.Route, from offerSource, now time.Time) {
	if s.hs == nil {
		s.startHandshakeOnLocked(r.Remote, r.Sock, now)
		return
	}
	cur := s.socket()
	switch {
	case cur == r.Sock && from != fromCheck:
		return
	case from == fromRelay && cur.Kind() == path.TCP:
		return
	case from == fromTCP && (cur.Kind() == path.TCP || cur.Kind() == path.Direct && s.node.trav != nil && s.node.trav.found(s.peer)):
		return
	}
	s.handshakeOnLocked(r.Remote, r.Sock)
	s.writeLocked(r.Sock, clone(s.hs.Message()), r.Remote)
	if from != fromCheck {
		s.hsInterval, s.hsNext = handshakeFirstRetry, now.Add(handshakeFirstRetry)
	}
}

// speculate starts a connecting session's handshake on the first of
// cands and sends copies to the others (traversal.speculate says why).
func (s *session) speculate(cands []nat.Candidate) {
	s.mu.Lock()
	defer s.unlock()
	if s.state != stConnecting || s.hs != nil {
		return
	}
	s.startHandshakeOnLocked(cands[0].Addr, nil, time.Now())
	if s.hs == nil {
		return
	}
	msg := clone(s.hs.Message())
	for _, c := range cands[1:] {
		s.writeLocked(s.node.main, msg, c.Addr)
	}
}

// resendHandshake sends a connecting session's initiation to src through
// sock (traversal.probedBy says why).
func (s *session) resendHandshake(sock path.Socket, src netip.AddrPort) {
	s.mu.Lock()
	defer s.unlock()
	if s.state == stConnecting && s.hs != nil {
		s.writeLocked(sock, clone(s.hs.Message()), src)
	}
}

// peerUnknown fails a session waiting for an introduction to a peer the
// server does not know.
func (s *session) peerUnknown() {
	s.mu.Lock()
	defer s.unlock()
	if s.state == stConnecting && s.introducing {
		s.failLocked(SessionErrorDestinationNotLoggedOn, false)
	}
}

// sessionView is what path code reads of a session, taken under its lock
// by the session itself.
type sessionView struct {
	state      sessionState
	relayOK    bool // relay was allowed when the attempt began
	onRelay    bool // the current route is over a relay allocation
	sockClosed bool // the current route's socket closed
	lost       bool // the current route stopped carrying the peer's packets (pathLostLocked)
}

func (s *session) view(now time.Time) sessionView {
	s.mu.Lock()
	defer s.unlock()
	v := sessionView{state: s.state, relayOK: s.relayOK}
	if r := s.current(); r != nil {
		v.onRelay, v.sockClosed = r.Kind() == path.Relay, r.Sock.Closed()
	}
	if s.state == stEstablished {
		v.lost = s.pathLostLocked(now)
	}
	return v
}
