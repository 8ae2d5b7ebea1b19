package p2p

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gamewire/gamewire/internal/udpbatch"
	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/p2p/internal/path"
	"github.com/gamewire/gamewire/rendezvous"
)

// Direct TCP paths serve peers that reach each other over TCP but not UDP
// (a network that drops UDP). The node listens on TCP, at its UDP port
// number when it can (so the UDP candidates peers learn double as TCP
// guesses), with SO_REUSEPORT, and dials peers from that same port: the SYN
// leaves from the port whose NAT mapping the rendezvous server observed
// over TCP, and when both sides dial at once the SYNs cross inside the two
// NATs (TCP simultaneous open) and one connection results. A listener
// without a NAT in front simply accepts.
//
// On a link each datagram travels in a frame: tcpFrameMarker, a 2-byte
// big-endian length, the datagram. A link hands nothing to the node until
// the other end has proven who it is with a probe sealed under the pair's
// probe key; it is offered to the peer's session only once the ack of our
// own fresh probe comes back, so a replayed probe cannot steer a session
// onto a stranger's connection.
const (
	tcpFrameMarker     byte = 0xBE
	tcpFrameHeader          = 3
	tcpLinkDialTimeout      = 10 * time.Second // covers SYN retries at 1 s and 3 s: the peer's SYN may leave seconds after ours
	tcpHelloTimeout         = 5 * time.Second  // an unproven link is closed after this
	tcpLinkIdle             = 30 * time.Second // a link nothing crossed for this long is closed
	tcpWriteTimeout         = 5 * time.Second
	tcpListenRetry          = 5 * time.Second
	maxTCPLinks             = 64
	tcpCandidates           = 5
	// tcpQueueBytes bounds what waits for a link's writer beyond the
	// kernel's buffer. Past it datagrams are dropped (reliable data is
	// sent again by its channel) instead of queued into seconds of lag.
	tcpQueueBytes = 64 << 10
)

// tcpDirect is the node's direct TCP side: a listener opened on demand,
// the links, and the peers links may be made with.
//
// Ownership: links, and each peer's tcpPeer (in its peerPaths), belong to
// the path table's owner goroutine: introductions, the tick, the dial and
// accept goroutines and the links' own goroutines post their work there
// (traversal.do, traversal.must). mu is a leaf lock over the listener,
// which the rendezvous client's TCP dialer opens too.
type tcpDirect struct {
	t *traversal
	n *Node

	links      map[*tcpLink]struct{} // the path owner goroutine's
	accepting  atomic.Int32          // accepted connections on their way to the owner
	framePool  sync.Pool
	queueBytes atomic.Int64 // tcpQueueBytes; tests lower it

	mu      sync.Mutex // leaf
	ln      net.Listener
	lnRetry time.Time
	closed  bool
}

// tcpPeer is an introduced peer direct TCP may serve.
type tcpPeer struct {
	dialing map[netip.AddrPort]bool
}

func newTCPDirect(t *traversal) *tcpDirect {
	d := &tcpDirect{t: t, n: t.n, links: map[*tcpLink]struct{}{}}
	d.queueBytes.Store(tcpQueueBytes)
	d.framePool.New = func() any {
		b := make([]byte, 0, tcpFrameHeader+readBufSize)
		return &b
	}
	return d
}

func (d *tcpDirect) enabled() bool { return !d.n.cfg.DisableDirectTCP }

// onPeer dials an introduced peer's candidates over TCP when UDP between
// us may not work: the peer registered over TCP, or we did (owner
// goroutine; the peer's view says it may make links once its state is
// published).
func (d *tcpDirect) onPeer(peer PeerID, pp *peerPaths, p *rendezvous.Peer, udpBlocked bool) {
	if !d.enabled() || !(p.TCP || udpBlocked) || peer == d.n.id.public {
		return
	}
	if pp.tcp == nil {
		pp.tcp = &tcpPeer{dialing: map[netip.AddrPort]bool{}}
	}
	local, err := d.listen()
	if err != nil || d.confirmed(peer) {
		return
	}
	for _, c := range tcpCandidatesOf(p) {
		if !pp.tcp.dialing[c] && !d.linked(peer, c) {
			pp.tcp.dialing[c] = true
			d.t.wg.Add(1)
			go d.dial(peer, local, c)
		}
	}
}

// tcpCandidatesOf lists where a peer may take TCP: its observed address
// (over TCP if it registered so, else its UDP one as a guess), then its
// host addresses.
func tcpCandidatesOf(p *rendezvous.Peer) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, tcpCandidates)
	add := func(a netip.AddrPort) {
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		if !a.IsValid() || !a.Addr().Is4() || a.Port() == 0 || len(out) == tcpCandidates {
			return
		}
		for _, o := range out {
			if o == a {
				return
			}
		}
		out = append(out, a)
	}
	add(p.Observed)
	for _, c := range p.Candidates {
		add(c)
	}
	return out
}

