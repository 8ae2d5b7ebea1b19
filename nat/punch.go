package nat

import (
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	mathrand "math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// Socket is where probes leave from: the node's socket, or one a punch
// opened for the birthday approach.
type Socket interface {
	WriteTo(b []byte, to netip.AddrPort) error
	Close() error
}

// TTLSocket is a Socket that can send one datagram with a small TTL (hop
// limit), which primes this side's NAT (see Punch). A Socket without it
// is not primed: its first checks go out at once, at full TTL. One whose
// WriteToTTL fails sends no primer, and its first check still waits
// PrimeWait.
type TTLSocket interface {
	Socket
	WriteToTTL(b []byte, to netip.AddrPort, ttl int) error
}

// primeTTLs are the TTLs of a primer: 2 passes a NAT on the first hop,
// 3 a carrier NAT behind it as well, and either dies within the next
// routers, before the peer's NAT. A NAT that accepts datagrams to its own
// address (Linux masquerade without an input filter, OpenWrt) would
// otherwise let a check of the peer's that arrives before this side's
// first datagram left make a conntrack entry that moves this side's
// mapping toward the peer (the conntrack clash), for as long as retries
// keep it alive.
var primeTTLs = [...]int{2, 3}

// PrimeWait is how long the first check to a primed address waits after
// the primers: long enough for the peer, introduced at the same moment, to
// have primed its own NAT. Whatever else the owner sends to such an
// address early (a speculative handshake) waits as long.
const PrimeWait = 5 * time.Millisecond

// Punch timing and bounds.
const (
	punchPace  = 20 * time.Millisecond // one probe per pace, RFC 8445's Ta is 50 ms
	retryFast  = 200 * time.Millisecond
	firstRound = 8                     // candidates checked at once when they arrive
	firstRetry = 25 * time.Millisecond // then 50 and 100 ms, then retryFast
	// triggerGap paces the checks the peer's probes trigger, per address:
	// without it two sides answering each other's probes on a pair that is
	// not the best would probe each other as fast as the network goes.
	triggerGap     = firstRetry
	quickRetries   = 3
	retrySlow      = time.Second
	fastFor        = 3 * time.Second
	maxRemote      = 24 // candidates and learnt addresses per punch
	txLife         = 5 * time.Second
	birthdayDelay  = 400 * time.Millisecond // ordinary checks first: they win whenever they can
	birthdaySocks  = 256                    // mappings the hard side opens (docs/ARCHITECTURE.md, "NAT traversal and the relay")
	sprayPerSecond = 500                    // probes from the easy side
	sprayMax       = 4096                   // about 8 s; 2048 random ones give 99.97 % against 256 mappings
	predictWindow  = 1024                   // ports above the peer's public port tried in order
	sockResend     = 2 * time.Second        // the hard side refreshes its mappings
	// stallAfter: the peer's public addresses unanswered this long after
	// the first check, behind an endpoint-independent NAT, look like the
	// conntrack clash (OnStall).
	stallAfter = 250 * time.Millisecond
	// staleQuiet is how long the pairs a stall suspends stay quiet: past
	// the 30 s (60 s on OpenWrt) a NAT keeps an unreplied UDP entry, so
	// the stale entries expire instead of being refreshed.
	staleQuiet = 65 * time.Second
	// maxHeals bounds the stalls reported; healAgain spaces them (doubling,
	// plus up to half of it at random). A heal is itself a race: if the
	// peer's checks reach our NAT before the fresh port primed it (a busy
	// machine, both sides healing at once), the fresh mapping clashes too,
	// and only another fresh port gets past it. The random part keeps two
	// sides that stalled together from healing in step again.
	maxHeals  = 3
	healAgain = time.Second
	// freshWait holds a fresh socket's first checks past the introduction
	// that tells the peer of its mapping. The socket primed our NAT when it
	// opened, long before; the peer's NAT is primed toward it only once
	// the peer has that introduction, which may be late (farther from the
	// server, or a busy machine). A check of ours that reaches the peer's
	// NAT first makes the clash again, so the peer's check, which gets
	// through our primed NAT and is answered, goes first.
	freshWait = 200 * time.Millisecond
)

// PunchConfig configures a Punch.
type PunchConfig struct {
	Local, Peer [32]byte // the PeerIDs
	Key         ProbeKey
	Main        Socket
	// OpenSocket opens an extra socket for the birthday approach when this
	// side's NAT maps per destination and the peer's does not; nil turns
	// that off. The owner reads the sockets it opens and passes their
	// probes to HandleProbe.
	OpenSocket func() (Socket, error)
	// LocalPrefixes are the node's interface prefixes, to rank the peer's
	// host candidates (same subnet first).
	LocalPrefixes []netip.Prefix
	LocalMapping  Mapping
	PeerMapping   Mapping
	Candidates    []Candidate // the peer's
	// Hold primes the candidates but holds their checks until the first
	// AddCandidates (the introduction): the responder's punch, started
	// when it consents, a round trip before the asker hears of it, must
	// not reach the asker's NAT before the asker has primed it.
	Hold bool
	// LocalPublic is this side's public IP (its server-reflexive
	// address's), if known: the peer's addresses there sit behind this
	// side's own NAT (hairpinning), and are checked at once, unprimed.
	LocalPublic netip.Addr
	// HealDependent lets a stall be reported against a peer whose NAT
	// maps per destination too: this side's NAT filters by address only
	// (or not at all), so a fresh mapping primed toward the peer's address
	// takes its checks from whatever port they leave by.
	HealDependent bool
	// OnStall, if set, is called once, on the punch's goroutine, when both
	// NATs map endpoint-independently (or the peer's per destination, with
	// HealDependent) and the peer's public addresses have gone unanswered
	// for stallAfter, with no path found: most likely a conntrack clash
	// moved a mapping. The owner heals it with AddSocket. The pairs that
	// stalled are left quiet for staleQuiet so the stale entries expire.
	OnStall func()
	// OnPath is called with each validated path better than the last, on
	// the goroutine of the HandleProbe call that validated it, with no lock
	// of the punch held.
	OnPath func(Path)
	Logger *slog.Logger
}

// Path is a validated path: probes went to Remote from Socket and the
// peer's ack came back.
type Path struct {
	Remote   netip.AddrPort
	Socket   Socket
	Kind     Kind
	Priority int
	RTT      time.Duration
	// Birthday: the birthday approach or port prediction found the path
	// (a spray probe or one of the hard side's extra sockets).
	Birthday bool
}

// PunchStats counts what a punch has sent.
type PunchStats struct {
	Checks  int  // connectivity checks sent, spray and birthday sockets included
	Primers int  // low-TTL datagrams sent to prime this side's NAT
	Stalled bool // OnStall was called
	Heals   int  // OnStall calls (at most maxHeals)
	Sprayed int  // the easy side's probes to predicted and random ports
	Sockets int  // extra sockets the hard side opened
}

// Punch runs the connectivity checks toward one peer: paced, best
// candidates first, answering and learning from the peer's probes, and, for
// an endpoint-dependent NAT against an endpoint-independent one, the
// birthday approach. Safe for concurrent use. One goroutine, until Stop.
type Punch struct {
	// cfg is immutable after StartPunch, but for cfg.PeerMapping, which
	// SetPeerMapping sets under mu and is read under mu only.
	cfg  PunchConfig
	done chan struct{} // closed by Stop
	wg   sync.WaitGroup

	mu      sync.Mutex // guards the fields below; every read and write holds it
	start   time.Time
	remotes []*remote
	txs     map[[12]byte]*tx
	best    *Path
	extra   []Socket        // birthday sockets
	fresh   []Socket        // AddSocket's
	kept    map[Socket]bool // extra and fresh sockets Stop leaves open: adopted (a path on them) or Keep
	sprayed int
	// sprayedTo marks the ports sprayed at the peer's public address (a
	// bitmap, made on the first spray): a probe from one of them came
	// through a hole the spray opened.
	sprayedTo *[65536 / 64]uint64
	checks    int
	primers   int
	lastSock  time.Time
	// firstOut is when the first check to a public address of the peer's
	// left.
	firstOut  time.Time
	heals     int       // OnStall calls
	nextStall time.Time // when another stall may be reported (heals > 0)
	// firstTimer sends the first checks PrimeWait after a priming.
	firstTimer *time.Timer
	// stopped: Stop has begun. No tick runs after it, and no birthday
	// socket that is not kept is adopted after it: Stop closes those.
	stopped bool
}

type remote struct {
	cand     Candidate
	sock     Socket // nil: the main socket
	priority int
	next     time.Time
	tries    int  // checks sent to it
	spray    bool // a guessed port of the birthday approach
	// waiting: primed, its first check not sent yet; held: and that waits
	// for the next AddCandidates.
	waiting, held bool
	// answerFirst: a fresh socket's pair (AddSocket), whose first check
	// waits freshWait after the release for the peer's own.
	answerFirst bool
	// triggered: the last check the peer's probe from there triggered.
	triggered time.Time
}

type tx struct {
	r      *remote
	sentAt time.Time
}

// StartPunch starts checks toward the peer's candidates.
func StartPunch(cfg PunchConfig) *Punch {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Punch{cfg: cfg, done: make(chan struct{}), start: time.Now(), txs: map[[12]byte]*tx{}, kept: map[Socket]bool{}}
	p.addCandidates(cfg.Candidates, cfg.Hold, false)
	p.wg.Add(1)
	go p.run()
	return p
}

// AddCandidates adds addresses to check, e.g. from a new introduction,
// and checks the new ones at once: the peer, introduced at the same
// moment, is checking ours, and a NAT lets its checks in only once ours
// have gone out. Pacing applies to retries; a first round of at most
// firstRound small datagrams is no load on any link.
//
// An address that may sit behind the peer's NAT (not a private, loopback
// or link-local one) is primed first: primers with primeTTLs open this
// side's NAT toward it, and its first check follows PrimeWait later. The
// call also releases the checks that Hold or AddSocket held.
func (p *Punch) AddCandidates(cs []Candidate) { p.addCandidates(cs, false, true) }

func (p *Punch) addCandidates(cs []Candidate, hold, release bool) {
	now := time.Now()
	p.mu.Lock()
	var out []send
	if release {
		p.releaseLocked()
	}
	round := 0
	for _, c := range cs {
		known := len(p.remotes)
		r := p.addRemoteLocked(c, nil)
		if r == nil || len(p.remotes) == known || round >= firstRound {
			continue // not new, or the first round is full
		}
		round++
		if primers := p.primeLocked(r, hold, now); primers != nil {
			out = append(out, primers...)
			continue
		}
		r.next = now.Add(p.retryLocked(r, now))
		out = append(out, p.probeLocked(r, r.cand.Addr, now))
	}
	stopped := p.stopped
	p.mu.Unlock()
	if !stopped {
		p.flush(out)
	}
}

// MayBeNATed reports whether a remote address may be a peer NAT's (not a
// private, loopback, link-local or carrier-grade NAT one): only those need
// priming against.
func MayBeNATed(a netip.Addr) bool {
	a = a.Unmap()
	return !(a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || cgnat.Contains(a))
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// primeLocked primes this side's NAT toward r, if r's address needs it and
// its socket can send low-TTL datagrams, and schedules r's first check
// (held: at the next release). It returns nil if r is not primed.
func (p *Punch) primeLocked(r *remote, hold bool, now time.Time) []send {
	if a := r.cand.Addr.Addr(); !MayBeNATed(a) || a == p.cfg.LocalPublic {
		return nil
	}
	if _, ok := p.sockOf(r).(TTLSocket); !ok {
		return nil
	}
	out := p.primersLocked(r, now)
	r.waiting, r.held = true, hold
	r.next = now.Add(time.Hour) // dueLocked leaves waiting remotes alone
	if !hold {
		p.scheduleFirstLocked()
	}
	return out
}

// primersLocked builds r's primers: probes, so one that does arrive is
// answered like any check.
func (p *Punch) primersLocked(r *remote, now time.Time) []send {
	out := make([]send, 0, len(primeTTLs))
	for _, ttl := range primeTTLs {
		s := p.newProbeLocked(r, r.cand.Addr, now)
		s.ttl = ttl
		p.primers++
		out = append(out, s)
	}
	return out
}

// releaseLocked lets held remotes' first checks go PrimeWait from now.
func (p *Punch) releaseLocked() {
	held := false
	for _, r := range p.remotes {
		if r.held {
			r.held, held = false, true
		}
	}
	if held {
		p.scheduleFirstLocked()
	}
}

// scheduleFirstLocked arms the timer that sends the waiting first checks.
func (p *Punch) scheduleFirstLocked() {
	if p.stopped {
		return
	}
	if p.firstTimer == nil {
		p.firstTimer = time.AfterFunc(PrimeWait, p.firstChecks)
		return
	}
	p.firstTimer.Reset(PrimeWait)
}

// firstChecks sends the first check to each primed remote not held.
func (p *Punch) firstChecks() {
	now := time.Now()
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	var out []send
	for _, r := range p.remotes {
		if !r.waiting || r.held {
			continue
		}
		r.waiting = false
		if r.answerFirst {
			r.next = now.Add(freshWait)
			continue
		}
		r.next = now.Add(p.retryLocked(r, now))
		out = append(out, p.probeLocked(r, r.cand.Addr, now))
	}
	p.mu.Unlock()
	p.flush(out)
}

// AddSocket checks the peer's public addresses from sock as well, a fresh
// socket the owner opened (and reads, passing its probes to HandleProbe)
// to heal a stall: a new local port gets a new NAT mapping, which no stale
// conntrack entry clashes with. The pairs are primed now and their first
// checks held until the next AddCandidates (the introduction that tells
// the peer of the new mapping). The punch owns sock as it owns its
// birthday sockets: Stop closes it unless a path uses it. It reports false,
// leaving sock to the caller, if the punch has stopped or knows no public
// address of the peer's.
func (p *Punch) AddSocket(sock Socket) bool {
	now := time.Now()
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return false
	}
	cands := p.publicLocked()
	if len(cands) == 0 {
		p.mu.Unlock()
		return false
	}
	var out []send
	for _, c := range cands {
		r := p.addRemoteLockedAlways(c, sock) // not due: checks wait for the release
		r.answerFirst = true
		if primers := p.primeLocked(r, true, now); primers != nil {
			out = append(out, primers...)
		} else {
			r.waiting, r.held = true, true // no TTL: its checks still wait for the peer
		}
	}
	p.fresh = append(p.fresh, sock)
	p.mu.Unlock()
	p.flush(out)
	return true
}

// publicLocked lists the peer's candidates (not the spray's guesses) that
// may be behind its NAT, checked from the main socket.
func (p *Punch) publicLocked() []Candidate {
	var out []Candidate
	for _, r := range p.remotes {
		if r.sock == nil && !r.spray && MayBeNATed(r.cand.Addr.Addr()) {
			out = append(out, r.cand)
		}
	}
	return out
}

// stallLocked reports the stall OnStall describes, at most maxHeals times,
// and quiets the pairs that stalled: every pair with a public address of
// the peer's, a fresh socket's from an earlier heal too.
func (p *Punch) stallLocked(now time.Time) bool {
	peer := p.cfg.PeerMapping
	if p.heals >= maxHeals || p.cfg.OnStall == nil || p.best != nil || p.firstOut.IsZero() ||
		p.cfg.LocalMapping != MappingEndpointIndependent ||
		!(peer == MappingEndpointIndependent || (peer == MappingEndpointDependent && p.cfg.HealDependent)) {
		return false
	}
	if (p.heals == 0 && now.Sub(p.firstOut) < stallAfter) || (p.heals > 0 && now.Before(p.nextStall)) {
		return false
	}
	p.heals++
	wait := healAgain << (p.heals - 1)
	p.nextStall = now.Add(wait + mathrand.N(wait/2))
	for _, r := range p.remotes {
		if !r.spray && MayBeNATed(r.cand.Addr.Addr()) {
			r.next = now.Add(staleQuiet)
			r.waiting, r.held = false, false
		}
	}
	return true
}

// FromBirthday reports whether a path to addr over sock is one the
// birthday approach made: from one of the hard side's extra sockets, to a
// port the easy side sprayed, or, on the hard side, to the easy side's
// public address over any socket (the main one included: the easy side's
// spray found that socket's mapping too, and nothing else opens the easy
// side's NAT to it). A session can come up on such a path through the
// peer's packets before this punch validates it.
func (p *Punch) FromBirthday(addr netip.AddrPort, sock Socket) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fromBirthdayLocked(addr, sock)
}

