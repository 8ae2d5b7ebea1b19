package p2p

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Event is delivered by Node.Events and, through RunCallbacks, to the
// Config callbacks: SessionRequest, SessionConnectFail, SessionClosed,
// PathChanged, RegistrationChanged or LANPeerFound.
type Event interface{ isEvent() }

// SessionRequest: Peer wants a session this node has not accepted: it sent
// data over a path it found (AddPeerAddr, LAN), or it asked the
// rendezvous server for an introduction, which the server passes on
// before any path exists (nothing is spent on the peer until the answer).
// It is raised again periodically while the peer keeps sending or asking
// and the session is unanswered. Answer with AcceptP2PSessionWithUser (or
// by sending to the peer), or refuse with CloseP2PSessionWithUser.
type SessionRequest struct{ Peer PeerID }

// SessionConnectFail: the session with Peer failed; its queued data was
// dropped. The next send to Peer starts a fresh attempt.
type SessionConnectFail struct {
	Peer  PeerID
	Error SessionError
}

// SessionClosed: Peer closed its session with this node, or restarted.
// Data it sends later raises a new SessionRequest.
type SessionClosed struct{ Peer PeerID }

// PathChanged: the established session with Peer moved to another path:
// from the relay to a direct path or back, or to a new address of the peer
// (a NAT rebinding). Path and Remote are the new path.
type PathChanged struct {
	Peer   PeerID
	Path   PathKind
	Remote netip.AddrPort
}

// RegistrationChanged: the node's registration with the rendezvous server
// came or went. Err says why it is not registered, when the node knows:
// ErrServerKey (the server's key is not the pinned one, or changed) or
// ErrServerUnreachable; nil while it is still trying. Raised on every
// change of either.
type RegistrationChanged struct {
	Registered bool
	Err        error
}

// LANPeerFound: LAN discovery (Config.LANDiscovery) heard Peer, a node of
// this AppID that LANPeers did not list a moment before: new, or back
// after 10 s of silence. Addr is where its beacon came from. The beacon
// only claims the PeerID; a session with the peer proves it. At most 16
// are raised a second (with bursts of 64), however many strangers beacon.
type LANPeerFound struct {
	Peer PeerID
	Addr netip.AddrPort
}

func (PathChanged) isEvent()         {}
func (LANPeerFound) isEvent()        {}
func (RegistrationChanged) isEvent() {}
func (SessionRequest) isEvent()      {}
func (SessionConnectFail) isEvent()  {}
func (SessionClosed) isEvent()       {}

// eventQueue is the one bounded queue behind Events and RunCallbacks. Push
// never blocks: past the bound events are dropped, counted and logged.
// Close closes the channel (Events readers see it end); pushes after it are
// dropped. mu is a leaf lock.
type eventQueue struct {
	ch      chan Event
	dropped atomic.Uint64
	log     *slog.Logger

	mu     sync.Mutex
	closed bool
}

// close ends the queue: events still in it stay readable, then the channel
// reports closed.
func (q *eventQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
}

func newEventQueue(size int, log *slog.Logger) *eventQueue {
	return &eventQueue{ch: make(chan Event, size), log: log}
}

func (q *eventQueue) push(e Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	select {
	case q.ch <- e:
	default:
		if n := q.dropped.Add(1); n&(n-1) == 0 { // log the 1st, 2nd, 4th, 8th... drop
			q.log.Warn("p2p: event queue full, events dropped", "dropped", n, "event", e)
		}
	}
}
