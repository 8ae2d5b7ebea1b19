package p2p

import (
	"context"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/p2p/internal/path"
	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

// Relay timing.
const (
	allocateTimeout = 5 * time.Second
	// A failed allocation is tried again after allocateRetryFirst, doubling
	// up to allocateRetry; so is a dead one that lived less than
	// allocateRetry (a server that kills them at once). One that lived
	// longer is replaced at once.
	allocateRetryFirst = 250 * time.Millisecond
	allocateRetry      = 5 * time.Second
	// The relay client refreshes its allocation every relayCheckEvery, and
	// at once when a session on it goes quiet; no answer within
	// relayCheckTimeout and the allocation is dead (relay.Client.Dead).
	// Detection, a new allocation and the exchange of relayed addresses
	// fit in the session's 10 s dead-peer interval.
	relayCheckEvery   = 5 * time.Second
	relayCheckTimeout = 2 * time.Second
	relayIntroEvery   = 500 * time.Millisecond // asking for a peer's relayed address
	permitRetry       = time.Second
	directFirstRetry  = 5 * time.Second // a relayed session looks for a direct path again
	directMaxRetry    = 40 * time.Second
	relayIdleRelease  = 30 * time.Second // an allocation no session has needed this long is released
)

// relayer is a node's TURN side: the credentials the rendezvous server
// issued, at most one allocation, and the peers that may need it.
//
// An allocation the relay client finds dead (its server restarted, say) is
// dropped at the next tick: sessions on it fall back to the main socket,
// every permission is forgotten, and the node registers again (the server
// learns it has no relayed address). Sessions that need the relay then
// bring a new allocation (serve), registered with its relayed address,
// with permissions installed again for each of them; while a session
// stays down its peer is introduced again every relayIntroEvery, since the
// peer's allocation, on the same server, likely died too and its new
// relayed address comes with the introduction.
//
// Ownership: everything but pub belongs to the path table's owner
// goroutine: the maintenance goroutine's tick, the rendezvous client's
// callbacks and the allocation and permission goroutines post their work
// there (traversal.do, traversal.must), and each peer's relayPeer lives in
// its peerPaths. pub is the allocation for the rendezvous client, which
// reads our relayed address when it registers.
type relayer struct {
	n   *Node
	t   *traversal
	pub atomic.Pointer[relay.Client]

	turn       *rendezvous.TURN
	client     *relay.Client
	sock       *relaySocket // the allocation as a socket sessions can use
	allocating bool
	failures   int // allocations that failed: each failure moves to the next server
	retryAt    time.Time
	retryGap   time.Duration // the wait after the next failure
	madeAt     time.Time     // when the allocation was made
	usedAt     time.Time     // last tick a peer needed the relay
}

// relayPeer is what the relayer knows of one peer.
type relayPeer struct {
	allowed bool // the peer allows relay
	tcp     bool // the peer's UDP is blocked
	mapping rendezvous.Mapping
	// public are the public addresses the peer advertises as its own (a
	// port mapping on its router, a host without NAT, IPv6): a NAT
	// mapping per destination does not keep us from reaching them.
	public    []netip.AddrPort
	addr      netip.AddrPort // its relayed address
	permitted netip.AddrPort // the relayed address our permission covers
	permitAt  time.Time      // a permission request is under way or failed: not before this
	// stale is addr when our allocation died: the peer's may have died
	// with it, so while its session is down it is introduced again.
	stale     netip.AddrPort
	since     time.Time // first introduction: the direct budget counts from here
	introAt   time.Time
	directAt  time.Time // next search for a direct path while relayed
	directGap time.Duration
}

func newRelayer(n *Node, t *traversal) *relayer {
	return &relayer{n: n, t: t, retryGap: allocateRetryFirst}
}

// setTURN takes the TURN servers and credentials of a registration (the
// rendezvous client's callback).
func (r *relayer) setTURN(t *rendezvous.TURN) {
	r.t.do(func() { r.takeTURN(t) })
}

func (r *relayer) takeTURN(t *rendezvous.TURN) {
	if r.failures > 0 && r.client == nil && (r.turn == nil || r.turn.Credentials != t.Credentials) {
		// Fresh credentials: a server that restarted refuses allocations
		// until the node registered again, so the ones that failed while it
		// did say nothing of these.
		r.retryAt, r.retryGap = time.Time{}, allocateRetryFirst
	}
	r.turn = t
}

// addr is our relayed address, for registrations (any goroutine).
func (r *relayer) addr() netip.AddrPort {
	if c := r.pub.Load(); c != nil {
		return c.RelayedAddr()
	}
	return netip.AddrPort{}
}

// server is the allocation's TURN server and how it is reached (zero:
// no allocation; any goroutine).
func (r *relayer) server() (netip.AddrPort, relay.Transport) {
	if c := r.pub.Load(); c != nil {
		return c.Server()
	}
	return netip.AddrPort{}, 0
}

// setClient makes c (or none) the allocation.
func (r *relayer) setClient(c *relay.Client, sock *relaySocket) {
	r.client, r.sock = c, sock
	r.pub.Store(c)
}

// onPeer records what an introduction says of the peer's relay (owner
// goroutine).
func (r *relayer) onPeer(pp *peerPaths, p *rendezvous.Peer, now time.Time) {
	rp := pp.relay
	if rp == nil {
		rp = &relayPeer{since: now}
		pp.relay = rp
	}
	rp.allowed, rp.tcp, rp.mapping = p.RelayAllowed, p.TCP, p.Mapping
	rp.public = slices.DeleteFunc(slices.Clone(p.Candidates), func(c netip.AddrPort) bool { return !nat.MayBeNATed(c.Addr()) })
	if p.Relay.IsValid() && p.Relay != rp.addr {
		rp.addr = p.Relay
		rp.permitAt = time.Time{} // a new address: its permission goes at once
	}
}

// restart makes the direct budget count from now: a new attempt. The
// caller may hold the session's lock.
func (r *relayer) restart(peer PeerID, now time.Time) {
	r.t.do(func() {
		if pp := r.t.peers[peer]; pp != nil && pp.relay != nil {
			pp.relay.since = now
		}
	})
}

// relayNeed is what a peer's session wants of the relay now.
type relayNeed struct {
	// use: the session (or the punch toward a peer that asked for us)
	// should use the relay now; prepare: have it ready (half the budget is
	// gone, so the allocation and the exchange of relayed addresses
	// overlap the rest of it).
	prepare, use bool
	relayed      bool // the session sits on the relay (the allocation we hold)
	down         bool // it is connecting, or established with its path lost
}

// need reports what peer's session needs of the relay.
func (r *relayer) need(peer PeerID, rp *relayPeer, now time.Time) relayNeed {
	if !rp.allowed {
		return relayNeed{}
	}
	s := r.n.lookupSession(peer)
	if s == nil {
		if !r.n.relayAllowed.Load() || !r.t.punching(peer) {
			return relayNeed{}
		}
		return relayNeed{prepare: r.overBudget(rp, now, 2), use: r.overBudget(rp, now, 1)}
	}
	v := s.view(now)
	if !v.relayOK {
		return relayNeed{}
	}
	switch v.state {
	case stConnecting:
		return relayNeed{prepare: r.overBudget(rp, now, 2), use: r.overBudget(rp, now, 1), down: true}
	case stEstablished:
		// A session on an allocation that was dropped as dead needs the
		// relay back before its path even counts as lost.
		dropped := v.onRelay && v.sockClosed
		relayed := v.onRelay && !dropped
		use := relayed || v.lost || dropped
		return relayNeed{prepare: use, use: use, relayed: relayed, down: v.lost || dropped}
	}
	return relayNeed{}
}

// overBudget: direct paths had the budget's 1/div, or cannot work: both
// NATs map per destination and neither side has a public address of its
// own to be reached at.
func (r *relayer) overBudget(rp *relayPeer, now time.Time, div time.Duration) bool {
	hard := rp.mapping == rendezvous.MappingEndpointDependent && r.t.mapping() == rendezvous.MappingEndpointDependent &&
		!r.reachable(rp)
	return rp.tcp || hard || r.t.udpBlocked() || now.Sub(rp.since) >= r.n.cfg.RelayAfter/div
}

// reachable reports whether either side has a public address of its own
// the other can send to: our port mapping, or one of the peer's in a
// family we have a public address in too.
func (r *relayer) reachable(rp *relayPeer) bool {
	if _, ok := r.t.pm.candidate(); ok {
		return true
	}
	v6 := slices.ContainsFunc(r.t.prefixes(), func(p netip.Prefix) bool { return p.Addr().Is6() && nat.MayBeNATed(p.Addr()) })
	return slices.ContainsFunc(rp.public, func(c netip.AddrPort) bool { return c.Addr().Is4() || v6 })
}

// tick runs the relay's timers (owner goroutine).
func (r *relayer) tick(now time.Time) {
	if r.dropDead(now) {
		r.t.reregister(now) // no relayed address now; and a restarted server learns of us again
	}
	needed := false
	for peer, pp := range r.t.peers {
		rp := pp.relay
		if rp == nil {
			continue
		}
		nd := r.need(peer, rp, now)
		if !nd.prepare {
			continue
		}
		needed = true
		if nd.relayed && nd.down && r.client != nil {
			r.client.Check() // traffic through it stopped: is the allocation still there?
		}
		r.serve(peer, rp, nd, now)
	}
	if needed {
		r.usedAt = now
	}
	if r.client != nil && now.Sub(r.usedAt) >= relayIdleRelease {
		r.release()
		r.retryGap = allocateRetryFirst // it lived: the backoff starts over
	}
}

// dropDead drops the allocation if the relay client found it dead,
// and schedules the next one: at once after a long life, else after the
// backoff. It reports whether it dropped one.
func (r *relayer) dropDead(now time.Time) bool {
	if r.client == nil {
		return false
	}
	select {
	case <-r.client.Dead():
	default:
		return false
	}
	srv, tr := r.client.Server()
	r.n.log.Debug("p2p: TURN allocation dead", "server", srv, "transport", tr, "relayed", r.client.RelayedAddr(), "err", r.client.Err())
	for _, pp := range r.t.peers {
		if rp := pp.relay; rp != nil {
			rp.stale = rp.addr
		}
	}
	if now.Sub(r.madeAt) >= allocateRetry {
		r.retryAt, r.retryGap = now, allocateRetryFirst
	} else {
		r.retryAt, r.retryGap = now.Add(r.retryGap), min(2*r.retryGap, allocateRetry)
	}
	r.release()
	return true
}

// serve moves a peer that needs the relay along: an allocation, the
// peer's relayed address, a permission, then the session onto the relay;
// and while relayed, a search for a direct path now and then.
func (r *relayer) serve(peer PeerID, rp *relayPeer, nd relayNeed, now time.Time) {
	if r.client == nil {
		r.allocate(now)
		return
	}
	if nd.relayed && !nd.down {
		rp.stale = netip.AddrPort{} // carrying traffic: the address is good
	}
	switch {
	case !rp.addr.IsValid():
		if now.Sub(rp.introAt) >= relayIntroEvery {
			rp.introAt = now
			r.t.introduce(peer, now) // brings its relayed address, and ours to it
		}
	case rp.permitted != rp.addr:
		if now.After(rp.permitAt) {
			rp.permitAt = now.Add(permitRetry)
			r.permit(peer, rp.addr, nd.use)
		}
	case nd.down && rp.addr == rp.stale && now.Sub(rp.introAt) >= relayIntroEvery:
		// Our allocation died and the peer's may have: its new relayed
		// address, once it has registered it, comes with an introduction
		// (which brings it ours too). Meanwhile the session uses the old one.
		rp.introAt = now
		r.t.introduce(peer, now)
	case nd.relayed && !nd.down:
		if rp.directGap == 0 {
			rp.directGap, rp.directAt = directFirstRetry, now.Add(directFirstRetry)
		}
		if now.After(rp.directAt) && !r.t.punching(peer) {
			rp.directGap = min(2*rp.directGap, directMaxRetry)
			rp.directAt = now.Add(rp.directGap)
			r.t.introduce(peer, now) // punches start on both sides
		}
	case nd.use:
		r.use(peer, rp.addr, r.sock, now)
	}
}

// allocate starts an allocation on the first TURN server the node
// can reach: UDP, or TCP (TLS when configured) when the node's own UDP
// is blocked.
func (r *relayer) allocate(now time.Time) {
	if r.allocating || r.turn == nil || now.Before(r.retryAt) || r.t.ctx.Err() != nil {
		return
	}
	srv, ok := pickServer(r.turn.Servers, r.failures, r.t.udpBlocked(), r.n.cfg.RelayTLS != nil)
	if !ok {
		return
	}
	r.allocating = true
	creds := r.turn.Credentials
	n := r.n
	sock := &relaySocket{node: n}
	var ready atomic.Bool
	cfg := relay.ClientConfig{
		Server: srv.Addr, Transport: srv.Transport, TLSConfig: n.cfg.RelayTLS, Credentials: creds,
		ListenPacket: n.cfg.ListenPacket, LocalIP: n.bindIP(), Dial: n.cfg.Dial, Logger: n.log,
		CheckInterval: relayCheckEvery, CheckTimeout: relayCheckTimeout,
		Receive: func(b []byte, from netip.AddrPort) {
			if ready.Load() {
				n.handlePacket(b, from, sock)
			}
		},
	}
	r.t.wg.Add(1)
	go func() {
		defer r.t.wg.Done()
		ctx, cancel := context.WithTimeout(r.t.ctx, allocateTimeout)
		c, err := relay.Allocate(ctx, cfg)
		cancel()
		if err != nil {
			n.log.Debug("p2p: TURN allocation failed", "server", srv.Addr, "transport", srv.Transport, "err", err)
		}
		r.t.must(func() { r.allocated(c, err, sock, &ready) }, func() {
			if c != nil {
				c.Close()
			}
		})
	}()
}

// allocated takes an allocation's outcome (owner goroutine).
func (r *relayer) allocated(c *relay.Client, err error, sock *relaySocket, ready *atomic.Bool) {
	r.allocating = false
	if err != nil {
		if c != nil {
			c.Close()
		}
		r.retryAt = time.Now().Add(r.retryGap)
		r.retryGap = min(2*r.retryGap, allocateRetry)
		r.failures++
		r.n.stats.relayFailures.Add(1)
		return
	}
	sock.c = c
	ready.Store(true)
	r.setClient(c, sock)
	r.usedAt, r.madeAt = time.Now(), time.Now()
	r.n.stats.relayAllocations.Add(1)
	srv, tr := c.Server()
	r.n.log.Debug("p2p: TURN allocation", "server", srv, "transport", tr, "relayed", c.RelayedAddr())
	r.t.reregister(time.Now()) // peers learn our relayed address from the server
}

// pickServer orders the usable servers by transport (UDP, TCP, TLS; no
// UDP when the node's UDP is blocked, no TLS without Config.RelayTLS) and
// returns the next after as many as have failed: a server that does not
// answer, or a transport a firewall drops, is not tried forever.
func pickServer(servers []rendezvous.TURNServer, failures int, udpBlocked, tls bool) (rendezvous.TURNServer, bool) {
	want := []relay.Transport{relay.UDP, relay.TCP, relay.TLS}
	if udpBlocked {
		want = []relay.Transport{relay.TCP, relay.TLS}
	}
	var usable []rendezvous.TURNServer
	for _, tr := range want {
		for _, s := range servers {
			if s.Transport == tr && (tr != relay.TLS || tls) {
				usable = append(usable, s)
			}
		}
	}
	if len(usable) == 0 {
		return rendezvous.TURNServer{}, false
	}
	return usable[failures%len(usable)], true
}

// permit installs a permission for the peer's relayed address, then, with
// use, moves its session onto the relay (otherwise the tick does once the
// budget is spent).
func (r *relayer) permit(peer PeerID, addr netip.AddrPort, use bool) {
	c, sock := r.client, r.sock
	r.t.wg.Add(1)
	go func() {
		defer r.t.wg.Done()
		if err := c.Permit(addr); err != nil {
			r.n.log.Debug("p2p: TURN permission failed", "peer", peer, "err", err)
			return
		}
		r.t.must(func() {
			pp := r.t.peers[peer]
			if pp == nil || pp.relay == nil || r.client != c {
				return // forgotten, or the allocation was replaced
			}
			pp.relay.permitted = addr
			if use {
				r.use(peer, addr, sock, time.Now())
			}
		}, nil)
	}()
}

// use offers peer's session the relay (session.offer): a connecting
// session sends its initiation there; for an established one the path
// layer decides (it moves there once the current path is lost, or to
// addr when the peer's relayed address changed). A peer without a session
// (it asked for us) needs nothing: its initiation will arrive through the
// relay.
func (r *relayer) use(peer PeerID, addr netip.AddrPort, sock *relaySocket, now time.Time) {
	if s := r.n.lookupSession(peer); s != nil && sock != nil {
		s.offer(path.Offer{Route: path.Route{Remote: addr, Sock: sock}}, fromRelay, now)
	}
}

// release gives the allocation back; sessions still on it fall back to
// the main socket and re-punch.
func (r *relayer) release() {
	r.sock.closed.Store(true)
	c := r.client
	r.setClient(nil, nil)
	for _, pp := range r.t.peers {
		if pp.relay != nil {
			pp.relay.permitted = netip.AddrPort{}
		}
	}
	r.t.wg.Add(1)
	go func() { // Close waits on the client's goroutines, which may be posting to the owner
		defer r.t.wg.Done()
		c.Close()
	}()
	r.n.log.Debug("p2p: TURN allocation released")
}

// close drops the allocation as the node closes (owner goroutine).
func (r *relayer) close() {
	c := r.client
	if r.sock != nil {
		r.sock.closed.Store(true)
	}
	r.setClient(nil, nil)
	if c != nil {
		c.Close()
	}
}
