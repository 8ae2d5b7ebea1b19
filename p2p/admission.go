package p2p

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gamewire/gamewire/p2p/internal/path"
)

// Admission of sessions that peers open (consent before cost). Identities
// are free, so a stranger can make any number of them, from one address or
// a few. What a node spends on sessions it did not ask for is bounded per
// source IP, so one source cannot crowd out the others:
//
//   - pending sessions (opened by a peer, not accepted by the application)
//     at most Config.MaxPendingPerIP per source IP and
//     Config.MaxPendingSessions in all; when the total is reached, a
//     newcomer from a less busy IP evicts the oldest pending session of the
//     busiest IP instead of being refused;
//   - as soon as an IP holds a pending session, or pending sessions reach a
//     quarter of the total, an initiation from it needs a cookie (a round
//     trip proving its source address) before any session state exists,
//     whatever the rate, so spoofed sources cannot fill another IP's share;
//   - peer-opened sessions, accepted or not, at most Config.MaxSessionsPerIP
//     per source IP;
//   - a responder sends nothing on a session but its handshake response
//     until the peer proves its address with an authenticated packet
//     (unconfirmed sessions), and forgets an unaccepted one that stays
//     unconfirmed for unconfirmedTTL;
//   - every answer to an unauthenticated datagram (handshake response,
//     cookie reply, refusal) passes ampGuard: bytes toward an address are
//     at most ampFactor times the bytes received from it.
const (
	unconfirmedTTL = 5 * time.Second
	ampFactor      = 3
	ampEntries     = 4096
	ampIdle        = 10 * time.Second
)

// ipKey groups source addresses as the per-IP limits count them: an IPv4
// address, or an IPv6 /64 (one host usually owns a whole /64).
func ipKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// census counts the sessions peers opened, per source IP (n.mu held while
// it is taken).
type census struct {
	pending int                       // peer-opened, not accepted
	byIP    map[netip.Addr]int        // pending, per IP
	opened  map[netip.Addr]int        // peer-opened and live, accepted or not, per IP
	oldest  map[netip.Addr]pendingRef // the oldest pending session per IP
}

type pendingRef struct {
	s       *session
	started time.Time
}

// censusLocked takes the census (n.mu held; takes each session's mu).
func (n *Node) censusLocked() census {
	c := census{byIP: map[netip.Addr]int{}, opened: map[netip.Addr]int{}, oldest: map[netip.Addr]pendingRef{}}
	for _, s := range n.sessions {
		s.mu.Lock()
		live := s.state == stConnecting || s.state == stEstablished
		if s.peerOpened && live {
			if r, ok := s.remoteAddr(); ok {
				ip := ipKey(r.Addr())
				c.opened[ip]++
				if s.state == stEstablished && !s.accepted {
					c.pending++
					c.byIP[ip]++
					if o, ok := c.oldest[ip]; !ok || s.started.Before(o.started) {
						c.oldest[ip] = pendingRef{s, s.started}
					}
				}
			}
		}
		s.unlock()
	}
	return c
}

// admit is what becomes of an initiation that would open a session.
type admit int

const (
	admitOK     admit = iota
	admitSilent       // no answer: the peer retries and may find room
	admitRefuse       // refused: the peer fails with NoRightsToApp
)

// admitLocked decides whether an authenticated initiation from src, from a
// peer with no live session, may open one (n.mu held). It may evict the
// oldest pending session of the busiest IP to make room.
func (n *Node) admitLocked(src netip.AddrPort, now time.Time) admit {
	c := n.censusLocked()
	defer func() { n.adm.publish(c, n.cfg.MaxPendingSessions) }()
	ip := ipKey(src.Addr())
	switch {
	case c.opened[ip] >= n.cfg.MaxSessionsPerIP:
		n.stats.sessionsPerIPRefused.Add(1)
		return admitRefuse
	case c.byIP[ip] >= n.cfg.MaxPendingPerIP:
		n.stats.pendingRefused.Add(1)
		return admitSilent
	case c.pending < n.cfg.MaxPendingSessions:
		c.pending++
		c.byIP[ip]++
		return admitOK
	}
	busiest, most := netip.Addr{}, 0
	for a, k := range c.byIP {
		if k > most {
			busiest, most = a, k
		}
	}
	if most <= c.byIP[ip]+1 {
		n.stats.pendingRefused.Add(1) // every IP holds its fair share
		return admitSilent
	}
	victim := c.oldest[busiest].s
	victim.mu.Lock()
	if victim.state == stEstablished && !victim.accepted {
		victim.endQuietlyLocked(now)
		n.stats.pendingEvicted.Add(1)
	}
	victim.mu.Unlock()
	c.byIP[busiest]--
	c.byIP[ip]++
	return admitOK
}

