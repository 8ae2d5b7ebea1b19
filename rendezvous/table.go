package rendezvous

import (
	"container/list"
	"net/netip"
	"slices"
	"time"
)

// tombstoneTTL is how long the key and last timestamps of an evicted
// registration are kept: a replayed REGISTER needs a valid cookie, and a
// cookie is valid at most two rotations.
const tombstoneTTL = 2 * cookieRotate

// registration is what the server knows of a registered peer.
// holds reports whether r would change nothing the server keeps for the
// peer: a bare refresh, which the 1 s limit drops. A REGISTER with news (a
// relayed address just allocated, say) goes through at once.
func (reg *registration) holds(r *Register) bool {
	return reg.mapping == r.Mapping && reg.relayOK == r.RelayAllowed && reg.relayAddr == r.Relay &&
		slices.Equal(reg.candidates, r.Candidates)
}

type registration struct {
	peer       Key
	key        sessionKey
	at         origin       // where the peer registered from: answers and ASKs go there, INTRODUCEs must come from there
	group      netip.Prefix // at's IP group, as counted in peerTable.perIP
	candidates []netip.AddrPort
	mapping    Mapping
	relayOK    bool
	relayAddr  netip.AddrPort
	expires    time.Time // the last accepted REGISTER + TTL
	accepted   time.Time // when the last REGISTER was accepted
	lastReg    uint64
	lastIntro  uint64
	intro      bucket // INTRODUCEs from this peer
	asks       bucket // ASKs toward this peer, from every asker
	// requests are the introductions this peer asked for that their
	// targets have not answered yet, by target: at most maxRequests.
	requests map[Key]*request
	elem     *list.Element // in peerTable.byAge
}

// tombstone is what outlives an evicted registration for tombstoneTTL:
// its key (no Diffie-Hellman when the peer comes back) and its last
// timestamps, so a replay of its REGISTERs and INTRODUCEs stays refused
// while their cookies may still be valid.
type tombstone struct {
	peer      Key
	key       sessionKey
	lastReg   uint64
	lastIntro uint64
	until     time.Time
	elem      *list.Element // in peerTable.tombAge
}

// peerTable holds the registrations, indexed so that nothing is ever found
// by scanning: every accepted REGISTER sets expires to now+TTL with the one
// TTL, so the list of registrations ordered by their last accepted
// REGISTER has the soonest expiry at its front; tombstones likewise, by
// eviction time. Guarded by Server.mu.
type peerTable struct {
	ttl      time.Duration
	maxPeers int // registrations, and tombstones apart
	maxPerIP int

	peers   map[Key]*registration
	byAge   list.List // of *registration: the front expires first
	tombs   map[Key]*tombstone
	tombAge list.List            // of *tombstone: the front goes first
	perIP   map[netip.Prefix]int // live registrations per IP group

	evicted uint64 // registrations evicted
	work    uint64 // list fronts looked at by evict: tests check it never scans
}

func newPeerTable(ttl time.Duration, maxPeers, maxPerIP int) *peerTable {
	return &peerTable{ttl: ttl, maxPeers: maxPeers, maxPerIP: maxPerIP,
		peers: make(map[Key]*registration), tombs: make(map[Key]*tombstone), perIP: make(map[netip.Prefix]int)}
}

// known returns peer's session key if the table has it, live or in a
// tombstone, and whether peer is registered.
func (t *peerTable) known(peer Key) (key sessionKey, ok, live bool) {
	if r := t.peers[peer]; r != nil {
		return r.key, true, true
	}
	if tb := t.tombs[peer]; tb != nil {
		return tb.key, true, false
	}
	return key, false, false
}

// ipFull reports whether group holds maxPerIP live registrations.
func (t *peerTable) ipFull(group netip.Prefix) bool { return t.perIP[group] >= t.maxPerIP }

// add registers a new peer (the caller checked the limits); the
// timestamps of its tombstone, if any, carry over.
func (t *peerTable) add(peer Key, key sessionKey) *registration {
	r := &registration{peer: peer, key: key}
	if tb := t.tombs[peer]; tb != nil {
		r.lastReg, r.lastIntro = tb.lastReg, tb.lastIntro
		t.tombAge.Remove(tb.elem)
		delete(t.tombs, peer)
	}
	t.peers[peer] = r
	r.elem = t.byAge.PushBack(r)
	return r
}

// accept records an accepted REGISTER of r from o at now: r moves to o,
// to the back of the expiry order, and lives another TTL.
func (t *peerTable) accept(r *registration, o origin, now time.Time) {
	if g := ipGroup(o.addr.Addr()); g != r.group {
		if r.group.IsValid() {
			t.dropIP(r.group)
		}
		r.group = g
		t.perIP[g]++
	}
	// Handlers read the clock before they take the lock, so now may be a
	// little behind the last one's: the order must hold all the same.
	exp := now.Add(t.ttl)
	if back := t.byAge.Back(); back != nil && back.Value.(*registration).expires.After(exp) {
		exp = back.Value.(*registration).expires
	}
	r.at, r.accepted, r.expires = o, now, exp
	t.byAge.MoveToBack(r.elem)
}

func (t *peerTable) dropIP(g netip.Prefix) {
	if t.perIP[g]--; t.perIP[g] <= 0 {
		delete(t.perIP, g)
	}
}

// remove drops a registration.
func (t *peerTable) remove(r *registration) {
	t.byAge.Remove(r.elem)
	delete(t.peers, r.peer)
	if r.group.IsValid() {
		t.dropIP(r.group)
	}
}

// evict drops the registrations expired at now, from the front of the
// expiry order, each leaving a tombstone, and the tombstones past their
// time. It looks at one entry more per list than it drops.
func (t *peerTable) evict(now time.Time) {
	for e := t.byAge.Front(); e != nil; e = t.byAge.Front() {
		t.work++
		r := e.Value.(*registration)
		if !now.After(r.expires) {
			break
		}
		t.remove(r)
		t.evicted++
		if t.tombAge.Len() >= t.maxPeers {
			t.dropTomb(t.tombAge.Front().Value.(*tombstone))
		}
		until := now.Add(tombstoneTTL)
		if back := t.tombAge.Back(); back != nil && back.Value.(*tombstone).until.After(until) {
			until = back.Value.(*tombstone).until // as in accept
		}
		tb := &tombstone{peer: r.peer, key: r.key, lastReg: r.lastReg, lastIntro: r.lastIntro, until: until}
		tb.elem = t.tombAge.PushBack(tb)
		t.tombs[r.peer] = tb
	}
	for e := t.tombAge.Front(); e != nil; e = t.tombAge.Front() {
		t.work++
		tb := e.Value.(*tombstone)
		if now.Before(tb.until) {
			break
		}
		t.dropTomb(tb)
	}
}

func (t *peerTable) dropTomb(tb *tombstone) {
	t.tombAge.Remove(tb.elem)
	delete(t.tombs, tb.peer)
}

// tombReg returns the last REGISTER timestamp of peer's tombstone, zero
// without one.
func (t *peerTable) tombReg(peer Key) uint64 {
	if tb := t.tombs[peer]; tb != nil {
		return tb.lastReg
	}
	return 0
}
