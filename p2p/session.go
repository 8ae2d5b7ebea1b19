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
	"github.com/gamewire/gamewire/p2p/internal/path"
)

// clone copies b: a handshake message queued for after unlock must not
// change under the write.
func clone(b []byte) []byte { return append([]byte(nil), b...) }

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
// channels.Conn's Deliver callback), the handshake worker's, the
// maintenance goroutine's, and path code offering routes (session.offer).
// The route is the path layer's (paths; its owner goroutine alone moves
// it once the session is established); keys, txFlags and the handshake
// route are atomics, so the packet paths (sessionLink, the reader) read
// them without mu. Lock order: Node.mu, then session.mu, then the leaf
// locks Node.tabMu, recvQueues.mu and the path table's queue
// (docs/ARCHITECTURE.md has the whole order). No socket is written under
// mu: locked sections queue datagrams (writeLocked) that unlock sends.
// Session code never touches Node.sessions: a session that ends stays
// there in stFailed or stClosed, lookups treat stClosed as absent, and the
// maintenance goroutine removes it when its time is up.
// Calling the Conn with mu held is allowed: the Conn delivers (session.deliver
// takes mu) with no lock of its own held, and its Link only reads the
// atomics.
type session struct {
	node *Node
	peer PeerID

	// tickDue is when maintenance next looks at the session, in unix
	// nanoseconds; 0 means every round. maintRound is the maintenance
	// goroutine's own mark.
	tickDue    atomic.Int64
	maintRound uint64

	// paths is the peer's path state: its route is where the session
	// sends once established (the path layer's owner goroutine chooses
	// it). hsRoute is where this attempt's handshake goes, and the
	// route the session was established on until the path layer has it.
	// gen numbers the attempts and establishments, so no route of an
	// earlier one is used.
	paths    *path.Peer[*session]
	hsRoute  atomic.Pointer[path.Route]
	gen      atomic.Uint64
	estGen   atomic.Uint64 // gen of the last establishment (0: none)
	keys     atomic.Pointer[secure.Keypair]
	txFlags  atomic.Uint32
	lastRecv atomic.Int64 // unix ns of the last authenticated packet
	lastPath atomic.Int64 // unix ns of the last one on the current route (or of the move to it)
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
	lanAt       time.Time // the handshake began on a LAN beacon's address (lan.go)
	lastRepunch time.Time // last search for a new path
	hs          *secure.Initiation
	hsNext      time.Time
	hsInterval  time.Duration
	hsSentAt    time.Time // first send of the initiation; zero once resent
	early       []earlyPacket

	conn      *channels.Conn
	out       []outgoing       // sent by unlock
	later     laterWork        // done by unlock
	closing   []*channels.Conn // closed by unlock: Close writes and waits
	respCache []byte           // responder: our response, resent for a retransmitted initiation
	respID    [16]byte         // the initiation it answers
	openChans map[int]struct{}
}

// earlyPacket is a data packet that reached an initiator before the
// response that gives it the keys (the responder sends at once and the two
// can swap places). It is replayed once the keys exist, rather than lost
// and waited for.
type earlyPacket struct {
	src  netip.AddrPort
	sock path.Socket
	data []byte
}

// maxEarly bounds the early packets kept per handshake.
const maxEarly = 8

// outgoing is a datagram a locked section decided to send: it goes out
// after the session's lock is released (unlock), as no lock of ours is
// held across a socket write.
type outgoing struct {
	sock path.Socket
	b    []byte
	to   netip.AddrPort
}

// writeLocked queues b for to through sock, sent once mu is released.
func (s *session) writeLocked(sock path.Socket, b []byte, to netip.AddrPort) {
	s.out = append(s.out, outgoing{sock: sock, b: b, to: to})
}

// laterWork is what a locked section asks of the rendezvous client, done
// by unlock: the client sends at once, and nothing is sent under mu.
type laterWork uint8

const (
	askServer    laterWork = 1 << iota // ask the server for an introduction
	cancelAsking                       // stop asking
	repunch                            // register again and ask anew: the path broke
)