func (d *tcpDirect) confirmed(peer PeerID) bool {
	for l := range d.links {
		if l.isConfirmed(peer) {
			return true
		}
	}
	return false
}

func (d *tcpDirect) linked(peer PeerID, remote netip.AddrPort) bool {
	for l := range d.links {
		if l.remote == remote && l.belongsTo(peer) {
			return true
		}
	}
	return false
}

// listen opens the listener if it is not open (the bind happens with no
// lock held) and returns its address.
func (d *tcpDirect) listen() (netip.AddrPort, error) {
	d.mu.Lock()
	if d.ln != nil || d.closed || time.Now().Before(d.lnRetry) {
		defer d.mu.Unlock()
		return d.lnAddrLocked()
	}
	d.mu.Unlock()
	ip := d.n.bindIP()
	port := addrOfConn(d.n.main.pc).Port()
	ln, err := d.n.cfg.ListenTCP("tcp4", net.JoinHostPort(ip, strconv.Itoa(int(port))))
	if err != nil {
		ln, err = d.n.cfg.ListenTCP("tcp4", net.JoinHostPort(ip, "0"))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case err != nil:
		d.lnRetry = time.Now().Add(tcpListenRetry)
		d.n.log.Debug("p2p: TCP listener", "err", err)
	case d.ln != nil || d.closed:
		ln.Close() // another caller's listener won, or the node is closing
	default:
		d.ln = ln
		d.t.wg.Add(1)
		go d.accept(ln)
		d.n.log.Debug("p2p: TCP listener", "addr", ln.Addr())
	}
	return d.lnAddrLocked()
}

// lnAddrLocked is the listener's address (errTCPListen: none).
func (d *tcpDirect) lnAddrLocked() (netip.AddrPort, error) {
	if d.ln == nil {
		return netip.AddrPort{}, errTCPListen
	}
	ap, err := netip.ParseAddrPort(d.ln.Addr().String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// port is the listener's port (0: not listening).
func (d *tcpDirect) port() uint16 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ln == nil {
		return 0
	}
	ap, _ := netip.ParseAddrPort(d.ln.Addr().String())
	return ap.Port()
}

// dialServer opens the rendezvous connection over TCP from the listener's
// port, so the server observes the mapping peers will dial; it falls back
// to an ordinary dial.
func (d *tcpDirect) dialServer(ctx context.Context, server netip.AddrPort) (net.Conn, error) {
	if d.enabled() {
		if local, err := d.listen(); err == nil {
			c, err := d.n.cfg.DialTCP(ctx, "tcp4", local.String(), server.String())
			if err == nil || ctx.Err() != nil {
				return c, err
			}
			d.n.log.Debug("p2p: rendezvous over TCP from the listener's port", "err", err)
		}
	}
	return d.n.cfg.Dial(ctx, "tcp4", server.String())
}

// hostCandidates are our host candidates with the listener's port, for a
// registration over TCP.
func (d *tcpDirect) hostCandidates() []netip.AddrPort {
	cands := d.t.hostCandidates()
	port := d.port()
	if port == 0 {
		return cands
	}
	for i, c := range cands {
		cands[i] = netip.AddrPortFrom(c.Addr(), port)
	}
	return cands
}

func (d *tcpDirect) dial(peer PeerID, local, to netip.AddrPort) {
	defer d.t.wg.Done()
	ctx, cancel := context.WithTimeout(d.t.ctx, tcpLinkDialTimeout)
	conn, err := d.n.cfg.DialTCP(ctx, "tcp4", local.String(), to.String())
	cancel()
	if err != nil {
		d.n.log.Debug("p2p: TCP dial", "peer", peer, "to", to, "err", err)
	}
	d.t.must(func() {
		if pp := d.t.peers[peer]; pp != nil && pp.tcp != nil {
			delete(pp.tcp.dialing, to)
		}
		if conn != nil {
			d.add(conn, peer)
		}
	}, func() {
		if conn != nil {
			conn.Close()
		}
	})
}

func (d *tcpDirect) accept(ln net.Listener) {
	defer d.t.wg.Done()
	fails := 0
	for {
		c, err := ln.Accept()
		if err != nil {
			if d.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			fails++ // out of descriptors, say: do not spin
			time.Sleep(min(time.Duration(fails)*10*time.Millisecond, time.Second))
			continue
		}
		fails = 0
		d.accepted(c)
	}
}

// accepted hands an accepted connection to the owner goroutine. At most
// maxTCPLinks wait there at once: a stranger flooding the listener with
// connections is refused here, and cannot fill the owner's queue and make
// it drop the route events of sessions.
func (d *tcpDirect) accepted(c net.Conn) {
	if d.accepting.Add(1) > maxTCPLinks {
		d.accepting.Add(-1)
		c.Close()
		d.n.stats.tcpRefused.Add(1)
		return
	}
	if !d.n.paths.Do(func() {
		defer d.accepting.Add(-1)
		if d.t.ctx.Err() != nil {
			c.Close()
			return
		}
		d.add(c, PeerID{})
	}) {
		d.accepting.Add(-1)
		c.Close()
		d.n.stats.tcpRefused.Add(1)
	}
}

func (d *tcpDirect) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// add starts a link on conn: dialed toward peer, or accepted (zero peer)
// (owner goroutine).
func (d *tcpDirect) add(conn net.Conn, peer PeerID) {
	remote, err := netip.ParseAddrPort(conn.RemoteAddr().String())
	if err != nil {
		conn.Close()
		return
	}
	l := &tcpLink{d: d, conn: conn, remote: netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()),
		peer: peer, wake: make(chan struct{}, 1), done: make(chan struct{})}
	now := time.Now().UnixNano()
	l.lastIn.Store(now)
	l.lastOut.Store(now)
	if len(d.links) >= maxTCPLinks {
		conn.Close()
		d.n.stats.tcpRefused.Add(1)
		return
	}
	d.links[l] = struct{}{}
	d.t.wg.Add(2)
	conn.SetReadDeadline(time.Now().Add(tcpHelloTimeout))
	go l.readLoop()
	go l.writeLoop()
	if peer != (PeerID{}) {
		l.sendProbe(peer)
	}
	d.n.log.Debug("p2p: TCP link", "remote", l.remote, "dialed", peer != (PeerID{}))
}

