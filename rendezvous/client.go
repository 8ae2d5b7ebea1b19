package rendezvous

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Client timing.
const (
	DefaultRefresh  = 20 * time.Second // under Linux conntrack's 30 s UDP timeout
	retryFirst      = 250 * time.Millisecond
	retryMax        = 2 * time.Second
	registeredGrace = 3 // refreshes missed before the client counts itself unregistered
	// introSilence: a registered client with introductions pending that
	// has heard nothing from the server for this long registers again at
	// once. A server that restarted forgot it and drops its INTRODUCEs
	// unanswered; without this it would learn so only at its next refresh.
	introSilence = 5 * time.Second
	// unreachableAfter: trying this long with no answer at all makes
	// Status report ErrUnreachable (the first registration takes two round
	// trips, retried from 250 ms).
	unreachableAfter = 3 * time.Second
)

// ClientConfig configures a Client.
type ClientConfig struct {
	Server netip.AddrPort
	// ServerKey pins the server's public key; nil trusts the key of the
	// first challenge (trust on first use).
	ServerKey *Key
	Private   [32]byte // the client's X25519 key (its identity)
	Public    Key      // its PeerID
	// Send writes a datagram to the server from the client's socket (the
	// one peers will reach it on).
	Send func(b []byte, to netip.AddrPort)
	// Candidates returns the host addresses to advertise; Mapping what the
	// client knows of its NAT's mapping. Either may be nil.
	Candidates func() []netip.AddrPort
	Mapping    func() Mapping
	// RelayAllowed says whether the client allows relay (and so asks for
	// TURN credentials); Relay returns its relayed address, if any. Either
	// may be nil. Candidates, Mapping, RelayAllowed and Relay are called
	// with no lock of the client held, so they may take the node's locks
	// and the node may call the client while holding them.
	RelayAllowed func() bool
	Relay        func() netip.AddrPort
	// OnPeer is called for an introduction; OnUnknown when the target of
	// an introduction is not registered; OnRegistered when a registration
	// is confirmed. They run on the goroutine that called Handle, with no
	// lock of the client held, and must not block.
	OnPeer       func(*Peer)
	OnUnknown    func(target Key)
	OnRegistered func(observed netip.AddrPort)
	// OnAsk is called when another peer asks the server to be introduced
	// to this client (an ASK with a valid MAC from our server): the
	// asker's PeerID, the address the server registered it at and the NAT
	// mapping it registered with. The
	// server tells neither peer anything of the other until both asked: to
	// consent, call Introduce(asker, now), and both sides get OnPeer at the
	// same moment. To refuse, do nothing: the asker's attempt goes
	// unanswered and times out, as an unanswered Steam session request
	// does. Nil refuses every ask. It runs as the callbacks above do (on
	// the goroutine that called Handle, no lock held, must not block;
	// calling Introduce from it is fine).
	OnAsk func(*Ask)
	// OnTURN is called with the TURN servers and credentials a
	// registration brought. Unspecified server IPs are replaced by the
	// rendezvous server's.
	OnTURN func(*TURN)
	// Refresh is the registration interval. Zero means 20 s.
	Refresh time.Duration
	Logger  *slog.Logger
}

// Client registers a node at a rendezvous server and asks it for
// introductions. It does no I/O of its own: the node feeds it the server's
// datagrams (Handle) and its clock (Tick). Safe for concurrent use.
type Client struct {
	cfg ClientConfig

	mu         sync.Mutex // guards the fields below
	serverKey  *Key
	key        *sessionKey
	cookie     [cookieLen]byte
	registered bool
	trying     time.Time // the first REGISTER since the client was last registered
	heard      bool      // the server answered since then
	keyErr     bool      // a CHALLENGE with a key other than the pinned one came since then
	observed   netip.AddrPort
	lastOK     time.Time // last registration confirmed
	lastMsg    time.Time // last authenticated message from the server
	recheck    bool      // registering again after introSilence: intros go again once confirmed
	recheckAt  time.Time // the last such registration: at most one a refresh interval
	refresh    time.Duration
	nextReg    time.Time
	regRetry   time.Duration
	lastTS     uint64
	// awaitTS is the timestamp of the last REGISTER with news
	// (Reregister) while registered, until a REGISTERED at least as new
	// confirms it: until then it goes again at regRetry, since a dropped
	// one (the server's per-IP rate, loss) would otherwise leave the
	// server with stale candidates until the next refresh.
	awaitTS uint64
	intros  map[Key]*pendingIntro
	closed  bool
}

