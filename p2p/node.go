package p2p

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/internal/secure"
	"github.com/gamewire/gamewire/internal/udpbatch"
	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/p2p/internal/path"
)

// Node is one endpoint of gamewire's peer-to-peer networking: an identity,
// one UDP socket, and the sessions with the peers it talks to. All methods
// are safe for concurrent use.
//
// Goroutines: a reader (the socket's packets: handshakes are checked there
// and passed on; data packets are decrypted and handed to their session's
// channels.Conn inline), a handshake worker (the expensive half of incoming
// handshakes), a maintenance goroutine (session timers), one
// channels.Timers goroutine for every session's channel timers, and the
// main socket's writer (udpbatch.Queue). Close stops them all.
type Node struct {
	// Immutable after New.
	cfg     Config
	id      *Identity
	hs      *secure.Handshaker
	appHash [16]byte
	pc      net.PacketConn
	ownPC   bool
	main    *udpSocket
	paths   *path.Table[*session] // every session's route: one owner goroutine
	timers  *channels.Timers      // every session's channel timers: one goroutine

	// The maintenance goroutine's own.
	maintRound uint64
	maintBatch []*session
	log        *slog.Logger
	events     *eventQueue
	recvq      *recvQueues
	hsQueue    chan inboundInit
	done       chan struct{}
	wg         sync.WaitGroup

	prefixes []netip.Prefix // the interfaces' subnets when the node started

	// mu guards sessions and closed. Taken before any session's mu.
	mu       sync.Mutex
	closed   bool
	sessions map[PeerID]*session

	// tabMu guards the tables below; a leaf lock, taken after session locks.
	tabMu     sync.RWMutex
	byIndex   map[uint32]*session
	peerAddrs map[PeerID]netip.AddrPort
	lastTS    map[PeerID]uint64 // newest initiation timestamp accepted per peer

	load    *loadMeter
	adm     admission  // what the reader knows of pending sessions
	amp     ampGuard   // bytes toward unverified addresses
	extraMu sync.Mutex // guards extras
	extras  map[*udpSocket]struct{}

	trav *traversal    // nil without a rendezvous server
	lan  *lanDiscovery // nil without Config.LANDiscovery

	relayAllowed atomic.Bool
	lastStamp    atomic.Uint64
	msgPool      sync.Pool
	stats        nodeCounters
}

type inboundInit struct {
	pkt  []byte
	src  netip.AddrPort
	sock path.Socket
}

// Handshake worker bounds: the queue of initiations waiting for it, and the
// fill level past which the node counts as under load and demands cookies.
const (
	handshakeQueueLen = 512
	underLoadLen      = handshakeQueueLen / 8
	maintenancePeriod = 50 * time.Millisecond
	establishedTick   = 200 * time.Millisecond // see Node.maintain
	readBatch         = 32
	extraReadBatch    = 4
	socketBuffer      = 4 << 20
	maxExtraSockets   = 512 // two birthday punches at once (nat opens 256 per punch)
	readBufSize       = 2048
)

