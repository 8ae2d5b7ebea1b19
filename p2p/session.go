package p2p

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/internal/secure"
	"github.com/gamewire/gamewire/internal/udpbatch"
)

type sessionState int

const (
	// stConnecting: we want to talk to the peer and have no transport yet
	// (no address, or the handshake is under way).
	stConnecting sessionState = iota
	// stEstablished: keys agreed and a channels.Conn runs.
	stEstablished
	// stFailed: the last attempt failed; the record stays so
	// GetP2PSessionState can report the error, until the next send.
	stFailed
	// stClosed: closed; only a tombstone in the index map remains.
	stClosed
)

// Timing of sessions.
const (
	handshakeFirstRetry = 250 * time.Millisecond
	handshakeMaxRetry   = 2 * time.Second
	requestRepeat       = 2 * time.Second  // SessionRequest raised again while unanswered
	failedRecordTTL     = time.Minute      // a failed session's record
	tombstoneTTL        = 10 * time.Second // a closed session still answers its peer's packets
	tombstoneReplyGap   = 200 * time.Millisecond
)

// Per-session bounds.
const (
	preQueueBytes     = channels.DefaultSendQueueBytes
	heldUnreliableMax = 256 << 10
	// pendingWindow is the receive window of a session this node has not
	// accepted: room for one largest message, so what a stranger can make
	// us hold is bounded until the application says yes.
	pendingWindow = MaxReliableSize + 64<<10
	fullWindow    = channels.DefaultReceiveWindow
)

// session is this node's state for one peer.
//
// Ownership: fields under mu are changed by whichever goroutine holds mu:
// the application's (Send, Accept, Close...), the reader's (packets, and the
// channels.Conn's Deliver callback), the handshake worker's, and the
// maintenance goroutine's. route, keys and txFlags are atomics so the
// packet paths (sessionLink, the reader) read them without mu. Lock order:
// Node.mu, then session.mu, then the leaf locks Node.tabMu and
// recvQueues.mu (docs/ARCHITECTURE.md has the whole order). So session
// code never touches Node.sessions: a session that ends stays there in
// stFailed or stClosed, lookups treat stClosed as absent, and the
// maintenance goroutine removes it when its time is up.
// Calling the Conn with mu held is allowed: the Conn delivers (session.deliver
// takes mu) with no lock of its own held, and its Link only reads the
// atomics.
type session struct {
	node *Node
	peer PeerID

	route    atomic.Pointer[route] // where the session sends: address and socket, swapped whole
	keys     atomic.Pointer[secure.Keypair]
	txFlags  atomic.Uint32
	lastRecv atomic.Int64 // unix ns of the last authenticated packet
	lastPath atomic.Int64 // unix ns of the last one from remote (or of the switch to it)
	live     atomic.Bool  // established: path moves raise PathChanged
	// confirmed: the peer proved the address we send to (an initiator, by
	// the response; a responder, by the peer's first authenticated data
	// packet). Until then a responder sends nothing but its response.
	confirmed atomic.Bool

	mu           sync.Mutex
	state        sessionState
	index        uint32 // our index for this session, in Node.byIndex
	epoch        uint64 // ours
	peerEpoch    uint64
	initiator    bool
	started      time.Time // this attempt began: ConnectTimeout counts from here
	relayOK      bool      // this node allowed relay when the attempt began
	accepted     bool      // we accept the peer: we sent to it, or the app accepted
	peerAccepted bool      // the peer accepts us
	refused      bool      // we refused the peer
	peerOpened   bool      // the peer's initiation created this record (admission counts it)
	lastErr      SessionError
	ended        time.Time // failed or closed at
	lastReply    time.Time // tombstone's last reply

	pre      []preMsg // queued before the transport exists
	preBytes int

	held          []channels.Message // delivered while not accepted
	heldUnrel     int
	requestedAt   time.Time // last SessionRequest raised
	firstRequest  time.Time
	inboundRecent bool // data arrived since the last SessionRequest

	introducing bool      // waiting for the rendezvous server's introduction
	lastRepunch time.Time // last search for a new path
	hs          *secure.Initiation
	hsNext      time.Time
	hsInterval  time.Duration
	hsSentAt    time.Time // first send of the initiation; zero once resent
	early       []earlyPacket

	conn      *channels.Conn
	respCache []byte   // responder: our response, resent for a retransmitted initiation
	respID    [16]byte // the initiation it answers
	openChans map[int]struct{}
}