type pendingIntro struct {
	next     time.Time
	interval time.Duration
}

// NewClient returns a client; it sends its first registration at the first
// Tick.
func NewClient(cfg ClientConfig) *Client {
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, serverKey: cfg.ServerKey, regRetry: retryFirst, refresh: cfg.Refresh, intros: make(map[Key]*pendingIntro)}
	if cfg.ServerKey != nil {
		c.deriveLocked(*cfg.ServerKey)
	}
	return c
}

func (c *Client) deriveLocked(server Key) {
	k, err := deriveKey(c.cfg.Private, server, c.cfg.Public, server)
	if err != nil {
		c.cfg.Logger.Warn("rendezvous: unusable server key", "err", err)
		return
	}
	c.key = &k
}

// timestampLocked returns a time stamp greater than any before.
func (c *Client) timestampLocked(now time.Time) uint64 {
	c.lastTS = max(uint64(now.UnixNano()), c.lastTS+1)
	return c.lastTS
}

// Server returns the server's address.
func (c *Client) Server() netip.AddrPort { return c.cfg.Server }

// Registered returns the address the server sees this client at.
func (c *Client) Registered() (netip.AddrPort, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.observed, c.registered
}

// Status reports whether the client is registered and, when it is not,
// why if it knows: ErrServerKey, or ErrUnreachable after trying for a
// while with no answer; nil while it is still trying.
func (c *Client) Status(now time.Time) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.registered:
		return true, nil
	case c.keyErr:
		return false, ErrServerKey
	case !c.heard && !c.trying.IsZero() && now.Sub(c.trying) >= unreachableAfter:
		return false, ErrUnreachable
	}
	return false, nil
}

// Close stops the client's sends.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

// Introduce asks for an introduction to target, retried at each Tick until
// the server answers (OnPeer or OnUnknown) or Cancel is called. The server
// answers with OnPeer only once target consents, by introducing itself to
// this client in turn (see ClientConfig.OnAsk); until then target is asked
// (at most once a second) and this client hears nothing, so the caller
// bounds the attempt with its own timeout and Cancel. Calling Introduce
// for a peer that asked (OnAsk) is how a client consents.
func (c *Client) Introduce(target Key, now time.Time) {
	c.mu.Lock()
	c.intros[target] = &pendingIntro{next: now, interval: retryFirst}
	b := c.sendIntroLocked(target, now)
	c.mu.Unlock()
	c.send(b)
}

// Cancel stops asking for an introduction to target.
func (c *Client) Cancel(target Key) {
	c.mu.Lock()
	delete(c.intros, target)
	c.mu.Unlock()
}

// Reregister registers again now, e.g. when the path to peers looks broken
// and the node's public address may have changed.
func (c *Client) Reregister(now time.Time) {
	news := c.news()
	c.mu.Lock()
	c.nextReg = now
	c.regRetry = retryFirst
	b := c.registerLocked(now, news)
	if c.registered {
		c.awaitLocked(now)
	}
	c.mu.Unlock()
	c.send(b)
}

// awaitLocked waits for the REGISTER just built to be confirmed, sending
// it again at regRetry, doubling, until it is.
func (c *Client) awaitLocked(now time.Time) {
	c.awaitTS = c.lastTS
	c.nextReg = now.Add(c.regRetry)
	c.regRetry = min(2*c.regRetry, retryMax)
}

// Confirmed reports whether the server has confirmed the client's latest
// news (the last Reregister while registered); false while it is being
// sent again, or while the client is not registered.
func (c *Client) Confirmed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.registered && c.awaitTS == 0
}