// unlock releases mu, then sends what the locked section queued and asks
// the server what it decided to.
func (s *session) unlock() {
	out, later, closing := s.out, s.later, s.closing
	s.out, s.later, s.closing = nil, 0, nil
	s.mu.Unlock()
	for _, o := range out {
		o.sock.WriteTo(o.b, o.to)
	}
	for _, c := range closing {
		c.Close() // writes its CLOSE frame and waits for its goroutine
	}
	t := s.node.trav
	if later == 0 || t == nil {
		return
	}
	now := time.Now()
	if later&cancelAsking != 0 {
		t.cancelIntroduction(s.peer)
	}
	if later&askServer != 0 {
		t.introduce(s.peer, now)
	}
	if later&repunch != 0 {
		t.repunch(s.peer, now)
	}
}

// closeConnLocked retires the Conn: the session has none from here on, and
// unlock closes it once s.mu is released.
func (s *session) closeConnLocked() {
	s.closing = append(s.closing, s.conn)
	s.conn = nil
}

// current is the route the session sends on: once established, the path
// layer's route for that establishment (closing notices and a tombstone's
// replies included); before that, and until the path layer has taken the
// established route in, the session's own (the handshake's, then the one
// it was established on).
func (s *session) current() *path.Route {
	if g := s.estGen.Load(); g != 0 && g == s.gen.Load() {
		if r := s.paths.Route(); r != nil && r.Gen == g {
			return r
		}
	}
	return s.hsRoute.Load()
}

// remoteAddr returns the peer's address on the current route, if any.
func (s *session) remoteAddr() (netip.AddrPort, bool) {
	if r := s.current(); r != nil {
		return r.Remote, true
	}
	return netip.AddrPort{}, false
}

// sockOf is r's socket, or the main one when r has none or its socket
// closed (an extra socket given back, a dead allocation, a closed link).
func (n *Node) sockOf(r *path.Route) path.Socket {
	if r == nil || r.Sock == nil || r.Sock.Closed() {
		return n.main
	}
	return r.Sock
}

// socket returns the socket the session sends on.
func (s *session) socket() path.Socket { return s.node.sockOf(s.current()) }

// pathKind is the kind of the current route.
func (s *session) pathKind() PathKind { return pathKindOf(s.socket().Kind()) }

// handshakeOnLocked points this attempt's handshake at remote through sock
// (nil: the main socket).
func (s *session) handshakeOnLocked(remote netip.AddrPort, sock path.Socket) {
	if sock == nil {
		sock = s.node.main
	}
	r := &path.Route{Remote: remote, Sock: sock, Gen: s.gen.Load()}
	s.hsRoute.Store(r)
	s.lastPath.Store(time.Now().UnixNano())
	s.node.paths.Begin(s.paths, *r)
}

// health is what the session knows of its current route, for the path
// layer's choice.
func (s *session) health(conn *channels.Conn, now int64) path.Health {
	h := path.Health{Quiet: time.Duration(now - s.lastPath.Load())}
	if conn != nil {
		h.AckOverdue, h.RTT = conn.AckOverdue(), conn.SmoothedRTT()
	}
	return h
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
		s.unlock()
		if noDelay && !active {
			return nil // SendUnreliableNoDelay before the session is connected
		}
		return mapConnErr(conn.Send(uint16(ch), data, flags))
	}
	defer s.unlock()
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
		s.conn.Queue(uint16(m.channel), m.data, m.flags) // written by the Conn's goroutine, not under s.mu
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
	if s.introducing {
		s.later |= cancelAsking
	}
	s.introducing = false
}