// New starts a Node.
func New(cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.Identity == nil {
		if cfg.Identity, err = NewIdentity(); err != nil {
			return nil, err
		}
	}
	n := &Node{
		cfg:       cfg,
		id:        cfg.Identity,
		hs:        secure.NewHandshaker(secure.PrivateKey(cfg.Identity.private)),
		appHash:   appHash(cfg.AppID),
		log:       cfg.Logger,
		events:    newEventQueue(cfg.EventQueueSize, cfg.Logger),
		recvq:     newRecvQueues(),
		hsQueue:   make(chan inboundInit, handshakeQueueLen),
		done:      make(chan struct{}),
		sessions:  make(map[PeerID]*session),
		byIndex:   make(map[uint32]*session),
		peerAddrs: make(map[PeerID]netip.AddrPort),
		lastTS:    make(map[PeerID]uint64),
		load:      newLoadMeter(time.Now()),
		extras:    make(map[*udpSocket]struct{}),
	}
	n.relayAllowed.Store(!cfg.DisableRelay)
	n.pc = cfg.PacketConn
	if n.pc == nil {
		if n.pc, err = cfg.ListenPacket("udp", cfg.ListenAddr); err != nil {
			return nil, err
		}
		n.ownPC = true
	}
	n.main = n.newSocket(n.pc, true)
	n.prefixes, _ = cfg.Interfaces()
	n.paths = path.NewTable[*session](pathReporter{n}, n.prefixes)
	if cfg.Rendezvous != "" {
		if n.trav, err = newTraversal(n); err != nil {
			n.main.q.Close()
			if n.ownPC {
				n.pc.Close()
			}
			n.paths.Close()
			return nil, err
		}
	}
	if cfg.LANDiscovery {
		n.lan = newLANDiscovery(n) // never fails the node: see Config.LANDiscovery
	}
	n.timers = channels.NewTimers()
	n.wg.Add(3)
	go n.readLoop(n.main)
	go n.handshakeLoop()
	go n.maintenanceLoop()
	if n.trav != nil {
		n.trav.start()
	}
	if n.lan != nil {
		n.lan.start()
	}
	return n, nil
}

// PeerID returns this node's PeerID.
func (n *Node) PeerID() PeerID { return n.id.PeerID() }

// LocalAddr returns the address of the node's socket.
func (n *Node) LocalAddr() net.Addr { return n.pc.LocalAddr() }

// Close ends every session (telling each peer), stops the node's
// goroutines and closes its socket (a Config.PacketConn is left open). It is
// idempotent; afterwards the node's methods fail with errors matching
// net.ErrClosed.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	sessions := make([]*session, 0, len(n.sessions))
	for _, s := range n.sessions {
		sessions = append(sessions, s)
	}
	n.mu.Unlock()
	for _, s := range sessions {
		s.closeByApp(false)
	}
	if n.trav != nil {
		n.trav.stop()
	}
	n.extraMu.Lock()
	close(n.done)
	extras := n.extras
	n.extras = nil
	n.extraMu.Unlock()
	for s := range extras {
		s.closed.Store(true)
		s.pc.Close()
	}
	if n.lan != nil {
		n.lan.close() // its readers end; its sender saw done
	}
	n.main.q.Close() // what the sessions' closes queued leaves first
	if n.ownPC {
		n.pc.Close()
	} else {
		n.pc.SetReadDeadline(time.Now()) // wakes the reader without closing the caller's socket
	}
	n.wg.Wait()
	n.paths.Close()  // after the readers and the traversal: nothing posts now
	n.timers.Close() // every session's Conn is closed
	n.recvq.close()
	n.events.close()
	return nil
}

func (n *Node) isClosed() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// handlePacket dispatches a datagram by its first byte (docs/ARCHITECTURE.md, "The first byte"):
// 0x00–0x03 STUN, 0x40–0x7F TURN channel data (not served yet), 0x80–0xBF
// gamewire: handshakes and data (internal/secure), probes (nat),
// rendezvous.
func (n *Node) handlePacket(b []byte, src netip.AddrPort, sock path.Socket) {
	n.stats.packetsIn.Add(1)
	if len(b) == 0 {
		n.stats.dropped.Add(1)
		return
	}
	switch b[0] {
	case secure.TypeData:
		n.handleData(b, src, sock)
	case secure.TypeInitiation:
		n.handleInitiation(b, src, sock)
	case secure.TypeResponse:
		n.handleResponse(b, src, sock)
	case secure.TypeCookieReply:
		n.handleCookieReply(b)
	case nat.TypeProbe, nat.TypeProbeAck:
		if n.trav == nil || !n.trav.handleProbe(b, src, sock) {
			n.stats.dropped.Add(1)
		}
	default:
		if n.trav == nil || !n.trav.handleOther(b, src) {
			n.stats.dropped.Add(1) // TURN and unknown types
		}
	}
}