// Tick sends what is due: registrations (until confirmed, then every
// Refresh) and introduction retries.
func (c *Client) Tick(now time.Time) {
	var out [][]byte
	c.mu.Lock()
	due := !now.Before(c.nextReg) || c.silentLocked(now)
	c.mu.Unlock()
	var news Register
	if due {
		news = c.news()
	}
	c.mu.Lock()
	if c.registered && now.Sub(c.lastOK) > registeredGrace*c.refresh {
		c.registered = false // the server has surely forgotten us
		c.trying, c.heard, c.keyErr = time.Time{}, false, false
	}
	if c.silentLocked(now) {
		c.recheck, c.recheckAt, c.nextReg = true, now, now
	}
	if due && !now.Before(c.nextReg) {
		out = append(out, c.registerLocked(now, news))
		if c.registered && c.awaitTS != 0 {
			c.awaitLocked(now)
		}
	}
	for target, p := range c.intros {
		if !now.Before(p.next) {
			out = append(out, c.sendIntroLocked(target, now))
		}
	}
	c.mu.Unlock()
	for _, b := range out {
		c.send(b)
	}
}

// silentLocked reports a registered client waiting for introductions that
// has heard nothing from the server for introSilence, and has not checked
// so within a refresh interval: a target that takes its time to consent
// costs the server one extra registration, not one every introSilence.
func (c *Client) silentLocked(now time.Time) bool {
	return c.registered && !c.recheck && len(c.intros) > 0 && now.Sub(c.lastMsg) >= introSilence &&
		(c.recheckAt.IsZero() || now.Sub(c.recheckAt) >= c.refresh)
}

func (c *Client) send(b []byte) {
	if b != nil {
		c.cfg.Send(b, c.cfg.Server)
	}
}

// news asks the node what a REGISTER says of it (ClientConfig's
// Candidates, Mapping, RelayAllowed and Relay), with no lock of the client
// held: the node's callbacks take its own locks, which may be held while
// it calls the client.
func (c *Client) news() Register {
	var r Register
	if c.cfg.Candidates != nil {
		r.Candidates = c.cfg.Candidates()
	}
	if c.cfg.Mapping != nil {
		r.Mapping = c.cfg.Mapping()
	}
	if c.cfg.RelayAllowed != nil {
		r.RelayAllowed = c.cfg.RelayAllowed()
	}
	if c.cfg.Relay != nil {
		r.Relay = c.cfg.Relay()
	}
	return r
}

// registerLocked builds a REGISTER from news and schedules the next one.
func (c *Client) registerLocked(now time.Time, news Register) []byte {
	if c.closed {
		return nil
	}
	if c.registered {
		c.nextReg = now.Add(c.refresh)
	} else {
		c.nextReg = now.Add(c.regRetry)
		c.regRetry = min(2*c.regRetry, retryMax)
		if c.trying.IsZero() {
			c.trying = now
		}
	}
	r := news
	r.Peer, r.Timestamp, r.Cookie = c.cfg.Public, c.timestampLocked(now), c.cookie
	return r.encode(c.key)
}

func (c *Client) sendIntroLocked(target Key, now time.Time) []byte {
	p := c.intros[target]
	if p == nil || c.closed || !c.registered || c.key == nil {
		return nil // sent once registered
	}
	p.next = now.Add(p.interval)
	p.interval = min(2*p.interval, retryMax)
	m := Introduce{Peer: c.cfg.Public, Target: target, Timestamp: c.timestampLocked(now)}
	return m.encode(c.key)
}

// Handle processes a datagram from the server; it reports whether it was a
// rendezvous message (handled or dropped).
func (c *Client) Handle(b []byte, from netip.AddrPort) bool {
	if !IsRendezvous(b) {
		return false
	}
	if from != c.cfg.Server {
		return true // not from our server: dropped
	}
	switch b[0] {
	case typeChallenge:
		c.handleChallenge(b, time.Now())
	case typeRegistered:
		c.handleRegistered(b, time.Now())
	case typePeer:
		c.handlePeer(b)
	case typeUnknown:
		c.handleUnknown(b)
	case typeAsk:
		c.handleAsk(b)
	}
	return true
}

