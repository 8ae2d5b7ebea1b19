package secure

import (
	"net/netip"
	"sync"
	"time"
)

// Handshake rate limits per source, as WireGuard's ratelimiter: 20
// handshakes a second with a burst of 5.
const (
	handshakesPerSecond = 20
	handshakeBurst      = 5

	// limiterIdle is how long a bucket must go unused before it is swept.
	// A handshake bucket refills completely in 250 ms, so after a second it
	// carries no information a new bucket would not; slower limiters keep
	// their buckets until they are full again.
	limiterIdle = time.Second

	// limiterMaxEntries bounds the table (~200 KiB). Past it, new sources
	// are refused until a sweep frees room: under a flood we prefer
	// refusing strangers to forgetting the state of sources we are
	// already limiting (the Linux WireGuard module does the same).
	limiterMaxEntries = 4096
)

// limiterKey groups addresses: an IPv4 address alone, or an IPv6 /64,
// since one host usually owns a whole /64.
type limiterKey struct {
	v6     bool
	prefix [8]byte
}

func keyOf(a netip.Addr) (limiterKey, bool) {
	a = a.Unmap()
	var k limiterKey
	switch {
	case a.Is4():
		b := a.As4()
		copy(k.prefix[:], b[:])
	case a.Is6():
		b := a.As16()
		k.v6 = true
		copy(k.prefix[:], b[:8])
	default:
		return k, false
	}
	return k, true
}

type bucket struct {
	last   time.Time // last refill
	tokens int64     // earned nanoseconds, at most bucketCapacity
}

// RateLimiter is a token bucket per source address (an IPv4 address, or an
// IPv6 /64): perSecond tokens a second, at most burst. Tokens are kept in
// nanoseconds of earned time, so one event costs 1s/perSecond. The table is
// bounded; past it new sources are refused until idle buckets are swept.
// Safe for concurrent use; mu guards everything below it.
type RateLimiter struct {
	maxEntries int
	cost       int64 // nanoseconds per event
	capacity   int64
	idle       time.Duration

	mu        sync.Mutex
	table     map[limiterKey]bucket
	lastSweep time.Time
}

// NewRateLimiter returns a limiter allowing perSecond events a second per
// source with bursts of burst.
func NewRateLimiter(perSecond, burst int) *RateLimiter {
	cost := int64(time.Second) / int64(max(perSecond, 1))
	capacity := cost * int64(max(burst, 1))
	return &RateLimiter{
		maxEntries: limiterMaxEntries,
		cost:       cost,
		capacity:   capacity,
		idle:       max(limiterIdle, time.Duration(capacity)),
		table:      make(map[limiterKey]bucket),
	}
}

func newRateLimiter() *RateLimiter { return NewRateLimiter(handshakesPerSecond, handshakeBurst) }

// Allow takes one token from src's bucket at time now, reporting false if
// there was none, if src is invalid, or if the table is full.
func (r *RateLimiter) Allow(src netip.Addr, now time.Time) bool { return r.allow(src, now) }

func (r *RateLimiter) allow(src netip.Addr, now time.Time) bool {
	key, ok := keyOf(src)
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweep(now)

	b, ok := r.table[key]
	if !ok {
		if len(r.table) >= r.maxEntries {
			return false
		}
		// A new source starts with a full bucket minus this event.
		r.table[key] = bucket{last: now, tokens: r.capacity - r.cost}
		return true
	}
	b.tokens = min(b.tokens+max(int64(now.Sub(b.last)), 0), r.capacity)
	b.last = now
	allowed := b.tokens >= r.cost
	if allowed {
		b.tokens -= r.cost
	}
	r.table[key] = b
	return allowed
}

// sweep drops idle buckets, at most once per idle period, so the cost of
// a full scan is spread over a second of events.
func (r *RateLimiter) sweep(now time.Time) {
	if now.Sub(r.lastSweep) < r.idle {
		return
	}
	r.lastSweep = now
	for k, b := range r.table {
		if now.Sub(b.last) >= r.idle {
			delete(r.table, k)
		}
	}
}

// size returns the number of buckets held (for tests).
func (r *RateLimiter) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.table)
}
