package p2p

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/curve25519"

	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/p2p/internal/path"
	"github.com/gamewire/gamewire/rendezvous"
)

// NAT traversal timing.
const (
	discoverTimeout  = 2 * time.Second // the mapping test before the first registration
	filteringTimeout = 5 * time.Second
	improveWindow    = time.Second // after a path is found, a better one may still turn up
	pathDeadAfter    = 2500 * time.Millisecond
	// pathSuspectAfter: a path quiet this long whose acknowledgements are
	// overdue by ackOverdue (data or keepalive unanswered well past the
	// probe timeout) is re-punched sooner than pathDeadAfter.
	pathSuspectAfter = 600 * time.Millisecond
	ackOverdue       = 200 * time.Millisecond
	repunchEvery     = 3 * time.Second
	// reaskEvery: a connecting session with no path asks for its peer
	// again this often (session.reaskLocked); longer than the birthday
	// approach takes nearly always, which a new introduction would only
	// disturb.
	reaskEvery     = 5 * time.Second
	hostCandidates = 4
	// askTTL: an ask not repeated for this long is forgotten (the asker's
	// client repeats its request every 2 s at most while it waits).
	askTTL = 10 * time.Second
)

// traversal is a node's NAT traversal: its rendezvous client, STUN client
// and NAT behaviour, and each peer's path state (peerPaths: the punch
// toward it, the relay's and direct TCP's view of it).
//
// Ownership: peers, and the relayer's and tcpDirect's per-peer and
// allocation state, belong to the path table's owner goroutine; the
// reader, the maintenance goroutine, sessions and the punch, allocation,
// permission, dial and link goroutines post work there (do, must) and read
// views. mu is a leaf lock over the NAT behaviour and the probe key cache.
type traversal struct {
	n         *Node
	server    netip.AddrPort     // registration goes here
	other     netip.AddrPort     // the server's address in the node's other family, if any
	rv        *rendezvous.Client // over the node's UDP socket
	tcp       *tcpRendezvous     // over TCP, when UDP is blocked
	direct    *tcpDirect         // direct TCP links
	serverKey *rendezvous.Key
	started   time.Time
	stun      *nat.STUN
	relay     *relayer
	asks      asks             // strangers' requests for an introduction
	reg       *registration    // what WaitRegistered and RegistrationChanged report
	extra     []netip.AddrPort // Config.STUNServers
	pm        *portMapper      // nil: no port mapping (portmap.go)
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	peers map[PeerID]*peerPaths // the path owner goroutine's
	views sync.Map              // PeerID → *peerView, published by the owner

	mu        sync.Mutex // leaf
	behaviour nat.Behaviour
	// otherBehaviour is the NAT's in the node's other family (other):
	// its Mapped is a candidate beside the host ones.
	otherBehaviour nat.Behaviour
	ready          bool // the mapping test is done: registration may start
	tested         bool // the filtering test is done too (NATType)
	keys           map[PeerID]nat.ProbeKey
	fresh          []freshPort // heal.go
	newsAt         time.Time   // advertise sent news the server has not confirmed yet (portmap.go)
}

// parseRendezvous splits "[peerid@]host:port[,host:port...]": the
// server's addresses, one per family at most (the first of each; a host
// name counts with every address it resolves to).
func parseRendezvous(s string) (*rendezvous.Key, []netip.AddrPort, error) {
	var key *rendezvous.Key
	orig := s
	if k, hostport, ok := strings.Cut(s, "@"); ok {
		id, err := ParsePeerID(k)
		if err != nil {
			return nil, nil, fmt.Errorf("p2p: Rendezvous %q: %w", orig, err)
		}
		rk := rendezvous.Key(id)
		key, s = &rk, hostport
	}
	var addrs []netip.AddrPort
	for _, hp := range strings.Split(s, ",") {
		as, err := resolveUDPAll(strings.TrimSpace(hp))
		if err != nil {
			return nil, nil, fmt.Errorf("p2p: Rendezvous %q: %w", orig, err)
		}
		for _, a := range as {
			if !slices.ContainsFunc(addrs, func(b netip.AddrPort) bool { return b.Addr().Is4() == a.Addr().Is4() }) {
				addrs = append(addrs, a)
			}
		}
	}
	return key, addrs, nil
}

