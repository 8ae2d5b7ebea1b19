package p2p

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/gamewire/gamewire/rendezvous"
)

// tcpFallbackAfter is how long the node waits for its UDP registration
// before it also tries the rendezvous server over TCP: a network that
// drops UDP never answers, and the first UDP registration takes two round
// trips plus the NAT test before it (discoverTimeout at worst, 2 s).
const (
	tcpFallbackAfter = 1500 * time.Millisecond
	tcpRedialEvery   = 5 * time.Second
	tcpDialTimeout   = 5 * time.Second
)

// tcpRendezvous is the node's registration over TCP, for networks that
// drop UDP: a second rendezvous client whose messages travel in frames on
// one TCP connection to the server's port. It is dropped as soon as the UDP
// registration works (the server keeps the newest registration, and the
// two would overwrite each other).
//
// Ownership: the maintenance goroutine dials and ticks it; its reader
// goroutine feeds the client. Fields under mu: conn and rv.
type tcpRendezvous struct {
	t *traversal

	mu     sync.Mutex
	conn   net.Conn
	rv     *rendezvous.Client
	dialAt time.Time // the next dial, after a failure
	busy   bool      // dialing
}

// tick dials when UDP registration has not happened in time, drops TCP
// once UDP works, and drives the TCP client's timers.
func (r *tcpRendezvous) tick(now time.Time) {
	udpOK := isRegistered(r.t.rv)
	r.mu.Lock()
	rv, conn := r.rv, r.conn
	switch {
	case udpOK && conn != nil:
		r.conn, r.rv = nil, nil
		r.mu.Unlock()
		rv.Close()
		conn.Close() // the reader ends
		r.t.n.log.Debug("p2p: UDP registration works: TCP rendezvous dropped")
		return
	case !udpOK && conn == nil && !r.busy && now.Sub(r.t.started) >= tcpFallbackAfter && !now.Before(r.dialAt) && r.t.ctx.Err() == nil:
		r.busy = true
		r.t.wg.Add(1)
		go r.dial()
	}
	r.mu.Unlock()
	if rv != nil {
		rv.Tick(now)
	}
}

func (r *tcpRendezvous) dial() {
	t := r.t
	defer t.wg.Done()
	ctx, cancel := context.WithTimeout(t.ctx, tcpDialTimeout)
	conn, err := t.direct.dialServer(ctx, t.server)
	cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.busy = false
	if err != nil || t.ctx.Err() != nil {
		r.dialAt = time.Now().Add(tcpRedialEvery)
		if conn != nil {
			conn.Close()
		}
		t.n.log.Debug("p2p: rendezvous over TCP", "err", err)
		return
	}
	var wmu sync.Mutex
	cfg := t.rvConfig()
	cfg.Candidates = t.direct.hostCandidates
	cfg.Send = func(b []byte, _ netip.AddrPort) {
		wmu.Lock()
		defer wmu.Unlock()
		conn.SetWriteDeadline(time.Now().Add(tcpDialTimeout))
		if rendezvous.WriteFrame(conn, b) != nil {
			conn.Close() // the reader sees it and the next tick redials
		}
	}
	rv := rendezvous.NewClient(cfg)
	r.conn, r.rv = conn, rv
	t.wg.Add(1)
	go r.read(conn, rv)
	t.n.log.Debug("p2p: rendezvous over TCP", "server", t.server)
}

// read feeds the server's frames to rv until the connection ends.
func (r *tcpRendezvous) read(conn net.Conn, rv *rendezvous.Client) {
	defer r.t.wg.Done()
	br := bufio.NewReader(conn)
	buf := make([]byte, readBufSize)
	for {
		b, err := rendezvous.ReadFrame(br, buf)
		if err != nil {
			break
		}
		rv.Handle(b, r.t.server)
	}
	conn.Close()
	rv.Close()
	r.mu.Lock()
	if r.conn == conn {
		r.conn, r.rv = nil, nil
		r.dialAt = time.Now().Add(time.Second)
	}
	r.mu.Unlock()
}

// client returns the TCP client if it is registered.
func (r *tcpRendezvous) client() *rendezvous.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rv != nil && isRegistered(r.rv) {
		return r.rv
	}
	return nil
}

func (r *tcpRendezvous) all() *rendezvous.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rv
}

func (r *tcpRendezvous) close() {
	r.mu.Lock()
	conn, rv := r.conn, r.rv
	r.conn, r.rv = nil, nil
	r.mu.Unlock()
	if conn != nil {
		rv.Close()
		conn.Close()
	}
}