// earlyPacket is a data packet that reached an initiator before the
// response that gives it the keys (the responder sends at once and the two
// can swap places). It is replayed once the keys exist, rather than lost
// and waited for.
type earlyPacket struct {
	src  netip.AddrPort
	sock *nodeSocket
	data []byte
}

// maxEarly bounds the early packets kept per handshake.
const maxEarly = 8

// route is a session's path: the peer's address and the socket that
// reaches it (nil: the main socket). It is immutable; a move stores a new
// one, so readers never see the address of one path with the socket of
// another.
type route struct {
	remote netip.AddrPort
	sock   *nodeSocket
}

// remoteAddr returns the peer's address on the current path, if any.
func (s *session) remoteAddr() (netip.AddrPort, bool) {
	if r := s.route.Load(); r != nil {
		return r.remote, true
	}
	return netip.AddrPort{}, false
}

// socket returns the socket the session sends on.
func (s *session) socket() *nodeSocket {
	return s.route.Load().socketOr(s.node.main)
}

// socketOr is r's socket, or main when r has none or it closed.
func (r *route) socketOr(main *nodeSocket) *nodeSocket {
	if r != nil && r.sock != nil && !r.sock.closed.Load() {
		return r.sock
	}
	return main
}

// setPath points the session at remote through sock (nil: main). An
// established session's move raises PathChanged.
func (s *session) setPath(remote netip.AddrPort, sock *nodeSocket) {
	if sock != nil && sock.main {
		sock = nil
	}
	old := s.route.Swap(&route{remote: remote, sock: sock})
	s.lastPath.Store(time.Now().UnixNano())
	if !s.live.Load() || old == nil {
		return // not established: no path to change from
	}
	kind := s.socket().kind()
	if old.remote != remote || old.socketOr(s.node.main).kind() != kind {
		n := s.node
		n.stats.pathChanges.Add(1)
		n.log.Debug("p2p: path changed", "peer", s.peer, "path", kind, "remote", remote)
		n.events.push(PathChanged{Peer: s.peer, Path: kind, Remote: remote})
	}
}

// pathQuiet is how long the current path must stay silent before the
// session follows the peer to a worse socket kind.
const pathQuiet = time.Second

// follow reports whether packets from src (which is not the current path)
// should move the session there. Another socket kind moves it when it ranks
// higher (direct UDP, then direct TCP, then the relay) or the current path
// went quiet for pathQuiet: stragglers on a worse kind do not pull a
// session back. Within a kind, an address of a better class (our subnet,
// then private or loopback, then public) moves it at once; one no better
// moves it only when the current path is failing, that is what we send
// there goes unacknowledged past its due time (a NAT rebinding, or a peer
// that moved to another network). A peer heard from an address it is not
// sent to while its acknowledgements come back (two dual-stack peers, one
// on the other's IPv4 address and the other on IPv6) is left where it is:
// following every source address would move both sides back and forth on
// every packet in flight.
func (s *session) follow(src netip.AddrPort, sock *nodeSocket, conn *channels.Conn, now int64) bool {
	cur := s.route.Load()
	if cur == nil {
		return true
	}
	if from, at := sock.kind(), cur.socketOr(s.node.main).kind(); from != at {
		return from.rank() > at.rank() || time.Duration(now-s.lastPath.Load()) > pathQuiet
	}
	if s.node.addrRank(src.Addr()) > s.node.addrRank(cur.remote.Addr()) {
		return true
	}
	return conn != nil && conn.AckOverdue() >= ackOverdue
}

type preMsg struct {
	channel int
	flags   channels.Flags
	data    []byte
}