// resolveUDP resolves hostport to one address, IPv4 for a name.
func resolveUDP(hostport string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	ua, err := net.ResolveUDPAddr("udp4", hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// resolveUDPAll resolves hostport to its addresses in both families.
func resolveUDPAll(hostport string) ([]netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	pn, err := net.LookupPort("udp", port)
	if err != nil {
		return nil, err
	}
	ips, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
	if err != nil {
		return nil, err
	}
	var out []netip.AddrPort
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(pn)))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no addresses", host)
	}
	return out, nil
}

// pickRendezvous picks among the server's addresses the one to register
// with, IPv4 unless the node has no IPv4 address but loopback, and the
// other family's, if the node has an address in that family too (its
// server-reflexive address and NAT there are learnt by STUN alone).
// Without prefixes (interfaces unknown) both families count as present.
func pickRendezvous(addrs []netip.AddrPort, prefixes []netip.Prefix, dualStack bool) (primary, other netip.AddrPort) {
	var v4, v6 netip.AddrPort
	for _, a := range addrs {
		switch {
		case a.Addr().Is4() && !v4.IsValid():
			v4 = a
		case a.Addr().Is6() && !v6.IsValid():
			v6 = a
		}
	}
	has := func(six bool) bool {
		return len(prefixes) == 0 || slices.ContainsFunc(prefixes, func(p netip.Prefix) bool {
			a := p.Addr()
			return a.Is6() == six && !a.IsLoopback() && !a.IsLinkLocalUnicast()
		})
	}
	has4, has6 := has(false), has(true) && dualStack
	switch {
	case v4.IsValid() && (has4 || !v6.IsValid()):
		primary = v4
		if has6 {
			other = v6
		}
	default:
		primary = v6
		if has4 {
			other = v4
		}
	}
	return primary, other
}

func newTraversal(n *Node) (*traversal, error) {
	key, servers, err := parseRendezvous(n.cfg.Rendezvous)
	if err != nil {
		return nil, err
	}
	server, other := pickRendezvous(servers, n.prefixes, n.dualStack())
	t := &traversal{n: n, server: server, other: other, peers: map[PeerID]*peerPaths{}, keys: map[PeerID]nat.ProbeKey{}}
	for _, s := range n.cfg.STUNServers {
		a, err := resolveUDP(s)
		if err != nil {
			return nil, fmt.Errorf("p2p: STUN server %q: %w", s, err)
		}
		t.extra = append(t.extra, a)
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.stun = nat.NewSTUN(n.main.WriteTo)
	t.relay = newRelayer(n, t)
	t.tcp = &tcpRendezvous{t: t}
	t.direct = newTCPDirect(t)
	t.started = time.Now() // before the maintenance goroutine reads it
	t.reg = newRegistration()
	t.serverKey = key
	cfg := t.rvConfig()
	cfg.Send = func(b []byte, to netip.AddrPort) { n.main.WriteTo(b, to) }
	t.rv = rendezvous.NewClient(cfg)
	t.pm = newPortMapper(t) // set before any goroutine reads it
	return t, nil
}

// rvConfig is the rendezvous client configuration, Send aside: the UDP
// client and the TCP one share it.
func (t *traversal) rvConfig() rendezvous.ClientConfig {
	n := t.n
	return rendezvous.ClientConfig{
		Server:       t.server,
		ServerKey:    t.serverKey,
		Private:      n.id.private,
		Public:       rendezvous.Key(n.id.public),
		Candidates:   t.candidates,
		Mapping:      t.mapping,
		OnPeer:       t.onPeer,
		OnAsk:        t.onAsk,
		OnUnknown:    func(k rendezvous.Key) { t.onUnknown(PeerID(k)) },
		OnTURN:       t.relay.setTURN,
		Relay:        t.relay.addr,
		RelayAllowed: n.relayAllowed.Load,
		Logger:       n.log,
	}
}

// registered reports whether the node is registered, over UDP or TCP.
func (t *traversal) registered() bool { return isRegistered(t.rv) || t.tcp.client() != nil }

// isRegistered reports whether c holds a registration.
func isRegistered(c *rendezvous.Client) bool {
	_, ok := c.Registered()
	return ok
}

// clients are the rendezvous clients to ask through: UDP, and TCP while
// it runs (an introduction asked on both is answered twice, harmlessly).
func (t *traversal) clients() []*rendezvous.Client {
	if c := t.tcp.all(); c != nil {
		return []*rendezvous.Client{t.rv, c}
	}
	return []*rendezvous.Client{t.rv}
}

// reregister registers again at once, on every client.
func (t *traversal) reregister(now time.Time) {
	for _, c := range t.clients() {
		c.Reregister(now)
	}
}

// start runs NAT behaviour discovery; registration starts once the mapping
// test is done (or timed out), so peers learn it with our address.
func (t *traversal) start() {
	if t.pm != nil {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.pm.run(t.ctx)
		}()
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		var other sync.WaitGroup
		if t.other.IsValid() {
			other.Go(t.discoverOther) // beside the primary family's tests: the filtering test takes seconds
		}
		b := t.discover(t.server, t.extra)
		t.mu.Lock()
		t.behaviour, t.ready = b, true
		t.mu.Unlock()
		if b.Alternate.IsValid() {
			f := t.discoverFiltering(t.server)
			t.mu.Lock()
			t.behaviour.Filtering = f
			t.mu.Unlock()
		}
		t.n.log.Debug("p2p: NAT behaviour", "mapped", b.Mapped, "mapping", b.Mapping, "filtering", t.Behaviour().Filtering)
		other.Wait()
		t.mu.Lock()
		t.tested = true
		t.mu.Unlock()
	}()
}

