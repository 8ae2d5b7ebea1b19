package secure

import (
	"net/netip"
	"sync"
	"time"
)

// Handshake rate limits per source, as WireGuard's ratelimiter: 20
// handshakes a second with a burst of 5. Tokens are kept in nanoseconds of
// earned time, so one handshake costs 1s/20.
const (
	handshakesPerSecond = 20
	handshakeBurst      = 5
	handshakeCost       = int64(time.Second / handshakesPerSecond)
	bucketCapacity      = handshakeCost * handshakeBurst

	// limiterIdle is how long a bucket must go unused before it is swept.
	// A bucket refills completely in 250 ms, so after a second it carries
	// no information a new bucket would not.
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

// rateLimiter is a token bucket per source. Any goroutine may call allow;
// mu guards everything below it.
type rateLimiter struct {
	maxEntries int

	mu        sync.Mutex
	table     map[limiterKey]bucket
	lastSweep time.Time
}

func newRateLimiter() *rateLimiter {
	return &rateLimiter{
		maxEntries: limiterMaxEntries,
		table:      make(map[limiterKey]bucket),
	}
}

// allow takes one token from the bucket of src at time now, reporting
// false if there was none, if src is invalid, or if the table is full.
func (r *rateLimiter) allow(src netip.Addr, now time.Time) bool {
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
		// A new source starts with a full bucket minus this handshake.
		r.table[key] = bucket{last: now, tokens: bucketCapacity - handshakeCost}
		return true
	}
	b.tokens = min(b.tokens+max(int64(now.Sub(b.last)), 0), bucketCapacity)
	b.last = now
	allowed := b.tokens >= handshakeCost
	if allowed {
		b.tokens -= handshakeCost
	}
	r.table[key] = b
	return allowed
}

// sweep drops idle buckets, at most once per limiterIdle, so the cost of
// a full scan is spread over a second of handshakes.
func (r *rateLimiter) sweep(now time.Time) {
	if now.Sub(r.lastSweep) < limiterIdle {
		return
	}
	r.lastSweep = now
	for k, b := range r.table {
		if now.Sub(b.last) >= limiterIdle {
			delete(r.table, k)
		}
	}
}

// size returns the number of buckets held (for tests).
func (r *rateLimiter) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.table)
}