func (p *Punch) fromBirthdayLocked(addr netip.AddrPort, sock Socket) bool {
	if len(p.extra) > 0 {
		if public, ok := p.peerPublicLocked(); ok && addr == public {
			return true
		}
		for _, s := range p.extra {
			if sock != nil && s == sock {
				return true
			}
		}
	}
	return p.sprayedLocked(addr)
}

// SetPeerMapping tells a punch started before the peer's NAT behaviour
// was known (MappingUnknown) what it is, which may start the birthday
// approach; the punch's schedule then counts from now, as if it started
// with it. A known mapping is not changed.
func (p *Punch) SetPeerMapping(m Mapping) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m == MappingUnknown || p.cfg.PeerMapping != MappingUnknown {
		return
	}
	p.cfg.PeerMapping = m
	p.start = time.Now()
}

func (p *Punch) addRemoteLocked(c Candidate, sock Socket) *remote {
	if !c.Addr.IsValid() || c.Addr.Port() == 0 {
		return nil
	}
	c.Addr = netip.AddrPortFrom(c.Addr.Addr().Unmap(), c.Addr.Port())
	for _, r := range p.remotes {
		if r.cand.Addr == c.Addr && r.sock == sock {
			return r
		}
	}
	if len(p.remotes) >= maxRemote {
		return nil
	}
	r := &remote{cand: c, sock: sock, priority: Priority(c, p.cfg.LocalPrefixes), next: time.Now()}
	p.remotes = append(p.remotes, r)
	return r
}