func (s *session) setFlagsLocked() {
	var f uint32
	if s.accepted {
		f |= flagAccepted
	}
	if s.refused {
		f |= flagRefused
	}
	if s.state == stClosed {
		f |= flagClosing
	}
	s.txFlags.Store(f)
}

func (s *session) noteChannelLocked(ch int) {
	if s.openChans == nil {
		s.openChans = make(map[int]struct{})
	}
	s.openChans[ch] = struct{}{}
}

// send queues or sends data.
func (s *session) send(data []byte, flags channels.Flags, ch int, noDelay bool, now time.Time) error {
	s.mu.Lock()
	if s.state == stFailed {
		s.restartLocked(now)
	}
	if !s.accepted {
		s.acceptLocked()
	}
	s.noteChannelLocked(ch)
	if s.state == stEstablished && s.confirmed.Load() {
		conn, active := s.conn, s.peerAccepted
		s.mu.Unlock()
		if noDelay && !active {
			return nil // SendUnreliableNoDelay before the session is connected
		}
		return mapConnErr(conn.Send(uint16(ch), data, flags))
	}
	defer s.mu.Unlock()
	waiting := s.state == stConnecting || s.state == stEstablished // established: until the peer proves its address
	if !waiting || noDelay {
		return nil
	}
	if s.preBytes+len(data) > preQueueBytes {
		return ErrQueueFull
	}
	s.pre = append(s.pre, preMsg{channel: ch, flags: flags, data: append([]byte(nil), data...)})
	s.preBytes += len(data)
	if s.state == stConnecting && s.hs == nil {
		s.startHandshakeLocked(now)
	}
	return nil
}

// flushPreLocked hands what was queued before the transport could send to
// the Conn.
func (s *session) flushPreLocked() {
	for _, m := range s.pre {
		s.conn.Send(uint16(m.channel), m.data, m.flags)
	}
	s.pre, s.preBytes = nil, 0
}

func mapConnErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, channels.ErrQueueFull):
		return ErrQueueFull
	case errors.Is(err, channels.ErrTooLarge):
		return ErrTooLarge
	case errors.Is(err, channels.ErrInvalidFlags):
		return ErrInvalidFlags
	}
	// The Conn ended just now; the maintenance goroutine reports the
	// failure and drops what was queued, as for data queued earlier.
	return nil
}

// stopIntroducingLocked stops asking the server for the peer: the attempt
// ended, and a request left behind would keep raising SessionRequest at a
// peer that no longer waits for us.
func (s *session) stopIntroducingLocked() {
	if t := s.node.trav; t != nil && s.introducing {
		t.cancelIntroduction(s.peer)
	}
	s.introducing = false
}

// restartLocked turns a failed record into a fresh attempt.
func (s *session) restartLocked(now time.Time) {
	s.introducing = false
	s.state = stConnecting
	s.lastErr = SessionErrorNone
	s.started = now
	s.epoch = s.node.newEpoch()
	s.peerAccepted = false
	s.initiator = false
	s.relayOK = s.node.relayAllowed.Load()
	if t := s.node.trav; t != nil {
		t.relay.restart(s.peer, now)
	}
}

// acceptIfLive accepts the peer if the session has not ended, and reports
// whether it had not.
func (s *session) acceptIfLive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stClosed || s.state == stFailed {
		return false
	}
	if !s.accepted {
		s.acceptLocked()
	}
	return true
}

// acceptLocked accepts the peer: held data goes to the application, the
// window opens, and the peer hears of it.
func (s *session) acceptLocked() {
	s.accepted = true
	s.requestedAt, s.firstRequest, s.inboundRecent = time.Time{}, time.Time{}, false
	s.setFlagsLocked()
	for _, m := range s.held {
		s.node.deliverToApp(s, m)
	}
	s.held, s.heldUnrel = nil, 0
	if s.conn != nil {
		s.conn.SetReceiveWindow(fullWindow)
		s.sendControl() // say so now, not with the next acknowledgement
	}
}