// wants reports whether a link may be made with peer: it was introduced
// (any goroutine).
func (d *tcpDirect) wants(peer PeerID) bool { return d.t.view(peer).tcp }

// offer offers a proven link to the peer's session (session.offer):
// one still connecting sends its initiation there unless a punched UDP
// path already carries it; for an established one the path layer decides
// (it leaves the relay, or a path that went quiet, for the link; a direct
// UDP path that works stays: it ranks above TCP). Without a session (the
// peer asked for us) the peer's initiation will arrive on the link.
func (d *tcpDirect) offer(peer PeerID, l *tcpLink) {
	d.n.stats.tcpLinks.Add(1)
	if s := d.n.lookupSession(peer); s != nil {
		s.offer(path.Offer{Route: path.Route{Remote: l.remote, Sock: l}}, fromTCP, time.Now())
	}
}

// tick closes links nothing crossed for tcpLinkIdle (owner goroutine).
func (d *tcpDirect) tick(now time.Time) {
	for l := range d.links {
		if now.Sub(time.Unix(0, max(l.lastIn.Load(), l.lastOut.Load()))) >= tcpLinkIdle {
			d.n.log.Debug("p2p: TCP link idle: closed", "remote", l.remote)
			l.close()
		}
	}
}

// remove forgets a closed link (any goroutine: the link's own, or the
// owner's).
func (d *tcpDirect) remove(l *tcpLink) {
	d.n.paths.Must(func() { delete(d.links, l) })
}

// closeListener stops accepting, before the owner goroutine closes the
// links.
func (d *tcpDirect) closeListener() {
	d.mu.Lock()
	d.closed = true
	ln := d.ln
	d.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
}

// close ends every link (owner goroutine); their goroutines end (the
// traversal's wait group counts them).
func (d *tcpDirect) close() {
	for l := range d.links {
		l.close()
	}
}

// tcpLink is one TCP connection to a peer, seen by sessions as a socket.
//
// Ownership: a reader goroutine (frames in, probes), a writer goroutine
// (the queue out); fields under mu are shared with senders.
type tcpLink struct {
	d       *tcpDirect
	conn    net.Conn
	remote  netip.AddrPort
	wake    chan struct{}
	done    chan struct{}
	once    sync.Once
	lastIn  atomic.Int64 // unix nanoseconds
	lastOut atomic.Int64

	mu        sync.Mutex
	queue     []*[]byte // frames for the writer
	queued    int       // their bytes
	peer      PeerID    // dialed toward, or proven by its probe
	heard     bool      // the peer proved itself: its packets reach the node
	probed    bool      // our probe went out
	confirmed bool      // its ack came back
	txid      [12]byte
}

func (l *tcpLink) belongsTo(peer PeerID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.peer == peer
}

func (l *tcpLink) isConfirmed(peer PeerID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.confirmed && l.peer == peer
}

func (l *tcpLink) Kind() path.Kind { return path.TCP }

// Closed reports whether the link ended.
func (l *tcpLink) Closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// WriteTo queues one datagram for the link's one peer (to is ignored).
func (l *tcpLink) WriteTo(b []byte, _ netip.AddrPort) error { return l.write(b) }