// Best returns the best path validated so far.
func (p *Punch) Best() (Path, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.best == nil {
		return Path{}, false
	}
	return *p.best, true
}

// KindOf reports what kind of candidate of the peer addr is: one the punch
// was given, or peer-reflexive.
func (p *Punch) KindOf(addr netip.AddrPort) Kind {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.remotes {
		if r.cand.Addr == addr && !r.spray {
			return r.cand.Kind
		}
	}
	return KindPeerRefl
}

// Stats reports what the punch has sent so far.
func (p *Punch) Stats() PunchStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PunchStats{Checks: p.checks, Primers: p.primers, Stalled: p.heals > 0, Heals: p.heals, Sprayed: p.sprayed, Sockets: len(p.extra)}
}

// Keep marks a birthday socket as adopted by the owner: Stop leaves it
// open. A Keep that returns before Stop's does is honoured.
func (p *Punch) Keep(s Socket) {
	p.mu.Lock()
	p.kept[s] = true
	p.mu.Unlock()
}

// Stop ends the checks and closes the birthday sockets not kept. Once it
// has begun, an ack arriving on a birthday socket not kept validates no
// path (the socket is being closed); every birthday socket is either
// reported by OnPath and left open, or closed.
func (p *Punch) Stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	if p.firstTimer != nil {
		p.firstTimer.Stop() // a run already started sees stopped
	}
	p.mu.Unlock()
	close(p.done)
	p.wg.Wait() // no tick opens sockets from here on
	p.mu.Lock()
	var closing []Socket
	for _, s := range append(p.extra, p.fresh...) {
		if !p.kept[s] {
			closing = append(closing, s)
		}
	}
	p.extra, p.fresh = nil, nil
	p.mu.Unlock()
	for _, s := range closing {
		s.Close()
	}
}