// startHandshakeLocked sends an initiation if the peer's address is known,
// and otherwise asks the rendezvous server for an introduction (the punch
// it leads to calls startHandshakeOnLocked).
func (s *session) startHandshakeLocked(now time.Time) {
	addr, ok := s.node.peerAddr(s.peer)
	if !ok {
		if t := s.node.trav; t != nil && !s.introducing {
			s.introducing = true
			t.introduce(s.peer, now)
		}
		return // wait for AddPeerAddr or a path
	}
	s.startHandshakeOnLocked(addr, nil, now)
}

// startHandshakeOnLocked sends an initiation to addr through sock.
func (s *session) startHandshakeOnLocked(addr netip.AddrPort, sock *nodeSocket, now time.Time) {
	s.setPath(addr, sock)
	n := s.node
	idx := n.allocIndex(s)
	payload := initPayload{version: protocolVersion, app: n.appHash, timestamp: n.timestamp(), epoch: s.epoch}
	in, err := n.hs.Initiate(secure.PublicKey(s.peer), idx, payload.encode())
	if err != nil {
		n.freeIndex(idx, s)
		n.log.Warn("p2p: cannot start handshake", "peer", s.peer, "err", err)
		return
	}
	s.index, s.hs, s.initiator = idx, in, true
	s.hsInterval = handshakeFirstRetry
	s.hsNext = now.Add(s.hsInterval)
	s.hsSentAt = now
	s.socket().WriteTo(in.Message(), addr)
}

// abandonHandshakeLocked drops our initiation (the peer's won).
func (s *session) abandonHandshakeLocked() {
	if s.hs != nil {
		s.node.freeIndex(s.index, s)
		s.hs, s.index, s.initiator = nil, 0, false
		s.early = nil
	}
}

// establishLocked starts the transport: keys, the channels.Conn, and what
// was queued before it existed.
func (s *session) establishLocked(kp *secure.Keypair, src netip.AddrPort, sock *nodeSocket, peerEpoch uint64, peerAccepted bool) error {
	n := s.node
	window := fullWindow
	if !s.accepted {
		window = pendingWindow
	}
	// An initiation answered on its first try measured one round trip.
	var rtt time.Duration
	if !s.hsSentAt.IsZero() {
		rtt = max(time.Since(s.hsSentAt), time.Millisecond)
		s.hsSentAt = time.Time{}
	}
	conn, err := channels.New(sessionLink{s}, channels.Config{
		InitialRTT:        rtt,
		Headroom:          secure.DataHeaderLen,
		Tailroom:          secure.TagLen,
		MaxUnreliableSize: MaxUnreliableSize,
		MaxReliableSize:   MaxReliableSize,
		NagleDelay:        n.cfg.NagleDelay,
		ReleaseOnRead:     true,
		ReceiveWindow:     window,
		Deliver:           s.deliver,
		Logger:            n.log,
	})
	if err != nil {
		return err
	}
	if n.trav != nil {
		// Checks may have validated a better path (the LAN) while the
		// handshake went over another.
		src, sock = n.trav.better(s.peer, src, sock)
	}
	s.setPath(src, sock)
	s.confirmed.Store(s.initiator || (s.accepted && n.proven(s.peer, src, sock)))
	s.keys.Store(kp)
	s.lastRecv.Store(time.Now().UnixNano())
	s.introducing = false
	s.peerEpoch = peerEpoch
	s.peerAccepted = s.peerAccepted || peerAccepted
	s.hs = nil
	s.state = stEstablished
	s.conn = conn
	s.live.Store(true)
	s.setFlagsLocked()
	if s.confirmed.Load() {
		s.flushPreLocked()
	}
	if n.trav != nil {
		n.trav.established(s.peer, src, sock)
	}
	n.log.Debug("p2p: session established", "peer", s.peer, "remote", src, "initiator", s.initiator)
	return nil
}