// discover runs the mapping test against server (and extra).
func (t *traversal) discover(server netip.AddrPort, extra []netip.AddrPort) nat.Behaviour {
	ctx, cancel := context.WithTimeout(t.ctx, discoverTimeout)
	defer cancel()
	b, err := nat.Discover(ctx, t.stun, server, extra)
	if err != nil && !errors.Is(err, context.Canceled) {
		t.n.log.Debug("p2p: NAT discovery", "server", server, "err", err)
	}
	return b
}

// discoverOther learns the node's server-reflexive address and NAT
// behaviour in its other family, by STUN to the server's address there
// (registration stays with the primary one), and advertises the address
// when it is not one of the host candidates already (an IPv6 firewall
// without NAT shows the host's own address).
func (t *traversal) discoverOther() {
	b := t.discover(t.other, nil)
	b.Mapped = netip.AddrPortFrom(b.Mapped.Addr().Unmap(), b.Mapped.Port())
	if b.Alternate.IsValid() {
		b.Filtering = t.discoverFiltering(t.other)
	}
	t.mu.Lock()
	t.otherBehaviour = b
	t.mu.Unlock()
	t.n.log.Debug("p2p: NAT behaviour", "server", t.other, "mapped", b.Mapped, "mapping", b.Mapping, "filtering", b.Filtering)
	if b.Mapped.IsValid() && !slices.Contains(t.hostCandidates(), b.Mapped) {
		t.advertise()
	}
}