// admission is what the reader needs to know of pending sessions without
// taking Node.mu: whether to demand a cookie before any state exists. The
// handshake worker and the maintenance goroutine publish it.
type admission struct {
	pressure atomic.Bool  // pending sessions reached a quarter of the total
	pending  atomic.Int64 // pending sessions in the last census
	mu       sync.Mutex   // guards byIP
	byIP     map[netip.Addr]int
}

func (a *admission) publish(c census, max int) {
	a.pressure.Store(c.pending*4 >= max)
	a.pending.Store(int64(c.pending))
	a.mu.Lock()
	a.byIP = c.byIP
	a.mu.Unlock()
}

// demandCookie reports whether an initiation from src must carry a cookie.
func (a *admission) demandCookie(src netip.AddrPort) bool {
	if a.pressure.Load() {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byIP[ipKey(src.Addr())] > 0
}

// ampGuard bounds what the node sends toward addresses it has not
// verified: at most ampFactor times what it received from each (QUIC's
// anti-amplification rule). Safe for concurrent use. The table is bounded:
// when full, idle entries are swept (at most once a second, so a flood of
// spoofed sources costs a scan a second, not one a packet), and past that
// an arbitrary entry makes room, which only forgets what an address sent
// and so errs toward sending less.
type ampGuard struct {
	mu    sync.Mutex
	m     map[netip.AddrPort]*ampEntry
	swept time.Time
}

type ampEntry struct {
	in, out int
	seen    time.Time
}

func (g *ampGuard) received(a netip.AddrPort, n int, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = make(map[netip.AddrPort]*ampEntry)
	}
	e := g.m[a]
	if e == nil {
		if len(g.m) >= ampEntries {
			g.makeRoomLocked(now)
		}
		e = &ampEntry{}
		g.m[a] = e
	}
	e.in += n
	e.seen = now
}

// allow reports whether n more bytes may go to a, and counts them if so.
func (g *ampGuard) allow(a netip.AddrPort, n int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.m[a]
	if e == nil || e.out+n > ampFactor*e.in {
		return false
	}
	e.out += n
	return true
}

// makeRoomLocked frees an entry of the full table.
func (g *ampGuard) makeRoomLocked(now time.Time) {
	if now.Sub(g.swept) >= time.Second {
		g.swept = now
		for a, e := range g.m {
			if now.Sub(e.seen) >= ampIdle {
				delete(g.m, a)
			}
		}
	}
	for a := range g.m {
		if len(g.m) < ampEntries {
			return
		}
		delete(g.m, a)
	}
}

// proven reports whether the node already knows that peer receives at src
// over sock, so a session it wants with the peer may send there at once
// (as responder, without waiting for the peer's first packet): a relay or
// TCP link (proven when it was set up), the address the application gave
// (AddPeerAddr), the public address the server verified for the peer, or
// a path a connectivity check validated.
func (n *Node) proven(peer PeerID, src netip.AddrPort, sock path.Socket) bool {
	if sock != nil && sock.Kind() != path.Direct {
		return true
	}
	if a, ok := n.peerAddr(peer); ok && a == src {
		return true
	}
	return n.trav != nil && n.trav.proven(peer, src)
}

// answer sends an answer to an unauthenticated datagram from src, within
// the amplification bound.
func (n *Node) answer(sock path.Socket, pkt []byte, src netip.AddrPort) {
	if !n.amp.allow(src, len(pkt)) {
		n.stats.amplificationDropped.Add(1)
		return
	}
	sock.WriteTo(pkt, src)
}

// answerLocked is answer from under s.mu: the datagram goes out on unlock.
func (n *Node) answerLocked(s *session, sock path.Socket, pkt []byte, src netip.AddrPort) {
	if !n.amp.allow(src, len(pkt)) {
		n.stats.amplificationDropped.Add(1)
		return
	}
	s.writeLocked(sock, pkt, src)
}