func (p *Punch) run() {
	defer p.wg.Done()
	t := time.NewTicker(punchPace)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case now := <-t.C:
			p.tick(now)
		}
	}
}

type send struct {
	sock Socket
	to   netip.AddrPort
	b    []byte
	ttl  int // a primer's; 0: the socket's own
}

// tick sends this pace's probes.
func (p *Punch) tick(now time.Time) {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return // Stop is waiting for this goroutine
	}
	var out []send
	if r := p.dueLocked(now); r != nil {
		out = append(out, p.probeLocked(r, r.cand.Addr, now))
	}
	out = append(out, p.birthdayLocked(now)...)
	p.pruneLocked(now)
	stalled := p.stallLocked(now)
	p.mu.Unlock()
	p.flush(out)
	if stalled {
		p.cfg.Logger.Debug("nat: public candidates unanswered; healing from a fresh port")
		p.cfg.OnStall()
	}
}

func (p *Punch) flush(out []send) {
	for _, s := range out {
		sock := s.sock
		if sock == nil {
			sock = p.cfg.Main
		}
		if s.ttl != 0 {
			if ts, ok := sock.(TTLSocket); ok {
				ts.WriteToTTL(s.b, s.to, s.ttl)
			}
			continue
		}
		sock.WriteTo(s.b, s.to)
	}
}

