package p2p

import (
	"net/netip"
	"time"

	"github.com/gamewire/gamewire/nat"
)

// peerPaths is what the node knows of one peer's paths beyond its route:
// the punch toward it and what it found, the address the server verified,
// and what the relay and direct TCP know of the peer.
//
// Ownership: only the path table's owner goroutine touches a peerPaths
// (traversal.do and traversal.must run code there); other goroutines read
// the peer's peerView, which the owner publishes after each change.
type peerPaths struct {
	punch    *nat.Punch     // running toward the peer, or nil
	started  time.Time      // the punch's start
	found    time.Time      // its first validated path (zero: none yet)
	route    Traversal      // the last path found, kept while the peer has a session or a punch
	routeTo  netip.AddrPort // route's remote address
	observed netip.AddrPort
	relay    *relayPeer // what introductions said of the peer's relay (nil: none yet)
	tcp      *tcpPeer   // direct TCP toward the peer (nil: not introduced for it)
}

// peerView is an immutable copy of a peer's path state, for the reader,
// sessions and GetP2PSessionState. The zero value is a peer the node knows
// nothing of.
type peerView struct {
	punch    *nat.Punch
	started  time.Time
	route    Traversal
	observed netip.AddrPort
	tcp      bool // introduced for direct TCP: links may be made with it
}

// peerOf returns peer's state, made if new (owner goroutine).
func (t *traversal) peerOf(peer PeerID) *peerPaths {
	pp := t.peers[peer]
	if pp == nil {
		pp = &peerPaths{}
		t.peers[peer] = pp
	}
	return pp
}

// publish makes pp's state what other goroutines read of peer (owner
// goroutine).
func (t *traversal) publish(peer PeerID, pp *peerPaths) {
	t.views.Store(peer, &peerView{punch: pp.punch, started: pp.started, route: pp.route,
		observed: pp.observed, tcp: pp.tcp != nil})
}

// drop forgets peer entirely (owner goroutine).
func (t *traversal) drop(peer PeerID) {
	delete(t.peers, peer)
	t.views.Delete(peer)
}

// view is what the owner last published of peer (any goroutine).
func (t *traversal) view(peer PeerID) *peerView {
	if v, ok := t.views.Load(peer); ok {
		return v.(*peerView)
	}
	return &peerView{}
}

// do runs f on the path owner goroutine while the traversal runs; dropped
// when the owner's queue is full, so f must be work that comes again.
func (t *traversal) do(f func()) {
	t.n.paths.Do(func() {
		if t.ctx.Err() == nil {
			f()
		}
	})
}

// must runs f on the path owner goroutine, never dropped; once the
// traversal stops, cleanup runs instead (there, or here when the owner has
// stopped too): f carries the result of work the node started (an
// allocation, a dial), and that result must not leak.
func (t *traversal) must(f, cleanup func()) {
	if cleanup == nil {
		cleanup = func() {}
	}
	ok := t.n.paths.Must(func() {
		if t.ctx.Err() != nil {
			cleanup()
			return
		}
		f()
	})
	if !ok {
		cleanup()
	}
}