// WriteBatch queues datagrams.
func (l *tcpLink) WriteBatch(msgs []udpbatch.Message) error { return writeEach(l, msgs) }

// write queues one datagram; past tcpQueueBytes it is dropped.
func (l *tcpLink) write(b []byte) error {
	if len(b) > readBufSize {
		return errTCPTooLarge
	}
	select {
	case <-l.done:
		return net.ErrClosed // nobody would drain the queue
	default:
	}
	p := l.d.framePool.Get().(*[]byte)
	f := append((*p)[:0], tcpFrameMarker, byte(len(b)>>8), byte(len(b)))
	*p = append(f, b...)
	l.mu.Lock()
	if int64(l.queued+len(*p)) > l.d.queueBytes.Load() {
		l.mu.Unlock()
		l.d.framePool.Put(p)
		l.d.n.stats.tcpDropped.Add(1)
		return errTCPBacklog
	}
	l.queue = append(l.queue, p)
	l.queued += len(*p)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

func (l *tcpLink) writeLoop() {
	defer l.d.t.wg.Done()
	var spare []*[]byte
	var out net.Buffers
	for {
		select {
		case <-l.done:
			return
		case <-l.wake:
		}
		l.mu.Lock()
		q := l.queue
		l.queue, l.queued = spare[:0], 0
		l.mu.Unlock()
		out = out[:0]
		for _, p := range q {
			out = append(out, *p)
		}
		l.conn.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
		_, err := out.WriteTo(l.conn)
		for _, p := range q {
			l.d.framePool.Put(p)
		}
		clear(q)
		spare = q
		if err != nil {
			l.close()
			return
		}
		l.lastOut.Store(time.Now().UnixNano())
	}
}

func (l *tcpLink) readLoop() {
	defer l.d.t.wg.Done()
	defer l.close()
	br := bufio.NewReaderSize(l.conn, 16<<10)
	buf := make([]byte, readBufSize)
	for {
		b, err := readTCPFrame(br, buf)
		if err != nil {
			if !l.isHeard() {
				l.d.n.stats.tcpRefused.Add(1) // silent, not ours, or broken before proving anything
			}
			return
		}
		l.lastIn.Store(time.Now().UnixNano())
		if nat.IsProbe(b) {
			if !l.onProbe(b) {
				l.d.n.stats.tcpRefused.Add(1)
				return
			}
			continue
		}
		if !l.isHeard() {
			l.d.n.stats.dropped.Add(1)
			continue
		}
		l.d.n.handlePacket(b, l.remote, l)
	}
}

func readTCPFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	var h [tcpFrameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := int(h[1])<<8 | int(h[2])
	if h[0] != tcpFrameMarker || n == 0 || n > len(buf) {
		return nil, errTCPFrame
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func (l *tcpLink) isHeard() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heard
}

// onProbe checks a probe or ack; false closes the link (not our peer, or
// a forgery).
func (l *tcpLink) onProbe(b []byte) bool {
	pr, ok := nat.ParseProbe(b)
	if !ok {
		return false
	}
	peer := PeerID(pr.Sender)
	l.mu.Lock()
	expected := l.peer
	l.mu.Unlock()
	if expected != (PeerID{}) && peer != expected || expected == (PeerID{}) && !l.d.wants(peer) {
		return false
	}
	key, err := l.d.t.probeKey(peer)
	if err != nil || !nat.VerifyProbe(b, &key) {
		return false
	}
	if pr.Ack {
		l.mu.Lock()
		fresh := l.probed && !l.confirmed && pr.TxID == l.txid
		if fresh {
			l.confirmed, l.heard = true, true
		}
		l.mu.Unlock()
		if fresh {
			l.conn.SetReadDeadline(time.Time{})
			l.d.offer(peer, l)
		}
		return true
	}
	l.mu.Lock()
	l.peer, l.heard = peer, true
	probed := l.probed
	l.mu.Unlock()
	l.conn.SetReadDeadline(time.Time{})
	ack := nat.Probe{Ack: true, Sender: l.d.n.id.public, TxID: pr.TxID, Observed: l.remote}
	l.write(ack.Append(nil, &key))
	if !probed {
		l.sendProbe(peer)
	}
	return true
}

// sendProbe sends our probe to peer; its ack confirms the link.
func (l *tcpLink) sendProbe(peer PeerID) {
	key, err := l.d.t.probeKey(peer)
	if err != nil {
		l.close()
		return
	}
	pr := nat.Probe{Sender: l.d.n.id.public}
	rand.Read(pr.TxID[:])
	l.mu.Lock()
	l.peer, l.probed, l.txid = peer, true, pr.TxID
	l.mu.Unlock()
	l.write(pr.Append(nil, &key))
}

func (l *tcpLink) close() {
	l.once.Do(func() {
		close(l.done)
		l.conn.Close()
		l.d.remove(l)
	})
}