// dueLocked picks the best candidate whose next check is due.
func (p *Punch) dueLocked(now time.Time) *remote {
	var due *remote
	for _, r := range p.remotes {
		if r.next.After(now) {
			continue
		}
		if due == nil || r.priority > due.priority {
			due = r
		}
	}
	if due != nil {
		due.next = now.Add(p.retryLocked(due, now))
	}
	return due
}

// retryLocked counts a check to r and says when to check it again. The
// first retries come quickly: the first check to a filtering NAT is
// dropped whenever it arrives before that NAT's side has sent its own.
func (p *Punch) retryLocked(r *remote, now time.Time) time.Duration {
	r.tries++
	switch {
	case r.tries <= quickRetries:
		return firstRetry << (r.tries - 1)
	case now.Sub(p.start) > fastFor:
		return retrySlow
	}
	return retryFast
}

// probeLocked builds a check to r, at to.
func (p *Punch) probeLocked(r *remote, to netip.AddrPort, now time.Time) send {
	p.checks++
	if p.firstOut.IsZero() && r.sock == nil && !r.spray && r.cand.Kind == KindServerRefl {
		p.firstOut = now
	}
	return p.newProbeLocked(r, to, now)
}

func (p *Punch) newProbeLocked(r *remote, to netip.AddrPort, now time.Time) send {
	var id [12]byte
	rand.Read(id[:])
	p.txs[id] = &tx{r: r, sentAt: now}
	pr := Probe{Sender: p.cfg.Local, TxID: id}
	return send{sock: r.sock, to: to, b: pr.Append(nil, &p.cfg.Key)}
}