// deliver is the Conn's Deliver callback (the reader's goroutine): messages
// of an accepted peer go to the application, others are held.
func (s *session) deliver(m channels.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stEstablished {
		return
	}
	s.noteChannelLocked(int(m.Channel))
	if s.accepted {
		s.node.deliverToApp(s, m)
		return
	}
	if !m.Flags.IsReliable() {
		if s.heldUnrel+len(m.Data) > heldUnreliableMax {
			s.node.stats.heldDropped.Add(1)
			return
		}
		s.heldUnrel += len(m.Data)
	}
	// Reliable messages are bounded by the session's window, which is not
	// given back until the application reads them.
	s.held = append(s.held, m)
	s.inboundRecent = true
	if s.requestedAt.IsZero() {
		now := time.Now()
		s.firstRequest, s.requestedAt, s.inboundRecent = now, now, false
		s.node.events.push(SessionRequest{Peer: s.peer})
	}
}

// onPacket handles an authenticated data packet that came in on sock.
func (s *session) onPacket(src netip.AddrPort, sock *nodeSocket, flags byte, plain []byte) {
	now := time.Now().UnixNano()
	s.lastRecv.Store(now)
	s.mu.Lock()
	switch s.state {
	case stClosed:
		s.replyTombstoneLocked(flags)
		s.mu.Unlock()
		return
	case stEstablished:
	default:
		s.mu.Unlock()
		return
	}
	if flags&flagRefused != 0 {
		s.failLocked(SessionErrorNoRightsToApp, false)
		s.mu.Unlock()
		return
	}
	if flags&flagClosing != 0 {
		s.peerClosedLocked()
		s.mu.Unlock()
		return
	}
	if flags&flagAccepted != 0 {
		s.peerAccepted = true
	}
	// The peer's address is proven now: what we held back goes at once.
	confirmedNow := !s.confirmed.Load()
	if confirmedNow {
		s.confirmed.Store(true)
		s.flushPreLocked()
	}
	conn := s.conn
	s.mu.Unlock()
	moved := s.notePath(src, sock, conn, now)
	if len(plain) > 0 {
		conn.HandleDatagram(plain)
	}
	if moved || confirmedNow {
		conn.ProbeNow() // what the old path swallowed goes again at once
	}
}

// notePath follows the peer to src when follow says so (no lock held: it
// asks the Conn), and reports whether the session moved.
func (s *session) notePath(src netip.AddrPort, sock *nodeSocket, conn *channels.Conn, now int64) bool {
	if r := s.route.Load(); r != nil && r.remote == src && r.socketOr(s.node.main) == sock {
		s.lastPath.Store(now)
		return false
	}
	if !s.follow(src, sock, conn, now) {
		return false
	}
	s.setPath(src, sock) // the peer moved (NAT rebinding): follow it, it proved its keys
	if t := s.node.trav; t != nil {
		t.followed(s.peer, src, sock)
	}
	return true
}

// keepEarly keeps a copy of a data packet that arrived while our handshake
// is still waiting for its response; it reports whether it did.
func (s *session) keepEarly(b []byte, src netip.AddrPort, sock *nodeSocket) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hs == nil || len(s.early) >= maxEarly {
		return false
	}
	s.early = append(s.early, earlyPacket{src: src, sock: sock, data: append([]byte(nil), b...)})
	return true
}

// replyTombstoneLocked answers a closed session's peer, at a bounded rate,
// so it learns of the close even if the first notice was lost.
func (s *session) replyTombstoneLocked(peerFlags byte) {
	if peerFlags&(flagClosing|flagRefused) != 0 {
		return // it knows
	}
	now := time.Now()
	if now.Sub(s.lastReply) < tombstoneReplyGap {
		return
	}
	s.lastReply = now
	s.sendControl()
}

// sendControl sends a packet with no payload, carrying only the session
// flags.
func (s *session) sendControl() {
	kp, r := s.keys.Load(), s.route.Load()
	if kp == nil || r == nil || !s.confirmed.Load() {
		return
	}
	buf := make([]byte, secure.DataHeaderLen, secure.DataHeaderLen+secure.TagLen)
	pkt, err := kp.Seal(buf, 0, byte(s.txFlags.Load()))
	if err != nil {
		return
	}
	r.socketOr(s.node.main).WriteTo(pkt, r.remote)
}

