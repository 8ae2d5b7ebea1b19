package path

import (
	"net/netip"
	"time"
)

// Class orders routes: a higher class is better.
type Class int

// Route classes, worst first. A TCP link ranks above the relay: it is one
// hop, costs the operator nothing, and exists only where UDP between the
// two peers fails, so a relay there rides TCP on at least one side too.
const (
	ClassRelay   Class = iota
	ClassTCP           // a direct TCP link
	ClassPublic        // UDP to a public address
	ClassPrivate       // UDP to a private or loopback address
	ClassLAN           // UDP to an address on one of our own subnets
)

// classify gives r's class; prefixes are the node's own subnets.
func classify(r *Route, prefixes []netip.Prefix) Class {
	switch r.Kind() {
	case Relay:
		return ClassRelay
	case TCP:
		return ClassTCP
	}
	a := r.Remote.Addr().Unmap()
	for _, p := range prefixes {
		if p.Contains(a) {
			return ClassLAN
		}
	}
	if a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() {
		return ClassPrivate
	}
	return ClassPublic
}

// Hysteresis of path choice.
const (
	// Settle is how long after a session is established a route of its
	// class with a better preference (a validated check beside the route
	// the handshake happened to take) still replaces it. After that a
	// same-class route needs the current one failing, or a sustained RTT
	// margin.
	Settle = 2 * time.Second
	// FailingAfter: the current route is failing once what was sent on it
	// goes unacknowledged this long past its due time; a route of the same
	// class may replace it then.
	FailingAfter = 200 * time.Millisecond
	// LostAfter: the current route is lost once the peer has been silent
	// on it this long; a worse class may replace it then.
	LostAfter = time.Second
	// MarginRatio and MarginMin: a same-class route replaces the current
	// one on RTT only when its RTT is below MarginRatio of the current
	// route's smoothed RTT and at least MarginMin less, in two
	// measurements at least Sustain apart.
	MarginRatio = 0.8
	MarginMin   = 5 * time.Millisecond
	Sustain     = time.Second
	// MinDwell: a route just moved to is not left for one of its class or
	// worse for this long. What the session reports as failing right after
	// a move (data sent on the old route still unacknowledged, stragglers
	// from it) says nothing of the new one; following it would swing the
	// session between two routes on every packet.
	MinDwell = 500 * time.Millisecond
	// MaxChangesPerMinute bounds the moves of one peer's route in any
	// minute while the current route works; a failing route can always be
	// left.
	MaxChangesPerMinute = 6
)

// Health is what the session knows of its current route when it offers
// another: the signals that allow a move.
type Health struct {
	Quiet      time.Duration // since the peer's last authenticated packet on the route
	AckOverdue time.Duration // how far past its due time the oldest unacknowledged packet is
	RTT        time.Duration // the session's smoothed RTT (0: not measured)
}

func (h Health) failing() bool { return h.AckOverdue >= FailingAfter || h.Quiet >= LostAfter }
func (h Health) lost() bool    { return h.Quiet >= LostAfter }

// Offer is a route proposed for a peer.
type Offer struct {
	Route Route
	// Pref ranks offers within a class while the session settles (the
	// connectivity check priority of a validated path; 0 otherwise).
	Pref uint32
	// RTT is what a connectivity check measured on the route (0: none).
	RTT time.Duration
	// Validated: a connectivity check proved the route.
	Validated bool
	Health    Health
}

// chooser decides one peer's route. It belongs to the table's owner
// goroutine.
type chooser struct {
	cur      *Route
	curClass Class
	curPref  uint32
	since    time.Time // the session was established (zero: not yet)
	movedAt  time.Time // the current route became current
	changes  []time.Time
	// margin: the candidate that beat the current route's RTT by the
	// margin, and when it first did.
	margin   netip.AddrPort
	marginAt time.Time
	pending  *pendingOffer // the last offer refused, considered again (Table.recheck)
}

// pendingOffer is a refused offer waiting to be considered again.
type pendingOffer struct {
	offer Offer
	cls   Class
	why   Reason
	at    time.Time // when it was last made
}

// verdict says what consider decided.
type verdict int

const (
	stay       verdict = iota
	move               // replace the route
	suppressed         // a move the per-minute bound refused
)

// consider decides whether o replaces the current route at now.
func (c *chooser) consider(o *Offer, cls Class, now time.Time) verdict {
	cand := &o.Route
	switch {
	case c.cur == nil || c.cur.Sock.Closed():
		return move
	case Same(c.cur, cand):
		if o.Pref > c.curPref {
			c.curPref = o.Pref
		}
		c.pending = nil
		return stay
	}
	h := o.Health
	var want bool
	switch {
	case cls > c.curClass:
		want = true
	case cls == c.curClass && c.settling(now) && o.Validated && o.Pref > c.curPref && !slower(o):
		want = true
	case now.Sub(c.movedAt) < MinDwell:
		want = false
	case cls < c.curClass:
		want = h.lost()
	case h.failing():
		want = true
	default:
		want = c.sustainedMargin(o, now)
	}
	if !want {
		return stay
	}
	if !h.failing() && !c.allow(now) {
		return suppressed
	}
	return move
}

func (c *chooser) settling(now time.Time) bool {
	return c.since.IsZero() || now.Sub(c.since) < Settle
}

// slower reports an offer whose check measured it slower than the current
// route by the margin (the mirror of sustainedMargin's): a better check
// priority while settling (IPv6 beside IPv4, say) does not take a session
// onto a slower path.
func slower(o *Offer) bool {
	cur := o.Health.RTT
	return o.RTT > 0 && cur > 0 && cur < time.Duration(float64(o.RTT)*MarginRatio) && o.RTT-cur >= MarginMin
}

// sustainedMargin reports a candidate whose checks beat the current
// route's smoothed RTT by the margin twice, Sustain apart.
func (c *chooser) sustainedMargin(o *Offer, now time.Time) bool {
	cur := o.Health.RTT
	if o.RTT <= 0 || cur <= 0 {
		return false // nothing measured: says nothing either way
	}
	if o.RTT > time.Duration(float64(cur)*MarginRatio) || cur-o.RTT < MarginMin {
		if c.margin == o.Route.Remote {
			c.margin = netip.AddrPort{}
		}
		return false
	}
	if c.margin != o.Route.Remote {
		c.margin, c.marginAt = o.Route.Remote, now
		return false
	}
	return now.Sub(c.marginAt) >= Sustain
}

// allow reports whether another move fits in the per-minute bound.
func (c *chooser) allow(now time.Time) bool {
	keep := c.changes[:0]
	for _, t := range c.changes {
		if now.Sub(t) < time.Minute {
			keep = append(keep, t)
		}
	}
	c.changes = keep
	return len(c.changes) < MaxChangesPerMinute
}

// set makes r the current route.
func (c *chooser) set(r *Route, cls Class, pref uint32, counted bool, now time.Time) {
	c.cur, c.curClass, c.curPref, c.movedAt = r, cls, pref, now
	c.margin, c.pending = netip.AddrPort{}, nil
	if counted {
		c.changes = append(c.changes, now)
	}
}
