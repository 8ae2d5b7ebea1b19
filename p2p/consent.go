package p2p

import (
	"net/netip"
	"sync"
	"time"

	"github.com/gamewire/gamewire/rendezvous"
)

// Consent before cost, with a rendezvous server. The server passes a
// peer's request for an introduction to this node first (an ask, with the
// asker's verified address only) and hands out candidates only when both
// sides asked. This node asks back, so consents, when it wants the peer:
// it sent to the peer, or the application accepted it. Until then it
// spends nothing on the asker: no probe, no birthday sockets, no TCP dial,
// no TURN allocation; the application hears of it as SessionRequest.
const (
	maxAsks = 256 // strangers' requests remembered at once
)

// asks are the requests of peers this node has not answered yet. Owned by
// no goroutine in particular: the reader adds (onAsk), the application
// takes (Accept, Close), the maintenance goroutine expires; mu guards the
// map, and no other lock is taken under it.
type asks struct {
	mu sync.Mutex
	m  map[PeerID]*ask
}

type ask struct {
	last    time.Time // latest ask
	raised  time.Time // last SessionRequest raised for it
	from    netip.AddrPort
	mapping rendezvous.Mapping
}

// note records an ask and reports whether a SessionRequest is due.
func (a *asks) note(peer PeerID, from netip.AddrPort, m rendezvous.Mapping, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = make(map[PeerID]*ask)
	}
	e := a.m[peer]
	if e == nil {
		if len(a.m) >= maxAsks {
			a.dropOldestLocked()
		}
		e = &ask{}
		a.m[peer] = e
	}
	e.last, e.from, e.mapping = now, from, m
	if !e.raised.IsZero() && now.Sub(e.raised) < requestRepeat {
		return false
	}
	e.raised = now
	return true
}

func (a *asks) dropOldestLocked() {
	var oldest PeerID
	var at time.Time
	for p, e := range a.m {
		if at.IsZero() || e.last.Before(at) {
			oldest, at = p, e.last
		}
	}
	delete(a.m, oldest)
}

// take removes peer's ask and returns it, if there was one.
func (a *asks) take(peer PeerID) (ask, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.m[peer]
	delete(a.m, peer)
	if !ok {
		return ask{}, false
	}
	return *e, true
}

// expire forgets asks not repeated within ttl: the asker gave up.
func (a *asks) expire(now time.Time, ttl time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for p, e := range a.m {
		if now.Sub(e.last) >= ttl {
			delete(a.m, p)
		}
	}
}

// onAsk handles the server's word that a peer asks for an introduction
// (the reader's goroutine, no lock held).
func (t *traversal) onAsk(a *rendezvous.Ask) {
	peer, from := PeerID(a.Asker), a.Observed
	n := t.n
	n.stats.asks.Add(1)
	if peer == n.id.PeerID() {
		return
	}
	if t.n.wants(peer) {
		t.consent(peer) // a session of ours waits for it, or it moved
		t.prePunch(peer, from, a.Mapping)
		return
	}
	if f := n.cfg.AllowIntroduction; f != nil && !f(peer) {
		n.stats.introRefused.Add(1)
		return
	}
	if n.sessionsFrom(from.Addr()) >= n.cfg.MaxSessionsPerIP {
		n.stats.introRefused.Add(1)
		return
	}
	if t.asks.note(peer, from, a.Mapping, time.Now()) {
		n.events.push(SessionRequest{Peer: peer})
	}
}

// consent asks the server to introduce us to peer, which completes its
// request: the server then gives both sides each other's candidates.
func (t *traversal) consent(peer PeerID) {
	now := time.Now()
	for _, c := range t.clients() {
		c.Introduce(rendezvous.Key(peer), now)
	}
}

// cancelIntroduction stops asking the server for peer.
func (t *traversal) cancelIntroduction(peer PeerID) {
	for _, c := range t.clients() {
		c.Cancel(rendezvous.Key(peer))
	}
}

// wants reports whether a live session with peer is one this node wants:
// it sent to the peer, or the application accepted it.
func (n *Node) wants(peer PeerID) bool {
	s := n.lookupSession(peer)
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.unlock()
	return s.accepted && (s.state == stConnecting || s.state == stEstablished)
}

// sessionsFrom counts the live sessions peers at ip opened.
func (n *Node) sessionsFrom(ip netip.Addr) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.censusLocked().opened[ipKey(ip)]
}

// acceptAsked opens the session a peer asked for through the server, if it
// did: the application's acceptance is this node's consent.
func (n *Node) acceptAsked(p PeerID) bool {
	if n.trav == nil {
		return false
	}
	a, ok := n.trav.asks.take(p)
	if !ok || !n.openAsked(p) {
		return false
	}
	n.trav.prePunch(p, a.from, a.mapping)
	return true
}

// openAsked opens an accepted session with a peer that asked for us.
func (n *Node) openAsked(p PeerID) bool {
	now := time.Now()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return false
	}
	s := n.liveSessionLocked(p)
	if s == nil {
		s = n.newSessionLocked(p, now)
		s.peerOpened = true // MaxSessionsPerIP counts it: the peer asked first
		s.mu.Lock()
	}
	n.mu.Unlock()
	defer s.unlock() // after n.mu: unlock sends
	if !s.accepted {
		s.acceptLocked()
	}
	if s.state == stConnecting && s.hs == nil {
		s.startHandshakeLocked(now)
	}
	return true
}