func (n *Node) lookupIndex(idx uint32) *session {
	n.tabMu.RLock()
	s := n.byIndex[idx]
	n.tabMu.RUnlock()
	return s
}

func (n *Node) handleData(b []byte, src netip.AddrPort, sock path.Socket) {
	idx, ok := secure.DataReceiverIndex(b)
	var s *session
	if ok {
		s = n.lookupIndex(idx)
	}
	kp := (*secure.Keypair)(nil)
	if s != nil {
		kp = s.keys.Load()
	}
	if kp == nil {
		if s == nil || !s.keepEarly(b, src, sock) {
			n.stats.unknownIndex.Add(1)
		}
		return
	}
	plain, flags, err := kp.Open(b)
	if err != nil {
		if errors.Is(err, secure.ErrReplay) {
			n.stats.replayed.Add(1)
		} else {
			n.stats.authFailed.Add(1)
		}
		return
	}
	s.onPacket(src, sock, flags, plain)
}

// handleInitiation does the cheap checks on the reader's goroutine and
// passes the rest to the handshake worker. Under load (see loadMeter) it
// wants proof that the source address is real (a cookie, WireGuard's mac2)
// and rate-limits each source address.
func (n *Node) handleInitiation(b []byte, src netip.AddrPort, sock path.Socket) {
	if !n.hs.CheckMAC1(b) {
		n.stats.badMAC.Add(1)
		return
	}
	now := time.Now()
	n.amp.received(src, len(b), now)
	if n.adm.demandCookie(src) || n.load.admit(now, len(n.hsQueue)) {
		if !n.hs.CheckMAC2(b, src) {
			if reply, err := n.hs.CookieReply(b, src); err == nil {
				n.stats.cookiesSent.Add(1)
				n.answer(sock, reply, src)
			}
			return
		}
		if !n.hs.Allow(src.Addr()) {
			n.stats.rateLimited.Add(1)
			return
		}
	}
	select {
	case n.hsQueue <- inboundInit{pkt: append([]byte(nil), b...), src: src, sock: sock}:
	default:
		n.stats.handshakeDropped.Add(1)
	}
}

func (n *Node) handleResponse(b []byte, src netip.AddrPort, sock path.Socket) {
	idx, ok := secure.ResponseReceiverIndex(b)
	if !ok {
		n.stats.dropped.Add(1)
		return
	}
	s := n.lookupIndex(idx)
	if s == nil {
		n.stats.unknownIndex.Add(1)
		return
	}
	s.mu.Lock()
	early := s.consumeResponseLocked(b, idx, src, sock)
	s.unlock()
	// Packets that beat the response here are replayed now the keys exist.
	for _, p := range early {
		n.handleData(p.data, p.src, p.sock)
	}
}

// consumeResponseLocked completes our handshake with a response and returns
// the early packets to replay.
func (s *session) consumeResponseLocked(b []byte, idx uint32, src netip.AddrPort, sock path.Socket) []earlyPacket {
	n := s.node
	if s.hs == nil || s.index != idx || s.state != stConnecting {
		return nil // a duplicate, or for an attempt we gave up
	}
	kp, payload, err := s.hs.ConsumeResponse(b)
	if err != nil {
		n.stats.handshakeFailed.Add(1)
		return nil
	}
	resp, err := decodeRespPayload(payload)
	if err != nil {
		n.stats.handshakeFailed.Add(1)
		return nil
	}
	switch resp.status {
	case statusNotRunningApp:
		s.failLocked(SessionErrorNotRunningApp, false)
		return nil
	case statusRefused:
		s.failLocked(SessionErrorNoRightsToApp, false)
		return nil
	}
	if err := s.establishLocked(kp, src, sock, resp.epoch, resp.flags&respAccepted != 0); err != nil {
		n.log.Error("p2p: cannot start session", "peer", s.peer, "err", err)
		s.failLocked(SessionErrorTimeout, false)
		return nil
	}
	s.sendControl() // proves our address to the responder, which sends nothing until then
	early := s.early
	s.early = nil
	return early
}

