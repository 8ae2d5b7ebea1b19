package p2p

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
	hostCandidates   = 4
	// askTTL: an ask not repeated for this long is forgotten (the asker's
	// client repeats its request every 2 s at most while it waits).
	askTTL = 10 * time.Second
)

// traversal is a node's NAT traversal: its rendezvous client, STUN client
// and NAT behaviour, and a punch per peer being connected. Its fields under
// mu are touched by the reader (packets), the maintenance goroutine (tick)
// and sessions (introduce); it takes no Node or session lock while holding
// mu, and calls into sessions only without it.
type traversal struct {
	n         *Node
	server    netip.AddrPort
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
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	mu        sync.Mutex
	behaviour nat.Behaviour
	ready     bool // the mapping test is done: registration may start
	punches   map[PeerID]*punchState
	keys      map[PeerID]nat.ProbeKey
	routes    map[PeerID]Traversal      // the last path found per peer, while it has a session or a punch
	observed  map[PeerID]netip.AddrPort // the public address the server verified for a peer it introduced
}

type punchState struct {
	p       *nat.Punch
	started time.Time
	found   time.Time
}

// parseRendezvous splits "[peerid@]host:port".
func parseRendezvous(s string) (*rendezvous.Key, netip.AddrPort, error) {
	var key *rendezvous.Key
	if k, hostport, ok := strings.Cut(s, "@"); ok {
		id, err := ParsePeerID(k)
		if err != nil {
			return nil, netip.AddrPort{}, fmt.Errorf("p2p: Rendezvous %q: %w", s, err)
		}
		rk := rendezvous.Key(id)
		key, s = &rk, hostport
	}
	addr, err := resolveUDP(s)
	if err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("p2p: Rendezvous %q: %w", s, err)
	}
	return key, addr, nil
}

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

func newTraversal(n *Node) (*traversal, error) {
	key, server, err := parseRendezvous(n.cfg.Rendezvous)
	if err != nil {
		return nil, err
	}
	t := &traversal{n: n, server: server, punches: map[PeerID]*punchState{}, keys: map[PeerID]nat.ProbeKey{},
		routes: map[PeerID]Traversal{}, observed: map[PeerID]netip.AddrPort{}}
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
		Candidates:   t.hostCandidates,
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
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		ctx, cancel := context.WithTimeout(t.ctx, discoverTimeout)
		b, err := nat.Discover(ctx, t.stun, t.server, t.extra)
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			t.n.log.Debug("p2p: NAT discovery", "err", err)
		}
		t.mu.Lock()
		t.behaviour, t.ready = b, true
		t.mu.Unlock()
		if b.Alternate.IsValid() {
			t.discoverFiltering()
		}
		b = t.Behaviour()
		t.n.log.Debug("p2p: NAT behaviour", "mapped", b.Mapped, "mapping", b.Mapping, "filtering", b.Filtering)
	}()
}