func (p *Punch) pruneLocked(now time.Time) {
	for id, t := range p.txs {
		if now.Sub(t.sentAt) > txLife {
			delete(p.txs, id)
		}
	}
}

// birthdayLocked runs the birthday approach (docs/ARCHITECTURE.md, "NAT
// traversal and the relay") once ordinary checks have had birthdayDelay to
// work: the endpoint-dependent side opens birthdaySocks mappings toward the
// peer's public address, the other side probes random ports at that
// address at sprayPerSecond. Once a path is found it stops.
func (p *Punch) birthdayLocked(now time.Time) []send {
	if p.best != nil || now.Sub(p.start) < birthdayDelay {
		return nil
	}
	target, ok := p.peerPublicLocked()
	if !ok {
		return nil
	}
	local, peer := p.cfg.LocalMapping, p.cfg.PeerMapping
	switch {
	case local == MappingEndpointDependent && peer != MappingEndpointDependent && p.cfg.OpenSocket != nil:
		return p.hardSideLocked(target, now)
	case peer == MappingEndpointDependent && local != MappingEndpointDependent:
		return p.easySideLocked(target, now)
	}
	return nil
}

// peerPublicLocked is the peer's server-reflexive address.
func (p *Punch) peerPublicLocked() (netip.AddrPort, bool) {
	for _, r := range p.remotes {
		if r.cand.Kind == KindServerRefl {
			return r.cand.Addr, true
		}
	}
	return netip.AddrPort{}, false
}