// restartLocked turns a failed record into a fresh attempt.
func (s *session) restartLocked(now time.Time) {
	s.introducing = false
	s.gen.Add(1) // routes of the failed attempt are not this one's
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
	defer s.unlock()
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

// startHandshakeLocked sends an initiation if the peer's address is known
// (AddPeerAddr, or LAN discovery heard the peer), and otherwise asks the
// rendezvous server for an introduction (the punch it leads to calls
// startHandshakeOnLocked).
func (s *session) startHandshakeLocked(now time.Time) {
	addr, ok := s.node.peerAddr(s.peer)
	if !ok {
		if s.startLANHandshakeLocked(now) {
			return
		}
		if s.node.trav != nil && !s.introducing {
			s.introducing = true
			s.later = s.later&^cancelAsking | askServer
		}
		return // wait for AddPeerAddr or a path
	}
	s.startHandshakeOnLocked(addr, nil, now)
}

// startHandshakeOnLocked sends an initiation to addr through sock.
func (s *session) startHandshakeOnLocked(addr netip.AddrPort, sock path.Socket, now time.Time) {
	s.handshakeOnLocked(addr, sock)
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
	s.writeLocked(s.socket(), clone(in.Message()), addr)
}

// abandonHandshakeLocked drops our initiation (the peer's won).
func (s *session) abandonHandshakeLocked() {
	if s.hs != nil {
		s.node.freeIndex(s.index, s)
		s.hs, s.index, s.initiator = nil, 0, false
		s.early = nil
	}
}

// channelPriorities is Config.ChannelPriority for a channels.Conn: nil
// when it is unset.
func (n *Node) channelPriorities() func(uint16) channels.Priority {
	f := n.cfg.ChannelPriority
	if f == nil {
		return nil
	}
	return func(channel uint16) channels.Priority {
		p := f(int(channel))
		return channels.Priority{Level: p.Level, Weight: p.Weight}
	}
}

// establishLocked starts the transport: keys, the channels.Conn, and what
// was queued before it existed.
func (s *session) establishLocked(kp *secure.Keypair, src netip.AddrPort, sock path.Socket, peerEpoch uint64, peerAccepted bool) error {
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
	conn, err := channels.New(sessionLink{s: s, kp: kp}, channels.Config{
		InitialRTT:        rtt,
		Headroom:          secure.DataHeaderLen,
		Tailroom:          secure.TagLen,
		MaxUnreliableSize: MaxUnreliableSize,
		MaxReliableSize:   MaxReliableSize,
		NagleDelay:        n.cfg.NagleDelay,
		ReleaseOnRead:     true,
		ReceiveWindow:     window,
		Deliver:           s.deliver,
		ChannelPriority:   n.channelPriorities(),
		CongestionControl: n.cfg.CongestionControl,
		Logger:            n.log,
		Timers:            n.timers,
	})
	if err != nil {
		return err
	}
	var pref uint32
	if n.trav != nil {
		// Checks may have validated a better path (the LAN) while the
		// handshake went over another.
		src, sock, pref = n.trav.better(s.peer, src, sock)
	}
	if sock == nil {
		sock = n.main
	}
	// A number of its own: until the path layer has taken this route in,
	// current() uses it rather than a handshake route of the attempt.
	r := &path.Route{Remote: src, Sock: sock, Gen: s.gen.Add(1)}
	s.hsRoute.Store(r)
	s.estGen.Store(r.Gen)
	s.lastPath.Store(time.Now().UnixNano())
	n.paths.Establish(s.paths, *r, pref)
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
	defer s.unlock()
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
func (s *session) onPacket(src netip.AddrPort, sock path.Socket, flags byte, plain []byte) {
	now := time.Now().UnixNano()
	s.lastRecv.Store(now)
	s.mu.Lock()
	switch s.state {
	case stClosed:
		s.replyTombstoneLocked(flags)
		s.unlock()
		return
	case stEstablished:
	default:
		s.unlock()
		return
	}
	if flags&flagRefused != 0 {
		s.failLocked(SessionErrorNoRightsToApp, false)
		s.unlock()
		return
	}
	if flags&flagClosing != 0 {
		s.peerClosedLocked()
		s.unlock()
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
	s.unlock()
	s.notePath(src, sock, conn, now)
	if len(plain) > 0 {
		conn.HandleDatagram(plain)
	}
	if confirmedNow {
		conn.ProbeNow() // what the old path swallowed goes again at once
	}
}

// notePath offers the path layer the route an authenticated packet came
// from, when it is not the current one (no lock held: it asks the Conn).
// The path layer decides whether the session follows (a NAT rebinding, a
// peer that moved) or stays (stragglers, the other address family).
func (s *session) notePath(src netip.AddrPort, sock path.Socket, conn *channels.Conn, now int64) {
	r := path.Route{Remote: src, Sock: sock, Gen: s.gen.Load()}
	if cur := s.current(); cur != nil && path.Same(cur, &r) {
		s.lastPath.Store(now)
		return
	}
	s.node.paths.Heard(s.paths, r, func() path.Health { return s.health(conn, now) })
}

// keepEarly keeps a copy of a data packet that arrived while our handshake
// is still waiting for its response; it reports whether it did.
func (s *session) keepEarly(b []byte, src netip.AddrPort, sock path.Socket) bool {
	s.mu.Lock()
	defer s.unlock()
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
// flags (mu held: it goes out on unlock).
func (s *session) sendControl() {
	kp, r := s.keys.Load(), s.current()
	if kp == nil || r == nil || !s.confirmed.Load() {
		return
	}
	buf := make([]byte, secure.DataHeaderLen, secure.DataHeaderLen+secure.TagLen)
	pkt, err := kp.Seal(buf, 0, byte(s.txFlags.Load()))
	if err != nil {
		return
	}
	s.writeLocked(s.node.sockOf(r), pkt, r.Remote)
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
		if r := s.current(); r != nil {
			closeExtra(r.Sock) // an extra socket the session lived on; the route falls back to the main one
		}
	}()
	if s.conn != nil {
		if tell {
			prev := s.state
			s.state = stClosed
			s.setFlagsLocked()
			s.sendControl()
			s.state = prev
		}
		s.closeConnLocked() // its CLOSE frame backs up the flag
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
	defer s.unlock()
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
		s.closeConnLocked() // its CLOSE frame backs up the flags
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
	defer s.unlock()
	timeout := s.node.cfg.ConnectTimeout
	switch s.state {
	case stConnecting:
		switch {
		case now.Sub(s.started) >= timeout:
			s.failLocked(SessionErrorTimeout, false)
		case s.hs == nil:
			s.startHandshakeLocked(now)
		case !now.Before(s.hsNext):
			if r := s.current(); r != nil {
				s.writeLocked(s.node.sockOf(r), clone(s.hs.Message()), r.Remote)
			}
			s.hsSentAt = time.Time{} // a response can no longer time one round trip
			s.hsInterval = min(2*s.hsInterval, handshakeMaxRetry)
			s.hsNext = now.Add(s.hsInterval)
		}
		s.lanFallbackLocked(now)
		s.reaskLocked(now)
	case stEstablished:
		s.tickEstablishedLocked(now, timeout)
		if s.state == stEstablished {
			s.tickDue.Store(now.Add(establishedTick).UnixNano())
		}
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

// reaskLocked asks the server for the peer again, every reaskEvery,
// while no path to it has been found: what the first introduction told
// of the peer may be out of date (a port mapping or another family's
// address it learnt just after registering), and the next one brings
// what it registered since.
func (s *session) reaskLocked(now time.Time) {
	t := s.node.trav
	if t == nil || !s.introducing || now.Sub(s.started) < reaskEvery || now.Sub(s.lastRepunch) < reaskEvery || t.found(s.peer) {
		return
	}
	s.lastRepunch = now
	s.later |= askServer
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
		s.later |= repunch // the path went quiet: look for a new one
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
	defer s.unlock()
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

// sessionLink seals a Conn's datagrams and writes them to the session's
// socket. Each Conn seals with the keys of the establishment it belongs
// to: a Conn retired as the session re-establishes (its CLOSE frame is
// written once the session's lock is released) must not speak for the new
// one.
type sessionLink struct {
	s  *session
	kp *secure.Keypair
}

func (l sessionLink) SendDatagrams(dgrams [][]byte) error {
	s, kp := l.s, l.kp
	r := s.current()
	if r == nil {
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
		(*msgs)[i] = udpbatch.Message{Buf: pkt, Addr: r.Remote}
	}
	return s.node.sockOf(r).WriteBatch(*msgs)
}

var errNoTransport = errors.New("p2p: session has no keys or address")
