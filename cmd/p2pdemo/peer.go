package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gamewire/gamewire/p2p"
)

const peerSummary = `p2pdemo peer: a gamewire peer. It prints its PeerID first ("peer ID"), then,
interactively, reads commands from standard input:

  /connect ID   talk to peer ID (the session starts with the first message)
  TEXT          a chat line to the current peer, on a reliable channel
  /ping         an unreliable ping; the peer's pong gives the round trip
  /send FILE    send a file in reliable 1 MiB messages; the other end checks its SHA-256
  /state        the session's state (path, RTT, loss, rates, queues)
  /quit         leave

Sessions peers open are accepted. With --echo it serves as an echo peer until
killed; with --ping ID it connects, sends --count messages of every send type,
waits for the echoes, prints a summary and exits 0 when every reliable message
came back (otherwise non-zero, naming the session error: Timeout,
DestinationNotLoggedOn, ...).`

// Channels of the demo protocol.
const (
	chChat  = 0  // reliable: chat lines (an echo peer sends them back)
	chPing  = 1  // unreliable: /ping and pong
	chFile  = 2  // reliable: file transfers
	chTypes = 10 // 10+t: --ping messages sent with send type t, echoed the same way
)

type peerFlags struct {
	server, identity, app, listen, recvDir, ping string
	noRelay, noPortMap, echo, json, verbose      bool
	count                                        int
	timeout                                      time.Duration
}

func parsePeerFlags(args []string, stderr io.Writer) (peerFlags, error) {
	var f peerFlags
	fs := newFlags("peer", peerSummary, stderr)
	fs.StringVar(&f.server, "server", "", "the rendezvous server, `[KEY@]HOST:PORT` (KEY pins the server's key, as its banner prints it)")
	fs.StringVar(&f.identity, "identity", "", "keep this peer's key in `FILE` (created if missing): the same PeerID every run; default: a new one each run")
	fs.StringVar(&f.app, "app", "p2pdemo", "the AppID: peers of different apps do not connect")
	fs.StringVar(&f.listen, "listen", "", "UDP `HOST:PORT` to listen on (default: any interface, a free port)")
	fs.BoolVar(&f.noRelay, "no-relay", false, "never relay through TURN: without a direct path the session fails with Timeout")
	fs.BoolVar(&f.noPortMap, "no-portmap", false, "do not ask the router for a port mapping (PCP, NAT-PMP, UPnP IGD)")
	fs.BoolVar(&f.echo, "echo", false, "serve as an echo peer until killed")
	fs.StringVar(&f.ping, "ping", "", "connect to peer `ID`, send messages of every send type, wait for the echoes, print a summary and exit")
	fs.IntVar(&f.count, "count", 10, "with --ping: messages of each send type")
	fs.BoolVar(&f.json, "json", false, "with --ping: print the summary as JSON")
	fs.DurationVar(&f.timeout, "timeout", p2p.DefaultConnectTimeout, "how long a session may take to connect")
	fs.StringVar(&f.recvDir, "recv-dir", ".", "where received files are written")
	fs.BoolVar(&f.verbose, "v", false, "log the node's debug messages to standard error")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	switch {
	case fs.NArg() > 0:
		return f, fmt.Errorf("peer: unexpected argument %q", fs.Arg(0))
	case f.server == "":
		return f, errors.New("peer: --server is required")
	case f.echo && f.ping != "":
		return f, errors.New("peer: --echo and --ping exclude each other")
	case f.count < 1 || f.count > 10000:
		return f, errors.New("peer: --count must be 1..10000")
	}
	return f, nil
}

func runPeer(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	f, err := parsePeerFlags(args, stderr)
	if err != nil {
		return err
	}
	cfg := p2p.Config{Rendezvous: f.server, AppID: f.app, ListenAddr: f.listen, DisableRelay: f.noRelay,
		DisablePortMapping: f.noPortMap, ConnectTimeout: f.timeout}
	if f.identity != "" {
		if cfg.Identity, err = p2p.LoadOrCreateIdentity(f.identity); err != nil {
			return err
		}
	}
	if f.verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	con := newConsole(stdout, "")
	p, err := startPeer(ctx, cfg, con, f.recvDir, f.echo)
	if err != nil {
		return err
	}
	defer p.close()
	con.println("peer %s", p.node.PeerID())
	if f.ping != "" && !p.awaitRegistered(ctx, f.timeout) {
		return &exitError{code: 1, msg: "ping failed: not registered with the rendezvous server within " + f.timeout.String()}
	}
	p.wg.Go(func() {
		if p.awaitRegistered(p.ctx, 0) {
			con.println("registered with the rendezvous server")
			con.println("nat: %v", p.natReport(p.ctx))
		}
	})
	switch {
	case f.echo:
		con.println("echoing until killed")
		<-ctx.Done()
		return nil
	case f.ping != "":
		to, err := p2p.ParsePeerID(f.ping)
		if err != nil {
			return &exitError{code: 2, msg: fmt.Sprintf("--ping: %v", err)}
		}
		return pingCommand(ctx, p, to, f.count, f.json)
	}
	return p.interactive(ctx, stdin)
}