func (n *Node) handleCookieReply(b []byte) {
	idx, ok := secure.CookieReplyReceiverIndex(b)
	if !ok {
		return
	}
	s := n.lookupIndex(idx)
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.unlock()
	if s.hs == nil || s.index != idx {
		return
	}
	if err := s.hs.ConsumeCookieReply(b); err != nil {
		return
	}
	if r := s.current(); r != nil {
		s.writeLocked(n.sockOf(r), clone(s.hs.Message()), r.Remote) // at once, now with mac2
	}
}

func (n *Node) handshakeLoop() {
	defer n.wg.Done()
	for {
		select {
		case in := <-n.hsQueue:
			n.processInitiation(in.pkt, in.src, in.sock)
		case <-n.done:
			return
		}
	}
}

// processInitiation runs the expensive half of an incoming handshake and
// decides what it means for the peer's session.
func (n *Node) processInitiation(pkt []byte, src netip.AddrPort, sock path.Socket) {
	n.stats.handshakes.Add(1)
	inc, err := n.hs.ConsumeInitiation(pkt)
	if err != nil {
		n.stats.handshakeFailed.Add(1)
		return
	}
	peer := PeerID(inc.Peer)
	p, err := decodeInitPayload(inc.Payload)
	if err != nil || peer == n.id.PeerID() {
		n.stats.handshakeFailed.Add(1)
		return
	}
	if p.version != protocolVersion || p.app != n.appHash {
		n.respondStatus(inc, src, sock, statusNotRunningApp)
		return
	}
	s, refuse := n.sessionFor(peer, p.timestamp, src, time.Now())
	if refuse {
		n.respondStatus(inc, src, sock, statusRefused)
		return
	}
	if s == nil {
		return
	}
	n.answerInitiation(s, inc, p, secure.InitiationID(pkt), src, sock, time.Now())
	s.unlock()
}

// sessionFor returns, locked, the session an authenticated initiation from
// peer applies to: the live one, or a new one if admission lets the
// initiation open one (refuse: it says no to the peer). Nil: nothing to do.
func (n *Node) sessionFor(peer PeerID, timestamp uint64, src netip.AddrPort, now time.Time) (s *session, refuse bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, false
	}
	if s := n.liveSessionLocked(peer); s != nil {
		return s, false
	}
	// Nothing to resend or to ignore as ours: only a newer initiation
	// than any answered may open a session, so replays open nothing.
	if timestamp <= n.lastTimestamp(peer) {
		n.stats.replayedInit.Add(1)
		return nil, false
	}
	switch n.admitLocked(src, now) {
	case admitSilent:
		return nil, false // a peer sharing the IP retries; a flood learns nothing
	case admitRefuse:
		return nil, true
	}
	s = n.newSessionLocked(peer, now)
	s.peerOpened = true
	s.mu.Lock()
	return s, false
}