func (c *Client) handleChallenge(b []byte, now time.Time) {
	cookie, server, ok := decodeChallenge(b)
	if !ok {
		return
	}
	news := c.news()
	c.mu.Lock()
	if c.serverKey != nil && *c.serverKey != server {
		c.keyErr = true
		c.mu.Unlock()
		c.cfg.Logger.Warn("rendezvous: the server's key is not the one pinned")
		return
	}
	if c.serverKey == nil {
		c.serverKey = &server
		c.deriveLocked(server)
	}
	c.heard = true
	c.cookie = cookie
	out := c.registerLocked(now, news) // at once, with the cookie
	c.mu.Unlock()
	c.send(out)
}

func (c *Client) handleRegistered(b []byte, now time.Time) {
	c.mu.Lock()
	if c.key == nil {
		c.mu.Unlock()
		return
	}
	r, ok := decodeRegistered(b, c.key)
	if !ok {
		c.mu.Unlock()
		return
	}
	first := !c.registered || c.recheck
	c.registered, c.observed, c.lastOK, c.lastMsg, c.recheck = true, r.Observed, now, now, false
	c.trying, c.heard, c.keyErr = time.Time{}, true, false
	// Refresh well within the server's TTL, whatever this client assumed.
	c.refresh = min(c.cfg.Refresh, max(time.Duration(r.TTL)*time.Second/3, retryFirst))
	if r.Timestamp >= c.awaitTS { // else an older REGISTER's answer: the news is still unconfirmed
		c.awaitTS = 0
		c.regRetry = retryFirst
		c.nextReg = now.Add(c.refresh)
	}
	// Introductions waiting for the registration go now.
	var out [][]byte
	if first {
		for target := range c.intros {
			out = append(out, c.sendIntroLocked(target, now))
		}
	}
	cb, onTURN := c.cfg.OnRegistered, c.cfg.OnTURN
	c.mu.Unlock()
	for _, b := range out {
		c.send(b)
	}
	if cb != nil {
		cb(r.Observed)
	}
	if r.TURN != nil && onTURN != nil {
		for i, srv := range r.TURN.Servers {
			if srv.Addr.Addr().IsUnspecified() {
				r.TURN.Servers[i].Addr = netip.AddrPortFrom(c.cfg.Server.Addr(), srv.Addr.Port())
			}
		}
		onTURN(r.TURN)
	}
}

func (c *Client) handlePeer(b []byte) {
	c.mu.Lock()
	if c.key == nil {
		c.mu.Unlock()
		return
	}
	p, ok := decodePeer(b, c.key)
	if ok {
		c.lastMsg = time.Now()
	}
	if ok && !p.Pushed {
		delete(c.intros, p.About)
	}
	cb := c.cfg.OnPeer
	c.mu.Unlock()
	if ok && cb != nil {
		cb(p)
	}
}

func (c *Client) handleUnknown(b []byte) {
	c.mu.Lock()
	if c.key == nil {
		c.mu.Unlock()
		return
	}
	u, ok := decodeUnknown(b, c.key)
	if !ok {
		c.mu.Unlock()
		return
	}
	c.lastMsg = time.Now()
	_, waiting := c.intros[u.Target]
	delete(c.intros, u.Target)
	cb := c.cfg.OnUnknown
	c.mu.Unlock()
	if waiting && cb != nil {
		cb(u.Target)
	}
}

func (c *Client) handleAsk(b []byte) {
	c.mu.Lock()
	if c.key == nil {
		c.mu.Unlock()
		return
	}
	a, ok := decodeAsk(b, c.key)
	if ok {
		c.lastMsg = time.Now()
	}
	cb := c.cfg.OnAsk
	c.mu.Unlock()
	if ok && cb != nil {
		cb(a)
	}
}