func (p *Punch) hardSideLocked(target netip.AddrPort, now time.Time) []send {
	if len(p.extra) == 0 {
		for range birthdaySocks {
			s, err := p.cfg.OpenSocket()
			if err != nil {
				p.cfg.Logger.Debug("nat: birthday socket", "err", err)
				break
			}
			p.extra = append(p.extra, s)
		}
	}
	if now.Sub(p.lastSock) < sockResend {
		return nil
	}
	p.lastSock = now
	// Primers where the sockets take them: the mappings are what the
	// easy side's spray needs, and a probe that reached its NAT first
	// would make the conntrack entry that moves its mapping toward us.
	out := make([]send, 0, len(p.extra)*len(primeTTLs))
	for _, s := range p.extra {
		r := p.addRemoteLockedAlways(Candidate{Addr: target, Kind: KindServerRefl}, s)
		if _, ok := s.(TTLSocket); ok {
			out = append(out, p.primersLocked(r, now)...)
			continue
		}
		out = append(out, p.probeLocked(r, target, now))
	}
	return out
}

// addRemoteLockedAlways records a pair for a birthday socket, past the
// usual bound: there is one per socket by design.
func (p *Punch) addRemoteLockedAlways(c Candidate, sock Socket) *remote {
	for _, r := range p.remotes {
		if r.cand.Addr == c.Addr && r.sock == sock {
			return r
		}
	}
	r := &remote{cand: c, sock: sock, priority: Priority(c, p.cfg.LocalPrefixes), next: time.Now().Add(time.Hour)}
	p.remotes = append(p.remotes, r)
	return r
}

func (p *Punch) easySideLocked(target netip.AddrPort, now time.Time) []send {
	want := min(int(now.Sub(p.start.Add(birthdayDelay)).Seconds()*sprayPerSecond), sprayMax)
	var out []send
	for p.sprayed < want {
		p.sprayed++
		port := sprayPort(target.Port(), p.sprayed)
		ip := target.Addr()
		if p.sprayedTo == nil {
			p.sprayedTo = new([65536 / 64]uint64)
		}
		p.sprayedTo[port/64] |= 1 << (port % 64)
		r := &remote{cand: Candidate{Addr: netip.AddrPortFrom(ip, port), Kind: KindPeerRefl}, next: now.Add(time.Hour), spray: true}
		out = append(out, p.probeLocked(r, r.cand.Addr, now))
	}
	return out
}

// sprayedLocked reports whether the spray went to addr: its probes
// reached us because the spray opened our NAT toward it.
func (p *Punch) sprayedLocked(addr netip.AddrPort) bool {
	target, ok := p.peerPublicLocked()
	port := addr.Port()
	return ok && p.sprayedTo != nil && addr.Addr() == target.Addr() && p.sprayedTo[port/64]&(1<<(port%64)) != 0
}

// sprayPort is the port of the easy side's nth probe: odd ones count up
// from the peer's public port (port prediction: many NATs allocate their
// ports in sequence, so the mappings toward us sit just above the one toward
// the server), even ones are random (the birthday approach, for NATs that
// allocate at random, as Linux's fully-random masquerade does).
func sprayPort(public uint16, n int) uint16 {
	if step := (n + 1) / 2; n%2 == 1 && step <= predictWindow && int(public)+step <= 65535 {
		return public + uint16(step)
	}
	return randomPort()
}