// answerInitiation applies an authenticated initiation from s's peer to s
// (s.mu held): resend an answer, ignore it, or answer it.
func (n *Node) answerInitiation(s *session, inc *secure.IncomingInitiation, p initPayload, id [16]byte, src netip.AddrPort, sock path.Socket, now time.Time) {
	switch {
	case s.state == stEstablished && !s.initiator && s.respID == id:
		n.answerLocked(s, sock, s.respCache, src) // our answer was lost: the same bytes again
		return
	case s.state == stEstablished && p.epoch == s.peerEpoch:
		n.raiseLastTimestamp(s.peer, p.timestamp)
		return // this session already exists: a late copy from simultaneous initiation
	case p.timestamp <= n.lastTimestamp(s.peer):
		n.stats.replayedInit.Add(1) // a replay, or older than one we answered
		return
	case s.state == stConnecting && s.hs != nil && lessPeer(n.id.PeerID(), s.peer):
		// Both initiated: the lower PeerID stays initiator and the peer
		// answers ours. Remember this one's time, so it cannot be replayed
		// later to open a session. Ours goes again, straight to where the
		// peer's came from: that path works both ways now (a birthday hole
		// the peer found first, say), and ours may not have found it yet.
		n.raiseLastTimestamp(s.peer, p.timestamp)
		s.handshakeOnLocked(src, sock)
		s.writeLocked(sock, clone(s.hs.Message()), src)
		return
	}
	if s.state == stEstablished {
		// A new epoch: the peer restarted its side. The old session is gone
		// for it, so end ours and start again, keeping our acceptance.
		s.stopLocked(false)
		n.freeIndex(s.index, s)
		n.events.push(SessionClosed{Peer: s.peer})
		s.state, s.started, s.epoch = stConnecting, now, n.newEpoch()
	}
	s.abandonHandshakeLocked()
	idx := n.allocIndex(s)
	var flags uint8
	if s.accepted {
		flags = respAccepted
	}
	pkt, kp, err := inc.Respond(idx, respPayload{status: statusOK, flags: flags, epoch: s.epoch}.encode())
	if err != nil {
		n.freeIndex(idx, s)
		n.stats.handshakeFailed.Add(1)
		return
	}
	n.setLastTimestamp(s.peer, p.timestamp)
	s.index, s.respCache, s.respID, s.initiator = idx, pkt, id, false
	if err := s.establishLocked(kp, src, sock, p.epoch, true); err != nil {
		n.log.Error("p2p: cannot start session", "peer", s.peer, "err", err)
		return
	}
	n.answerLocked(s, sock, pkt, src)
}

func (n *Node) respondStatus(inc *secure.IncomingInitiation, src netip.AddrPort, sock path.Socket, status uint8) {
	pkt, _, err := inc.Respond(0, respPayload{status: status}.encode())
	if err == nil {
		n.answer(sock, pkt, src)
	}
}

// liveSessionLocked returns peer's session locked, or nil when there is
// none or it has ended (n.mu held).
func (n *Node) liveSessionLocked(peer PeerID) *session {
	s := n.sessions[peer]
	if s == nil {
		return nil
	}
	s.mu.Lock()
	if s.state == stClosed || s.state == stFailed {
		s.unlock()
		return nil
	}
	return s
}

// newSessionLocked makes a fresh session for peer, replacing an ended one
// (n.mu held). A failed attempt of ours leaves our acceptance behind: we
// wanted to talk to this peer.
func (n *Node) newSessionLocked(peer PeerID, now time.Time) *session {
	s := &session{node: n, peer: peer, state: stConnecting, started: now, epoch: n.newEpoch(), relayOK: n.relayAllowed.Load()}
	s.paths = n.paths.NewPeer(s)
	s.gen.Store(1)
	if old := n.sessions[peer]; old != nil {
		old.mu.Lock()
		s.accepted = old.state == stFailed && old.accepted
		old.mu.Unlock()
	}
	s.setFlagsLocked()
	n.sessions[peer] = s
	return s
}

func lessPeer(a, b PeerID) bool { return bytes.Compare(a[:], b[:]) < 0 }

func (n *Node) maintenanceLoop() {
	defer n.wg.Done()
	t := time.NewTicker(maintenancePeriod)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
			now := time.Now()
			n.maintain(now)
			if n.trav != nil {
				n.trav.tick(now)
			}
		}
	}
}