// discoverFiltering tests the NAT's filtering from a socket of its own
// (nat.DiscoverFiltering says why), while registration goes ahead: nothing
// waits for the answer, it only informs.
func (t *traversal) discoverFiltering() {
	pc, err := t.n.cfg.ListenPacket("udp4", net.JoinHostPort(t.n.bindIP(), "0"))
	if err != nil {
		t.n.log.Debug("p2p: filtering test socket", "err", err)
		return
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(t.ctx, filteringTimeout)
	defer cancel()
	f := nat.DiscoverFiltering(ctx, pc, t.server)
	t.mu.Lock()
	t.behaviour.Filtering = f
	t.mu.Unlock()
}

func (t *traversal) stop() {
	t.cancel()
	t.rv.Close()
	t.tcp.close()
	t.direct.close()
	t.relay.close()
	t.mu.Lock()
	punches := t.punches
	t.punches = map[PeerID]*punchState{}
	t.mu.Unlock()
	for _, ps := range punches {
		ps.p.Stop()
	}
	t.wg.Wait()
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

// tick drives registration and retires finished punches (maintenance
// goroutine).
func (t *traversal) tick(now time.Time) {
	t.mu.Lock()
	ready := t.ready
	var done []*nat.Punch
	var retired []PeerID
	for peer, ps := range t.punches {
		finished := !ps.found.IsZero() && now.Sub(ps.found) >= improveWindow
		if finished || now.Sub(ps.started) >= t.n.cfg.ConnectTimeout {
			done = append(done, ps.p)
			retired = append(retired, peer)
			delete(t.punches, peer)
		}
	}
	t.mu.Unlock()
	t.asks.expire(now, askTTL)
	if ready {
		t.rv.Tick(now)
	}
	t.noteRegistration(now)
	t.tcp.tick(now)
	t.direct.tick(now)
	if ready || t.udpBlocked() {
		t.relay.tick(now)
	}
	for _, p := range done {
		p.Stop()
	}
	for _, peer := range retired {
		if t.n.lookupSession(peer) == nil {
			t.forget(peer)
		}
	}
}

// established records the path a session came up on, if no check has
// validated one yet: the speculative handshake can win the race.
func (t *traversal) established(peer PeerID, remote netip.AddrPort, sock path.Socket) {
	if sock != nil && sock.Kind() == path.Relay {
		return // the relay is not a path traversal found
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ps := t.punches[peer]
	if ps == nil || t.routes[peer].Punched {
		return
	}
	st := ps.p.Stats()
	t.routes[peer] = Traversal{Punched: true, Candidate: ps.p.KindOf(remote), Checks: st.Checks,
		Sockets: st.Sockets, Birthday: ps.p.FromBirthday(remote, t.natSocket(sock)), After: time.Since(ps.started)}
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
// session was relayed) while our punch toward it runs, unless one of our
// checks recorded a path already: GetP2PSessionState's Traversal then
// still describes the path in use.
func (t *traversal) followed(peer PeerID, remote netip.AddrPort, sock path.Socket) {
	if sock.Kind() != path.Direct {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ps := t.punches[peer]
	if ps == nil || t.routes[peer].Punched {
		return // no traversal toward the peer: its packets alone brought the address
	}
	st := ps.p.Stats()
	t.routes[peer] = Traversal{Punched: true, Candidate: ps.p.KindOf(remote), Checks: st.Checks, Sockets: st.Sockets,
		Birthday: t.natSocket(sock) != nil || ps.p.FromBirthday(remote, nil), // extra sockets are the birthday approach's
		After:    time.Since(ps.started)}
}

// better returns the punch's best validated path to peer if it ranks above
// remote (over sock), else remote and sock; and the check priority of the
// one returned (0: unchecked).
func (t *traversal) better(peer PeerID, remote netip.AddrPort, sock path.Socket) (netip.AddrPort, path.Socket, uint32) {
	t.mu.Lock()
	ps := t.punches[peer]
	t.mu.Unlock()
	if ps == nil {
		return remote, sock, 0
	}
	best, ok := ps.p.Best()
	if !ok {
		return remote, sock, 0
	}
	if sock != nil && sock.Kind() == path.Relay || best.Priority > nat.Priority(nat.Candidate{Addr: remote, Kind: ps.p.KindOf(remote)}, t.prefixes()) {
		return best.Remote, t.socketOf(best), uint32(best.Priority) // any direct path beats the relay
	}
	if best.Remote == remote {
		return remote, sock, uint32(best.Priority)
	}
	return remote, sock, 0
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
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.observed[peer] == addr {
		return true
	}
	ps := t.punches[peer]
	if ps == nil {
		return false
	}
	best, ok := ps.p.Best()
	return ok && best.Remote == addr
}

// route is what traversal found for peer (zero if nothing).
func (t *traversal) route(peer PeerID) Traversal {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.routes[peer]
}

// forget drops what traversal keeps for a peer that has no session (left).
func (t *traversal) forget(peer PeerID) {
	t.mu.Lock()
	gone := t.punches[peer] == nil
	if gone {
		delete(t.routes, peer)
		delete(t.observed, peer)
	}
	t.mu.Unlock()
	if gone {
		t.relay.forget(peer)
		t.direct.forget(peer)
	}
}

// punching reports whether a punch toward peer is running and has not
// found a path yet.
func (t *traversal) punching(peer PeerID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	ps := t.punches[peer]
	return ps != nil && ps.found.IsZero()
}

// found reports whether a punch toward peer validated a UDP path.
func (t *traversal) found(peer PeerID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	ps := t.punches[peer]
	return ps != nil && !ps.found.IsZero()
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
	t.mu.Lock()
	ps := t.punches[PeerID(pr.Sender)]
	t.mu.Unlock()
	if ps == nil || !ps.p.HandleProbe(b, src, t.natSocket(sock)) {
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
	t.relay.onPeer(p, time.Now())
	t.direct.onPeer(peer, p)
	t.mu.Lock()
	t.observed[peer] = p.Observed
	t.mu.Unlock()
	t.startPunch(peer, cands, p.Mapping)
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
	t.mu.Lock()
	if _, ok := t.observed[peer]; !ok {
		t.observed[peer] = from
	}
	t.mu.Unlock()
	t.startPunch(peer, []nat.Candidate{{Addr: from, Kind: nat.KindServerRefl}}, m)
}

// startPunch starts the punch toward peer, or feeds the one running.
func (t *traversal) startPunch(peer PeerID, cands []nat.Candidate, mapping rendezvous.Mapping) {
	t.mu.Lock()
	if ps := t.punches[peer]; ps != nil {
		t.mu.Unlock()
		ps.p.AddCandidates(cands)
		ps.p.SetPeerMapping(mapping)
		return
	}
	key, err := t.probeKeyLocked(peer)
	if err != nil || peer == t.n.id.public {
		t.mu.Unlock()
		return
	}
	local := t.behaviour.Mapping
	t.mu.Unlock()
	punch := nat.StartPunch(nat.PunchConfig{
		Local:         t.n.id.public,
		Peer:          peer,
		Key:           key,
		Main:          t.n.main,
		OpenSocket:    t.openSocket,
		LocalPrefixes: t.prefixes(),
		LocalMapping:  local,
		PeerMapping:   mapping,
		Candidates:    cands,
		OnPath:        func(path nat.Path) { t.onPath(peer, path) },
		Logger:        t.n.log,
	})
	t.mu.Lock()
	if old := t.punches[peer]; old != nil || t.ctx.Err() != nil {
		t.mu.Unlock()
		punch.Stop() // lost a race with another introduction, or closing
		if old != nil {
			old.p.AddCandidates(cands)
			old.p.SetPeerMapping(mapping)
		}
		return
	}
	t.punches[peer] = &punchState{p: punch, started: time.Now()}
	t.mu.Unlock()
	t.speculate(peer, cands)
	// The peer's initiation may have come through before the introduction
	// reached us (its checks started first): the session is up, and this
	// is the first moment a route can describe its path.
	if s := t.n.lookupSession(peer); s != nil && s.live.Load() {
		if r := s.current(); r != nil {
			t.established(peer, r.Remote, r.Sock)
		}
	}
}

// speculate sends the handshake of a session waiting for this peer to its
// candidates at once, beside the first probes, instead of after a probe
// round trip: once the peer's own probes have opened its NAT the initiation
// gets through (the peer answers each identical copy from its cache), and if
// it does not, the first validated path sends it again.
func (t *traversal) speculate(peer PeerID, cands []nat.Candidate) {
	if s := t.n.lookupSession(peer); s != nil && len(cands) > 0 {
		s.speculate(nat.Sort(cands, t.prefixes())) // the best first: the session starts out on it
	}
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
func (t *traversal) onPath(peer PeerID, p nat.Path) {
	sock := t.socketOf(p)
	t.mu.Lock()
	if ps := t.punches[peer]; ps != nil {
		if ps.found.IsZero() {
			ps.found = time.Now()
		}
		st := ps.p.Stats()
		t.routes[peer] = Traversal{Punched: true, Candidate: p.Kind, Birthday: p.Birthday,
			Checks: st.Checks, Sockets: st.Sockets, After: ps.found.Sub(ps.started)}
	}
	t.mu.Unlock()
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