// peer is a node with the demo protocol on it.
//
// Ownership: a goroutine per demo channel reads packets, one reads events;
// the interactive loop (or a --ping run) sends. Fields under mu are shared
// between them.
type peer struct {
	node    *p2p.Node
	con     *console
	recvDir string
	echo    bool
	ctx     context.Context // ends with close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // readers and the event loop
	sends   sync.WaitGroup // file transfers

	mu       sync.Mutex
	current  p2p.PeerID
	hasPeer  bool
	pingSeq  uint64
	pings    map[uint64]time.Time // sent pings waiting for their pong
	incoming map[p2p.PeerID]*incomingFile
	outgoing map[p2p.PeerID]*outgoingFile
	echoes   map[p2p.PeerID]*echoCount // --ping: echoes received per send type
	failures map[p2p.PeerID]p2p.SessionError
}

func startPeer(ctx context.Context, cfg p2p.Config, con *console, recvDir string, echo bool) (*peer, error) {
	n, err := p2p.New(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &peer{node: n, con: con, recvDir: recvDir, echo: echo, ctx: ctx, cancel: cancel,
		pings: map[uint64]time.Time{}, incoming: map[p2p.PeerID]*incomingFile{},
		outgoing: map[p2p.PeerID]*outgoingFile{}, echoes: map[p2p.PeerID]*echoCount{},
		failures: map[p2p.PeerID]p2p.SessionError{}}
	channels := []int{chChat, chPing, chFile}
	for t := range 4 {
		channels = append(channels, chTypes+t)
	}
	for _, ch := range channels {
		p.wg.Go(func() { p.readLoop(ctx, ch) })
	}
	p.wg.Go(func() { p.eventLoop(ctx) })
	return p, nil
}

// awaitRegistered waits for the node's registration (limit 0: no limit
// but ctx) and reports it.
func (p *peer) awaitRegistered(ctx context.Context, limit time.Duration) bool {
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !p.node.Registered() {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// natReport waits, up to natReportWait, for the node's NAT tests and its
// port mapping attempt to end, and returns what it knows then.
func (p *peer) natReport(ctx context.Context) p2p.NATReport {
	ctx, cancel := context.WithTimeout(ctx, natReportWait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		r := p.node.NATType()
		if (r.Type != p2p.NATTypeUnknown && r.PortMapTried) || ctx.Err() != nil {
			return r
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// natReportWait bounds how long the peer waits to print its NAT type: the
// filtering test takes up to 5 s against a filtering NAT, port mapping as
// long when the router does not answer.
const natReportWait = 6 * time.Second

func (p *peer) close() {
	p.cancel()
	p.sends.Wait()
	p.wg.Wait()
	p.node.Close()
}

func (p *peer) readLoop(ctx context.Context, ch int) {
	for {
		pkt, err := p.node.Receive(ctx, ch)
		if err != nil {
			return
		}
		p.handle(pkt)
	}
}

func (p *peer) handle(pkt p2p.Packet) {
	switch {
	case pkt.Channel == chChat:
		if p.echo {
			p.node.SendP2PPacket(pkt.From, pkt.Data, p2p.SendReliable, chChat)
			return
		}
		p.con.println("%s: %s", short(pkt.From), pkt.Data)
	case pkt.Channel == chPing:
		p.handlePing(pkt)
	case pkt.Channel == chFile:
		p.handleFile(pkt)
	case pkt.Channel >= chTypes && pkt.Channel < chTypes+4:
		t := p2p.SendType(pkt.Channel - chTypes)
		if p.echo {
			p.node.SendP2PPacket(pkt.From, pkt.Data, t, pkt.Channel)
			return
		}
		p.countEcho(pkt.From, t, pkt.Data)
	}
}

func (p *peer) eventLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-p.node.Events():
			if !ok {
				return // the node closed
			}
			p.onEvent(ev)
		}
	}
}

func (p *peer) onEvent(ev p2p.Event) {
	switch e := ev.(type) {
	case p2p.SessionRequest:
		p.node.AcceptP2PSessionWithUser(e.Peer)
		p.con.println("session request from %s: accepted", e.Peer)
	case p2p.SessionConnectFail:
		p.mu.Lock()
		p.failures[e.Peer] = e.Error
		p.mu.Unlock()
		p.con.println("session with %s failed: %v", short(e.Peer), e.Error)
	case p2p.SessionClosed:
		p.con.println("session with %s closed", short(e.Peer))
	case p2p.PathChanged:
		p.con.println("path to %s: %v via %v", short(e.Peer), e.Path, e.Remote)
	case p2p.RegistrationChanged:
		switch {
		case e.Registered:
			p.con.println("registered with the server")
		case e.Err != nil:
			p.con.println("not registered: %v", e.Err)
		default:
			p.con.println("registration lost: registering again")
		}
	}
}

// interactive runs the command loop until stdin ends, /quit or ctx ends.
func (p *peer) interactive(ctx context.Context, stdin io.Reader) error {
	lines := make(chan string)
	go func() { // ends with stdin; a blocked read cannot be interrupted
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			p.refreshStatus()
		case line, ok := <-lines:
			if !ok {
				p.waitTransfers(ctx)
				return nil
			}
			if quit := p.command(ctx, strings.TrimSpace(line)); quit {
				return nil
			}
		}
	}
}

// command runs one input line; it reports /quit.
func (p *peer) command(ctx context.Context, line string) bool {
	cmd, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	switch {
	case line == "":
	case cmd == "/quit":
		return true
	case cmd == "/connect":
		id, err := p2p.ParsePeerID(arg)
		if err != nil {
			p.con.println("/connect: %v", err)
			return false
		}
		p.mu.Lock()
		p.current, p.hasPeer = id, true
		delete(p.failures, id)
		p.mu.Unlock()
		p.send([]byte("(joined)"), p2p.SendReliable, chChat)
		p.con.println("connecting to %s", id)
	case cmd == "/ping":
		p.ping()
	case cmd == "/send":
		to, ok := p.target()
		if !ok {
			return false
		}
		p.sends.Go(func() {
			if err := p.sendFile(p.ctx, to, arg); err != nil {
				p.con.println("/send: %v", err)
			}
		})
	case cmd == "/state":
		p.printState()
	case strings.HasPrefix(cmd, "/"):
		p.con.println("unknown command %s (try /connect, /ping, /send, /state, /quit)", cmd)
	default:
		p.send([]byte(line), p2p.SendReliable, chChat)
	}
	return false
}

// target is the current peer; it says so when there is none.
func (p *peer) target() (p2p.PeerID, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.hasPeer {
		p.con.println("no peer yet: /connect ID first")
	}
	return p.current, p.hasPeer
}

func (p *peer) send(b []byte, t p2p.SendType, ch int) {
	to, ok := p.target()
	if !ok {
		return
	}
	if err := p.node.SendP2PPacket(to, b, t, ch); err != nil {
		p.con.println("send: %v", err)
	}
}

func (p *peer) printState() {
	to, ok := p.target()
	if !ok {
		return
	}
	st, _ := p.node.GetP2PSessionState(to)
	p.con.println("state of %s: active %v, connecting %v, error %v, path %v via %v, relay %v",
		short(to), st.ConnectionActive, st.Connecting, st.SessionError, st.Path, st.RemoteAddr, st.UsingRelay)
	p.con.println("  rtt %v (min %v), jitter %v, loss %.1f %%, send %s/s, receive %s/s, queued %d packets %s",
		st.SmoothedRTT.Round(time.Microsecond), st.MinRTT.Round(time.Microsecond), st.Jitter.Round(time.Microsecond),
		st.LossPercent, fmtBytes(st.SendRate), fmtBytes(st.ReceiveRate), st.PacketsQueuedForSend, fmtBytes(float64(st.BytesQueuedForSend)))
}

// refreshStatus redraws the status line (terminals only).
func (p *peer) refreshStatus() {
	if !p.con.tty {
		return
	}
	p.mu.Lock()
	to, ok := p.current, p.hasPeer
	p.mu.Unlock()
	if !ok {
		return
	}
	st, _ := p.node.GetP2PSessionState(to)
	p.con.setStatus(statusOf(to, st))
}

func statusOf(to p2p.PeerID, st p2p.SessionState) string {
	switch {
	case st.ConnectionActive:
		return fmt.Sprintf("[%s %v %v rtt %v loss %.1f%% ↑%s/s ↓%s/s]", short(to), st.Path, st.RemoteAddr,
			st.SmoothedRTT.Round(100*time.Microsecond), st.LossPercent, fmtBytes(st.SendRate), fmtBytes(st.ReceiveRate))
	case st.Connecting:
		return fmt.Sprintf("[%s connecting]", short(to))
	}
	return fmt.Sprintf("[%s not connected: %v]", short(to), st.SessionError)
}

// short abbreviates a PeerID for chat lines.
func short(id p2p.PeerID) string { return id.String()[:8] }

// console serialises output lines; on a terminal it keeps a status line
// at the bottom, cleared before each line and drawn again after it.
type console struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	tty    bool
	status string
}

func newConsole(w io.Writer, prefix string) *console {
	c := &console{w: w, prefix: prefix}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			c.tty = true
		}
	}
	return c
}

func (c *console) println(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status != "" {
		io.WriteString(c.w, "\r\033[K")
	}
	fmt.Fprintf(c.w, c.prefix+format+"\n", args...)
	if c.status != "" {
		io.WriteString(c.w, c.status)
	}
}

func (c *console) setStatus(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status = s
	io.WriteString(c.w, "\r\033[K"+s)
}