// discoverFiltering tests the NAT's filtering toward server from a socket
// of its own (nat.DiscoverFiltering says why), while registration goes
// ahead: nothing waits for the answer, it only informs.
func (t *traversal) discoverFiltering(server netip.AddrPort) nat.Filtering {
	network, ip := "udp4", t.n.bindIP()
	if server.Addr().Is6() {
		network, ip = "udp6", "::"
		if a := addrOfConn(t.n.main.pc).Addr(); a.Is6() && !a.IsUnspecified() {
			ip = a.String()
		}
	}
	pc, err := t.n.cfg.ListenPacket(network, net.JoinHostPort(ip, "0"))
	if err != nil {
		t.n.log.Debug("p2p: filtering test socket", "err", err)
		return nat.FilteringUnknown
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(t.ctx, filteringTimeout)
	defer cancel()
	return nat.DiscoverFiltering(ctx, pc, server)
}

// stop ends the traversal: its clients, and on the path owner goroutine
// the punches, the allocation and the TCP links. Work posted afterwards
// finds the context cancelled and only cleans up.
func (t *traversal) stop() {
	t.cancel()
	t.rv.Close()
	t.tcp.close()
	t.direct.closeListener()
	t.n.paths.Must(func() {
		t.direct.close()
		t.relay.close()
		for peer, pp := range t.peers {
			if pp.punch != nil {
				pp.punch.Stop()
			}
			t.drop(peer)
		}
	})
	t.n.paths.Sync()
	t.wg.Wait()
	t.pm.close()
}

// Behaviour reports what the node learnt of its NAT.
func (t *traversal) Behaviour() nat.Behaviour {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.behaviour
}

func (t *traversal) mapping() rendezvous.Mapping {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.behaviour.Mapping
}

// candidates are the addresses a registration advertises: host ones, the
// port mapping on our router, the server-reflexive address in our other
// family and the fresh ports of punches healing a stall.
func (t *traversal) candidates() []netip.AddrPort {
	out := t.hostCandidates()
	if a, ok := t.pm.candidate(); ok && !slices.Contains(out, a) {
		out = append(out, a)
	}
	t.mu.Lock()
	other := t.otherBehaviour.Mapped
	t.mu.Unlock()
	if other.IsValid() && !slices.Contains(out, other) {
		out = append(out, other)
	}
	return append(out, t.freshCandidates()...)
}

// hostCandidates are the addresses peers on our LAN can use.
func (t *traversal) hostCandidates() []netip.AddrPort {
	local := addrOfConn(t.n.main.pc)
	if !local.Addr().IsUnspecified() {
		return []netip.AddrPort{local}
	}
	ifs, err := t.n.cfg.Interfaces()
	if err != nil {
		return nil
	}
	return nat.HostCandidates(ifs, local.Port(), hostCandidates)
}

func (t *traversal) prefixes() []netip.Prefix { return t.n.prefixes }

// tick drives registration (maintenance goroutine) and, on the path owner
// goroutine, retires finished punches and runs the TCP links' and the
// relay's timers.
func (t *traversal) tick(now time.Time) {
	t.mu.Lock()
	ready := t.ready
	t.mu.Unlock()
	t.asks.expire(now, askTTL)
	if ready {
		t.rv.Tick(now)
	}
	t.noteRegistration(now)
	t.newsConfirmed(now)
	t.tcp.tick(now)
	relaying := ready || t.udpBlocked()
	t.do(func() {
		now := time.Now()
		t.retire(now)
		t.direct.tick(now)
		if relaying {
			t.relay.tick(now)
		}
	})
}

// retire stops punches that are done: a path found improveWindow ago, or
// the connect timeout spent (owner goroutine).
func (t *traversal) retire(now time.Time) {
	for peer, pp := range t.peers {
		if pp.punch == nil {
			continue
		}
		finished := !pp.found.IsZero() && now.Sub(pp.found) >= improveWindow
		if !finished && now.Sub(pp.started) < t.n.cfg.ConnectTimeout {
			continue
		}
		pp.punch.Stop() // it waits for the punch's goroutine, which never waits for us
		pp.punch, pp.started, pp.found = nil, time.Time{}, time.Time{}
		t.forgetFresh(peer)
		if t.n.lookupSession(peer) == nil {
			t.drop(peer)
		} else {
			t.publish(peer, pp)
		}
	}
}

// established records the path a session came up on, unless that is the
// path recorded: the speculative handshake can win the race, or come up
// on another candidate than the first check validated. The
// caller may hold the session's lock: the record is made on the path
// owner goroutine.
func (t *traversal) established(peer PeerID, remote netip.AddrPort, sock path.Socket) {
	if sock != nil && sock.Kind() == path.Relay {
		return // the relay is not a path traversal found
	}
	t.do(func() {
		pp := t.peers[peer]
		if pp == nil || pp.punch == nil || (pp.route.Punched && pp.routeTo == remote) {
			return
		}
		pp.route, pp.routeTo = t.recordOf(pp.punch, pp.started, remote, sock), remote
		t.publish(peer, pp)
	})
}

// recordOf is the Traversal of a session that came up on remote over sock
// while punch ran.
func (t *traversal) recordOf(p *nat.Punch, started time.Time, remote netip.AddrPort, sock path.Socket) Traversal {
	st := p.Stats()
	return Traversal{Punched: true, Candidate: p.KindOf(remote), Checks: st.Checks,
		Sockets: st.Sockets, Birthday: p.FromBirthday(remote, t.natSocket(sock)), After: time.Since(started), Healed: st.Stalled}
}

// natSocket is sock as the punch knows it: nil for the main socket.
func (t *traversal) natSocket(sock path.Socket) nat.Socket {
	switch s := sock.(type) {
	case *udpSocket:
		if !s.main {
			return s
		}
	case *relaySocket:
		return s
	}
	return nil
}

// followed records the direct path a session moved to because the peer's
// packets came from it (the peer's checks found it first, say while the
// session was relayed) while our punch toward it runs, unless that path is
// the one recorded: GetP2PSessionState's Traversal then describes the path
// in use.
//
// It runs on the path owner goroutine (the path reporter).
func (t *traversal) followed(peer PeerID, remote netip.AddrPort, sock path.Socket) {
	if sock.Kind() != path.Direct {
		return
	}
	pp := t.peers[peer]
	if pp == nil || pp.punch == nil || (pp.route.Punched && pp.routeTo == remote) {
		return // no traversal toward the peer (its packets alone brought the address), or recorded
	}
	st := pp.punch.Stats()
	pp.routeTo = remote
	pp.route = Traversal{Punched: true, Candidate: pp.punch.KindOf(remote), Checks: st.Checks, Sockets: st.Sockets,
		Birthday: t.natSocket(sock) != nil || pp.punch.FromBirthday(remote, nil), // extra sockets are the birthday approach's
		After:    time.Since(pp.started)}
	t.publish(peer, pp)
}

// better returns the punch's best validated path to peer if it ranks above
// remote (over sock), else remote and sock; and the candidate priority of
// the one returned (0: no traversal toward the peer).
//
// The route a handshake came over is proven as well as any check proves
// one, so it ranks by its own candidate's priority even before a check
// validated it. Ranking it 0 let a worse check finishing first (IPv4
// server-reflexive beside an IPv6 host route) take the settling session
// off the better route, and the better one's check then back: two moves a
// side where none was due.
func (t *traversal) better(peer PeerID, remote netip.AddrPort, sock path.Socket) (netip.AddrPort, path.Socket, uint32) {
	p := t.view(peer).punch
	if p == nil {
		return remote, sock, 0
	}
	best, ok := p.Best()
	return pickBetter(best, ok, remote, sock, p.KindOf(remote), t.prefixes(), t.socketOf)
}

// pickBetter is better's choice between the handshake's route (remote over
// sock, a candidate of kind) and the punch's best validated path, if any.
func pickBetter(best nat.Path, ok bool, remote netip.AddrPort, sock path.Socket, kind nat.Kind,
	prefixes []netip.Prefix, socketOf func(nat.Path) path.Socket) (netip.AddrPort, path.Socket, uint32) {
	own := uint32(nat.Priority(nat.Candidate{Addr: remote, Kind: kind}, prefixes))
	relayed := sock != nil && sock.Kind() == path.Relay
	switch {
	case !ok:
		if relayed {
			return remote, sock, 0
		}
		return remote, sock, own
	case relayed || uint32(best.Priority) > own:
		return best.Remote, socketOf(best), uint32(best.Priority) // any direct path beats the relay
	}
	return remote, sock, own
}

// socketOf is the node's socket a validated path goes through.
func (t *traversal) socketOf(p nat.Path) path.Socket {
	if s, ok := p.Socket.(path.Socket); ok && s != nil {
		return s
	}
	return t.n.main
}

// proven reports whether peer is known to receive at addr: the server
// verified it (a cookie round trip there), or a check validated it.
func (t *traversal) proven(peer PeerID, addr netip.AddrPort) bool {
	v := t.view(peer)
	if v.observed == addr {
		return true
	}
	if v.punch == nil {
		return false
	}
	best, ok := v.punch.Best()
	return ok && best.Remote == addr
}

// route is what traversal found for peer (zero if nothing); cur is the
// session's route if it is established. A session that came up an instant
// ago may not have its record on the owner goroutine yet: it is derived
// here the same way.
func (t *traversal) route(peer PeerID, cur *path.Route) Traversal {
	v := t.view(peer)
	if v.route.Punched || v.punch == nil || cur == nil || cur.Kind() == path.Relay {
		return v.route
	}
	return t.recordOf(v.punch, v.started, cur.Remote, cur.Sock)
}

// forget drops what traversal keeps for a peer whose session ended, unless
// a punch toward it runs or a new session began meanwhile.
func (t *traversal) forget(peer PeerID) {
	t.do(func() {
		if pp := t.peers[peer]; pp != nil && pp.punch == nil && t.n.lookupSession(peer) == nil {
			t.drop(peer)
		}
	})
}

// punching reports whether a punch toward peer is running and has not
// found a path yet (owner goroutine).
func (t *traversal) punching(peer PeerID) bool {
	pp := t.peers[peer]
	return pp != nil && pp.punch != nil && pp.found.IsZero()
}

// found reports whether a punch toward peer validated a UDP path (any
// goroutine). It asks the punch itself: the owner's record of the find
// may still be on its way when a TCP link is offered right after it.
func (t *traversal) found(peer PeerID) bool {
	p := t.view(peer).punch
	if p == nil {
		return false
	}
	_, ok := p.Best()
	return ok
}

// udpBlocked reports whether the node reaches the rendezvous server only
// over TCP.
func (t *traversal) udpBlocked() bool {
	return !isRegistered(t.rv) && t.tcp.client() != nil
}

// introduce asks the server to introduce us to peer.
func (t *traversal) introduce(peer PeerID, now time.Time) {
	for _, c := range t.clients() {
		c.Introduce(rendezvous.Key(peer), now)
	}
}

// repunch looks for a new path to peer: the old one stopped carrying
// packets (a NAT rebooted, a mapping changed, the network moved). We
// register again, so the server sees our address now, and ask for a new
// introduction, which starts punches on both sides.
func (t *traversal) repunch(peer PeerID, now time.Time) {
	t.n.log.Debug("p2p: path lost, punching again", "peer", peer)
	t.n.stats.repunches.Add(1)
	t.reregister(now)
	t.introduce(peer, now)
}

// handleOther takes STUN answers and rendezvous messages.
func (t *traversal) handleOther(b []byte, src netip.AddrPort) bool {
	switch {
	case nat.IsSTUN(b):
		return t.stun.Handle(b, src)
	case rendezvous.IsRendezvous(b):
		return t.rv.Handle(b, src)
	}
	return false
}

// handleProbe passes a probe to the punch toward its sender; probes from
// peers we are not punching toward are dropped (checking them would cost a
// Diffie-Hellman each).
func (t *traversal) handleProbe(b []byte, src netip.AddrPort, sock path.Socket) bool {
	pr, ok := nat.ParseProbe(b)
	if !ok {
		return false
	}
	p := t.view(PeerID(pr.Sender)).punch
	if p == nil || !p.HandleProbe(b, src, t.natSocket(sock)) {
		return false
	}
	if !pr.Ack {
		t.probedBy(PeerID(pr.Sender), src, sock)
	}
	return true
}

// probedBy sends our pending handshake initiation straight back to where
// the peer's authenticated probe came from: its NAT is open toward us
// there now, and the speculative copy may have arrived before it was.
// Waiting for our own check to validate the path would cost a round trip.
func (t *traversal) probedBy(peer PeerID, src netip.AddrPort, sock path.Socket) {
	if s := t.n.lookupSession(peer); s != nil {
		s.resendHandshake(sock, src)
	}
}

// probeKey derives (and caches) the key probes with peer are sealed with.
func (t *traversal) probeKey(peer PeerID) (nat.ProbeKey, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.probeKeyLocked(peer)
}

func (t *traversal) probeKeyLocked(peer PeerID) (nat.ProbeKey, error) {
	if k, ok := t.keys[peer]; ok {
		return k, nil
	}
	dh, err := curve25519.X25519(t.n.id.private[:], peer[:])
	if err != nil {
		return nat.ProbeKey{}, err
	}
	k := nat.NewProbeKey(dh, t.n.id.public, peer)
	if len(t.keys) > 4096 {
		clear(t.keys) // a cache: cheap to rebuild
	}
	t.keys[peer] = k
	return k, nil
}

// onPeer starts (or feeds) the punch toward an introduced peer. The
// server introduces only peers that both asked, so this node wants the
// peer; one it does not want (a stale or forged introduction) costs
// nothing.
func (t *traversal) onPeer(p *rendezvous.Peer) {
	peer := PeerID(p.About)
	if !t.n.wants(peer) {
		t.n.stats.introIgnored.Add(1)
		return
	}
	cands := []nat.Candidate{{Addr: p.Observed, Kind: nat.KindServerRefl}}
	for _, c := range p.Candidates {
		cands = append(cands, nat.Candidate{Addr: c, Kind: nat.KindHost})
	}
	t.n.log.Debug("p2p: introduced", "peer", peer, "public", p.Observed, "host", p.Candidates, "relay", p.Relay, "relay allowed", p.RelayAllowed, "tcp", p.TCP)
	udpBlocked := t.udpBlocked()
	t.do(func() {
		pp := t.peerOf(peer)
		pp.observed = p.Observed
		t.relay.onPeer(pp, p, time.Now())
		t.direct.onPeer(peer, pp, p, udpBlocked)
		t.startPunch(peer, pp, cands, p.Mapping, false)
	})
}

// prePunch starts checks toward the address the server verified for an
// asker, as soon as this node consents: its NAT opens toward the asker
// a round trip before the introduction brings the other candidates, so
// the asker's first packets are not dropped there. Only when both NATs map
// endpoint-independently: behind a NAT that maps per destination the
// address the server saw is not the one the peer will use, and the
// birthday approach needs the whole introduction to start right.
func (t *traversal) prePunch(peer PeerID, from netip.AddrPort, m rendezvous.Mapping) {
	if !from.IsValid() || m != rendezvous.MappingEndpointIndependent || t.mapping() != rendezvous.MappingEndpointIndependent {
		return
	}
	t.do(func() {
		pp := t.peerOf(peer)
		if !pp.observed.IsValid() {
			pp.observed = from
		}
		t.startPunch(peer, pp, []nat.Candidate{{Addr: from, Kind: nat.KindServerRefl}}, m, true)
	})
}

// startPunch starts the punch toward peer, or feeds the one running
// (owner goroutine). hold: only prime the NAT toward cands, until the
// introduction (nat.PunchConfig.Hold).
func (t *traversal) startPunch(peer PeerID, pp *peerPaths, cands []nat.Candidate, mapping rendezvous.Mapping, hold bool) {
	if pp.punch != nil {
		pp.punch.AddCandidates(cands)
		pp.punch.SetPeerMapping(mapping)
		t.publish(peer, pp)
		if !hold {
			t.speculate(peer, cands) // the punch may have started held
		}
		return
	}
	key, err := t.probeKey(peer)
	if err != nil || peer == t.n.id.public {
		t.publish(peer, pp)
		return
	}
	beh := t.Behaviour()
	var punch *nat.Punch // read by OnPath only after the view below published it
	punch = nat.StartPunch(nat.PunchConfig{
		Local:         t.n.id.public,
		Peer:          peer,
		Key:           key,
		Main:          t.n.main,
		OpenSocket:    t.openSocket,
		LocalPrefixes: t.prefixes(),
		LocalMapping:  t.mapping(),
		PeerMapping:   mapping,
		Candidates:    cands,
		LocalPublic:   beh.Mapped.Addr().Unmap(),
		HealDependent: beh.Filtering == nat.FilteringEndpointIndependent || beh.Filtering == nat.FilteringAddressDependent,
		Hold:          hold,
		OnPath:        func(path nat.Path) { t.onPath(peer, punch, path) },
		OnStall:       func() { t.heal(peer, punch) },
		Logger:        t.n.log,
	})
	pp.punch, pp.started, pp.found = punch, time.Now(), time.Time{}
	t.publish(peer, pp)
	if !hold {
		// Held, the handshake waits for the introduction too: sent now, it
		// would reach the asker's NAT before the asker has primed it.
		t.speculate(peer, cands)
	}
	// The peer's initiation may have come through before the introduction
	// reached us (its checks started first): the session is up, and this
	// is the first moment a route can describe its path.
	if s := t.n.lookupSession(peer); s != nil && s.live.Load() {
		if r := s.current(); r != nil && r.Kind() != path.Relay && !pp.route.Punched {
			pp.route, pp.routeTo = t.recordOf(pp.punch, pp.started, r.Remote, r.Sock), r.Remote
			t.publish(peer, pp)
		}
	}
}

// speculate sends the handshake of a session waiting for this peer to its
// candidates at once, beside the first probes, instead of after a probe
// round trip: once the peer's own probes have opened its NAT the initiation
// gets through (the peer answers each identical copy from its cache), and if
// it does not, the first validated path sends it again. Toward addresses
// behind the peer's NAT it waits as the first checks do (nat.PrimeWait):
// arriving before the peer has primed its NAT, it would make the
// conntrack entry that moves the peer's mapping.
func (t *traversal) speculate(peer PeerID, cands []nat.Candidate) {
	s := t.n.lookupSession(peer)
	if s == nil || len(cands) == 0 {
		return
	}
	cands = nat.Sort(cands, t.prefixes()) // the best first: the session starts out on it
	for _, c := range cands {
		if nat.MayBeNATed(c.Addr.Addr()) {
			time.AfterFunc(nat.PrimeWait, func() {
				if t.ctx.Err() == nil {
					s.speculate(cands)
				}
			})
			return
		}
	}
	s.speculate(cands)
}

func (t *traversal) openSocket() (nat.Socket, error) {
	s, err := t.n.openExtra()
	if err != nil {
		return nil, err
	}
	return s, nil
}

// onPath hands a validated path to the peer's session (session.offer):
// a session waiting for a path starts its handshake on it; an established
// one offers it to the path layer. Without a session (the peer asked for
// the introduction) the peer's handshake will arrive on the path.
//
// The punch calls it from the goroutine that handled the ack; the record
// is made on the path owner goroutine (a punch validates a path a few
// times at most, so it is never dropped).
func (t *traversal) onPath(peer PeerID, punch *nat.Punch, p nat.Path) {
	sock := t.socketOf(p)
	t.must(func() {
		pp := t.peers[peer]
		if pp == nil || pp.punch != punch {
			return // retired meanwhile
		}
		if pp.found.IsZero() {
			pp.found = time.Now()
		}
		st := punch.Stats()
		pp.routeTo = p.Remote
		pp.route = Traversal{Punched: true, Candidate: p.Kind, Birthday: p.Birthday,
			Checks: st.Checks, Sockets: st.Sockets, After: pp.found.Sub(pp.started), Healed: st.Stalled}
		t.publish(peer, pp)
	}, nil)
	t.n.log.Debug("p2p: path", "peer", peer, "remote", p.Remote, "kind", p.Kind, "rtt", p.RTT, "extra socket", sock != path.Socket(t.n.main))
	if s := t.n.lookupSession(peer); s != nil {
		s.offer(path.Offer{Route: path.Route{Remote: p.Remote, Sock: sock}, Pref: uint32(p.Priority), RTT: p.RTT}, fromCheck, time.Now())
	}
}

// onUnknown fails a session whose peer the server does not know.
func (t *traversal) onUnknown(peer PeerID) {
	if s := t.n.lookupSession(peer); s != nil {
		s.peerUnknown()
	}
}