// randomPort picks from 1024–65535, where NATs allocate.
func randomPort() uint16 {
	var b [2]byte
	rand.Read(b[:])
	return 1024 + uint16(uint32(binary.BigEndian.Uint16(b[:]))*(65536-1024)>>16)
}

// HandleProbe takes a probe or ack from this punch's peer that arrived on
// sock (nil: the main socket). It reports false if b is not one (wrong
// peer, bad MAC), so the caller can count it.
func (p *Punch) HandleProbe(b []byte, from netip.AddrPort, sock Socket) bool {
	pr, ok := ParseProbe(b)
	if !ok || pr.Sender != p.cfg.Peer || !VerifyProbe(b, &p.cfg.Key) {
		return false
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if sock == p.cfg.Main {
		sock = nil
	}
	now := time.Now()
	p.mu.Lock()
	var out []send
	var found *Path
	if pr.Ack {
		found = p.ackLocked(pr, from, now)
	} else {
		ack := Probe{Ack: true, Sender: p.cfg.Local, TxID: pr.TxID, Observed: from}
		out = append(out, send{sock: sock, to: from, b: ack.Append(nil, &p.cfg.Key)})
		// A triggered check: the peer reaches us from there, so probe it
		// back that way (it may be a new, peer-reflexive address). A
		// stopped punch only answers: nothing would prune its checks.
		if r := p.addRemoteLocked(Candidate{Addr: from, Kind: KindPeerRefl}, sock); !p.stopped && r != nil && !p.validatedLocked(r) && now.Sub(r.triggered) >= triggerGap {
			r.spray = r.spray || p.sprayedLocked(from)
			r.triggered = now
			out = append(out, p.probeLocked(r, from, now))
		}
	}
	p.mu.Unlock()
	p.flush(out)
	if found != nil && p.cfg.OnPath != nil {
		p.cfg.OnPath(*found)
	}
	return true
}

func (p *Punch) validatedLocked(r *remote) bool {
	return p.best != nil && p.best.Remote == r.cand.Addr && p.best.Socket == p.sockOf(r)
}

func (p *Punch) sockOf(r *remote) Socket {
	if r.sock == nil {
		return p.cfg.Main
	}
	return r.sock
}

// ackLocked validates the pair of an ack; it returns the path if it beats
// the best so far.
func (p *Punch) ackLocked(pr Probe, from netip.AddrPort, now time.Time) *Path {
	t := p.txs[pr.TxID]
	if t == nil {
		return nil
	}
	delete(p.txs, pr.TxID)
	r := t.r
	if p.stopped && r.sock != nil && !p.kept[r.sock] {
		return nil // Stop is closing that socket
	}
	kind := r.cand.Kind
	if from != r.cand.Addr {
		kind = KindPeerRefl // the peer answers from elsewhere: that is where to send
	}
	path := &Path{Remote: from, Socket: p.sockOf(r), Kind: kind, RTT: now.Sub(t.sentAt), Birthday: r.spray || p.fromBirthdayLocked(from, r.sock)}
	path.Priority = Priority(Candidate{Addr: from, Kind: kind}, p.cfg.LocalPrefixes)
	if p.best != nil && p.best.Remote == path.Remote && p.best.Socket == path.Socket {
		// The path we have, confirmed again (say by a triggered check
		// after the spray found it): nothing new to report.
		p.best.RTT = min(p.best.RTT, path.RTT)
		return nil
	}
	if p.best != nil && (path.Priority < p.best.Priority ||
		(path.Priority == p.best.Priority && path.RTT >= p.best.RTT)) {
		return nil
	}
	p.best = path
	if r.sock != nil {
		p.kept[r.sock] = true // in use: Stop must not close it
	}
	return path
}