// maintain runs every session's timers, including closed ones that only
// the index table still knows (tombstones). Established sessions, which
// are most of a busy node's and whose checks count in hundreds of
// milliseconds, are looked at every establishedTick rather than every
// round, so a thousand idle sessions cost a node little.
func (n *Node) maintain(now time.Time) {
	n.maintRound++
	batch := n.maintBatch[:0]
	add := func(s *session) {
		if s.maintRound != n.maintRound { // in both tables: once
			s.maintRound = n.maintRound
			batch = append(batch, s)
		}
	}
	n.mu.Lock()
	for _, s := range n.sessions {
		add(s)
	}
	if n.adm.pending.Load() > 0 {
		// Pending sessions end (accepted, forgotten): the reader's view
		// follows. Only admitLocked makes new ones, and publishes then.
		n.adm.publish(n.censusLocked(), n.cfg.MaxPendingSessions)
	}
	n.mu.Unlock()
	n.tabMu.RLock()
	for _, s := range n.byIndex {
		add(s)
	}
	n.tabMu.RUnlock()
	for _, s := range batch {
		if due := s.tickDue.Load(); due != 0 && now.UnixNano() < due {
			continue
		}
		if s.tick(now) {
			n.mu.Lock()
			gone := n.sessions[s.peer] == s && s.expired(now) // not restarted meanwhile
			if gone {
				delete(n.sessions, s.peer)
			}
			n.mu.Unlock()
			if gone && n.trav != nil {
				n.trav.forget(s.peer)
			}
		}
	}
	clear(batch)
	n.maintBatch = batch[:0]
}

// allocIndex picks a free random index for s.
func (n *Node) allocIndex(s *session) uint32 {
	n.tabMu.Lock()
	defer n.tabMu.Unlock()
	for {
		var b [4]byte
		rand.Read(b[:])
		idx := binary.LittleEndian.Uint32(b[:])
		if _, used := n.byIndex[idx]; idx != 0 && !used {
			n.byIndex[idx] = s
			return idx
		}
	}
}

func (n *Node) freeIndex(idx uint32, s *session) {
	n.tabMu.Lock()
	if n.byIndex[idx] == s {
		delete(n.byIndex, idx)
	}
	n.tabMu.Unlock()
}

func (n *Node) peerAddr(p PeerID) (netip.AddrPort, bool) {
	n.tabMu.RLock()
	defer n.tabMu.RUnlock()
	a, ok := n.peerAddrs[p]
	return a, ok
}

func (n *Node) lastTimestamp(p PeerID) uint64 {
	n.tabMu.RLock()
	defer n.tabMu.RUnlock()
	return n.lastTS[p]
}

func (n *Node) setLastTimestamp(p PeerID, ts uint64) { n.raiseLastTimestamp(p, ts) }

// raiseLastTimestamp records an authenticated initiation's time: nothing
// older or as old from that peer opens a session afterwards.
func (n *Node) raiseLastTimestamp(p PeerID, ts uint64) {
	n.tabMu.Lock()
	n.lastTS[p] = max(n.lastTS[p], ts)
	n.tabMu.Unlock()
}

// timestamp returns the current time in unix nanoseconds, strictly greater
// than any it returned before, for initiations.
func (n *Node) timestamp() uint64 {
	for {
		last := n.lastStamp.Load()
		next := max(uint64(time.Now().UnixNano()), last+1)
		if n.lastStamp.CompareAndSwap(last, next) {
			return next
		}
	}
}

func (n *Node) newEpoch() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// deliverToApp queues a message for ReadP2PPacket and Receive (the
// session's mu held).
func (n *Node) deliverToApp(s *session, m channels.Message) {
	qp := queuedPacket{pkt: Packet{From: s.peer, Channel: int(m.Channel), Data: m.Data}}
	if m.Flags.IsReliable() {
		qp.conn = s.conn
	}
	n.recvq.push(qp) // an unreliable packet that does not fit is counted there
}

func (n *Node) getMsgs(k int) *[]udpbatch.Message {
	if v, ok := n.msgPool.Get().(*[]udpbatch.Message); ok && cap(*v) >= k {
		*v = (*v)[:k]
		return v
	}
	m := make([]udpbatch.Message, k, max(k, 64))
	return &m
}

func (n *Node) putMsgs(m *[]udpbatch.Message) {
	clear(*m)
	n.msgPool.Put(m)
}