// failLocked ends the attempt with e: queued and held data are dropped and
// SessionConnectFail is raised. tell says whether to tell the peer.
func (s *session) failLocked(e SessionError, tell bool) {
	s.stopIntroducingLocked()
	s.lastErr = e
	s.stopLocked(tell)
	s.state = stFailed
	s.ended = time.Now()
	s.node.freeIndex(s.index, s)
	s.index = 0
	s.node.events.push(SessionConnectFail{Peer: s.peer, Error: e})
}

// peerClosedLocked handles the peer's close.
func (s *session) peerClosedLocked() {
	if !s.peerAccepted && s.initiator {
		// It gave up on us before accepting: as Steam, a timeout.
		s.failLocked(SessionErrorTimeout, false)
		return
	}
	// Data the peer sent before closing stays readable.
	wasAccepted := s.accepted
	s.stopLocked(false)
	s.state = stClosed
	s.ended = time.Now()
	s.setFlagsLocked()
	if wasAccepted {
		// A request withdrawn before we answered it ends quietly, as in Steam.
		s.node.events.push(SessionClosed{Peer: s.peer})
	}
}

// stopLocked ends the transport and drops queued and held data.
func (s *session) stopLocked(tell bool) {
	s.live.Store(false)
	s.abandonHandshakeLocked()
	defer func() {
		if r := s.route.Load(); r != nil && r.sock != nil {
			s.route.Store(&route{remote: r.remote})
			r.sock.Close() // an extra socket the session lived on
		}
	}()
	if s.conn != nil {
		if tell {
			prev := s.state
			s.state = stClosed
			s.setFlagsLocked()
			s.sendControl()
			s.state = prev
			s.conn.Close() // its CLOSE frame backs up the flag
		} else {
			s.conn.Close()
		}
		s.conn = nil
	}
	s.pre, s.preBytes = nil, 0
	s.held, s.heldUnrel = nil, 0
	s.peerAccepted = false
}

// closeByApp closes the session and tells the peer. With refuse (the
// application's CloseP2PSessionWithUser), a session the peer opened and we
// never accepted is refused: the peer fails with NoRightsToApp. The session
// stays reachable by index for a while as a tombstone answering the peer.
func (s *session) closeByApp(refuse bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if refuse && s.state == stEstablished && !s.accepted {
		s.refused = true
	}
	s.stopIntroducingLocked()
	s.live.Store(false)
	s.abandonHandshakeLocked()
	if s.conn != nil {
		s.state = stClosed
		s.setFlagsLocked()
		s.sendControl()
		s.conn.Close() // its CLOSE frame backs up the flags
		s.conn = nil
	}
	s.state = stClosed
	s.ended = time.Now()
	s.pre, s.preBytes, s.held, s.heldUnrel = nil, 0, nil, 0
	s.setFlagsLocked()
}

// tick runs the session's timers (the maintenance goroutine). It reports
// true when the session's time is up and the Node should forget it.
func (s *session) tick(now time.Time) (forget bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	timeout := s.node.cfg.ConnectTimeout
	switch s.state {
	case stConnecting:
		switch {
		case now.Sub(s.started) >= timeout:
			s.failLocked(SessionErrorTimeout, false)
		case s.hs == nil:
			s.startHandshakeLocked(now)
		case !now.Before(s.hsNext):
			if r := s.route.Load(); r != nil {
				r.socketOr(s.node.main).WriteTo(s.hs.Message(), r.remote)
			}
			s.hsSentAt = time.Time{} // a response can no longer time one round trip
			s.hsInterval = min(2*s.hsInterval, handshakeMaxRetry)
			s.hsNext = now.Add(s.hsInterval)
		}
	case stEstablished:
		s.tickEstablishedLocked(now, timeout)
	case stFailed:
		return now.Sub(s.ended) >= failedRecordTTL
	case stClosed:
		if now.Sub(s.ended) >= tombstoneTTL {
			s.node.freeIndex(s.index, s)
			return true
		}
	}
	return false
}

func (s *session) tickEstablishedLocked(now time.Time, timeout time.Duration) {
	if err := s.conn.Err(); err != nil {
		switch {
		case s.unseenLocked():
			s.endQuietlyLocked(now) // the application never knew of it
		case errors.Is(err, channels.ErrPeerClosed):
			s.peerClosedLocked()
		default:
			s.failLocked(SessionErrorTimeout, false) // the peer went silent
		}
		return
	}
	if !s.peerAccepted && now.Sub(s.started) >= timeout {
		s.failLocked(SessionErrorTimeout, true) // never accepted: give up and say so
		return
	}
	if !s.confirmed.Load() && !s.accepted && now.Sub(s.started) >= unconfirmedTTL {
		s.node.stats.unconfirmedExpired.Add(1)
		s.endQuietlyLocked(now) // nobody came back from that address
		return
	}
	if t := s.node.trav; t != nil && s.pathLostLocked(now) && now.Sub(s.lastRepunch) >= repunchEvery {
		s.lastRepunch = now
		t.repunch(s.peer, now) // the path went quiet: look for a new one
	}
	if s.accepted || s.firstRequest.IsZero() {
		return
	}
	if now.Sub(s.firstRequest) >= timeout {
		s.endQuietlyLocked(now) // never answered: drop what it sent
		return
	}
	if s.inboundRecent && now.Sub(s.requestedAt) >= requestRepeat {
		s.requestedAt, s.inboundRecent = now, false
		s.node.events.push(SessionRequest{Peer: s.peer})
	}
}

// pathLostLocked reports a path that stopped carrying the peer's packets:
// silent for pathDeadAfter, or for pathSuspectAfter with what we sent
// unacknowledged past its due time (a NAT that dropped or moved its
// mapping mid-stream).
func (s *session) pathLostLocked(now time.Time) bool {
	quiet := now.Sub(time.Unix(0, s.lastRecv.Load()))
	return quiet >= pathDeadAfter || (quiet >= pathSuspectAfter && s.conn.AckOverdue() >= ackOverdue)
}

// expired reports whether an ended session's record has served its time.
func (s *session) expired(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return (s.state == stFailed && now.Sub(s.ended) >= failedRecordTTL) ||
		(s.state == stClosed && now.Sub(s.ended) >= tombstoneTTL)
}

// unseenLocked reports a session the application has not heard of: the
// peer opened it, sent nothing, and we neither accepted nor sent. (A replayed
// initiation, say.) It is not reported and ends without an event.
func (s *session) unseenLocked() bool {
	return !s.initiator && !s.accepted && s.firstRequest.IsZero()
}

// endQuietlyLocked lets a session go without telling the application.
func (s *session) endQuietlyLocked(now time.Time) {
	s.stopLocked(false)
	s.state = stClosed
	s.ended = now
	s.setFlagsLocked()
}

// sessionLink seals a session's datagrams and writes them to the socket.
type sessionLink struct{ s *session }

func (l sessionLink) SendDatagrams(dgrams [][]byte) error {
	s := l.s
	kp, r := s.keys.Load(), s.route.Load()
	if kp == nil || r == nil {
		return errNoTransport
	}
	if !s.confirmed.Load() {
		// A responder answers an unproven address with its response only
		// (no keepalives, acks or data): the initiation may be spoofed or
		// replayed. The channels resend once the peer proves it.
		s.node.stats.unconfirmedDropped.Add(uint64(len(dgrams)))
		return nil
	}
	flags := byte(s.txFlags.Load())
	msgs := s.node.getMsgs(len(dgrams))
	defer s.node.putMsgs(msgs)
	for i, d := range dgrams {
		pkt, err := kp.Seal(d, len(d)-secure.DataHeaderLen, flags)
		if err != nil {
			return err
		}
		(*msgs)[i] = udpbatch.Message{Buf: pkt, Addr: r.remote}
	}
	return r.socketOr(s.node.main).writeBatch(*msgs)
}

var errNoTransport = errors.New("p2p: session has no keys or address")
