package secure

import (
	"net/netip"
	"testing"
	"time"
)

func TestRateLimiterBurstAndRefill(t *testing.T) {
	n := newNode(t)
	a := netip.MustParseAddr("198.51.100.1")
	type step struct {
		advance time.Duration
		calls   int
		allowed int // how many of the calls succeed
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"burst of five", []step{{0, 10, 5}}},
		{"one token per 50ms", []step{{0, 5, 5}, {49 * time.Millisecond, 1, 0}, {time.Millisecond, 3, 1}, {50 * time.Millisecond, 1, 1}}},
		{"a second of rest refills only the burst", []step{{0, 5, 5}, {time.Second, 30, 5}, {time.Second, 30, 5}}},
		{"refill is capped at the burst", []step{{0, 1, 1}, {time.Hour, 10, 5}}},
		{"paced at 20/s never refused", []step{{0, 1, 1}, {50 * time.Millisecond, 1, 1}, {50 * time.Millisecond, 1, 1}, {50 * time.Millisecond, 1, 1}, {50 * time.Millisecond, 1, 1}, {50 * time.Millisecond, 1, 1}, {50 * time.Millisecond, 1, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n.limiter = newRateLimiter()
			for i, s := range tt.steps {
				n.clock.Advance(s.advance)
				got := 0
				for range s.calls {
					if n.Allow(a) {
						got++
					}
				}
				if got != s.allowed {
					t.Fatalf("step %d: %d of %d allowed, want %d", i, got, s.calls, s.allowed)
				}
			}
		})
	}
}

// TestRateLimiterSustained hammers one source every 10 ms for a second:
// it gets its burst of 5 (one spent at once) plus 20 a second, no more.
func TestRateLimiterSustained(t *testing.T) {
	n := newNode(t)
	a := netip.MustParseAddr("2001:db8::1")
	allowed := 0
	for i := 0; i < 100; i++ {
		if n.Allow(a) {
			allowed++
		}
		n.clock.Advance(10 * time.Millisecond)
	}
	// 1 at t=0 with 4 tokens left, then 99 × 0.2 tokens earned = 23.8.
	if allowed != 24 {
		t.Fatalf("%d handshakes allowed in a second of flooding, want 24", allowed)
	}
}

func TestRateLimiterKeys(t *testing.T) {
	tests := []struct {
		name   string
		a, b   string
		shared bool
	}{
		{"different IPv4", "198.51.100.1", "198.51.100.2", false},
		{"same IPv4", "198.51.100.1", "198.51.100.1", true},
		{"IPv4-mapped IPv6 is the IPv4", "198.51.100.1", "::ffff:198.51.100.1", true},
		{"same IPv6 /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
		{"IPv6 zone ignored", "fe80::1%eth0", "fe80::2%eth1", true},
		{"neighbouring IPv6 /64", "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"IPv4 vs IPv6 with the same leading bytes", "198.51.100.1", "c633:6401::", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t)
			a, b := netip.MustParseAddr(tt.a), netip.MustParseAddr(tt.b)
			for range handshakeBurst {
				if !n.Allow(a) {
					t.Fatal("burst refused")
				}
			}
			if n.Allow(a) {
				t.Fatal("sixth handshake allowed")
			}
			if got := n.Allow(b); got == tt.shared {
				t.Fatalf("Allow(%s) after exhausting %s = %v; shared bucket expected %v", tt.b, tt.a, got, tt.shared)
			}
		})
	}
}

func TestRateLimiterInvalid(t *testing.T) {
	n := newNode(t)
	if n.Allow(netip.Addr{}) {
		t.Fatal("the zero Addr was allowed")
	}
}

func TestRateLimiterBounded(t *testing.T) {
	n := newNode(t)
	addr := func(i int) netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	const flood = 3 * limiterMaxEntries
	allowed := 0
	for i := 0; i < flood; i++ {
		if n.Allow(addr(i)) {
			allowed++
		}
		n.clock.Advance(time.Microsecond) // all within one sweep period
	}
	if size := n.limiter.size(); size > limiterMaxEntries {
		t.Fatalf("table holds %d entries, bound is %d", size, limiterMaxEntries)
	}
	if allowed != limiterMaxEntries {
		t.Fatalf("%d new sources allowed while full, want exactly %d", allowed, limiterMaxEntries)
	}
	// Known sources keep their buckets while the table is full.
	if !n.Allow(addr(0)) {
		t.Fatal("a source already in the table was refused")
	}
	// Once the flood is idle for a sweep period, strangers get in again.
	n.clock.Advance(limiterIdle)
	if !n.Allow(addr(flood + 1)) {
		t.Fatal("new source refused after the table went idle")
	}
	if size := n.limiter.size(); size != 1 {
		t.Fatalf("after a sweep the table holds %d entries, want 1", size)
	}
}

func TestRateLimiterSweepKeepsActive(t *testing.T) {
	n := newNode(t)
	active := netip.MustParseAddr("198.51.100.1")
	idle := netip.MustParseAddr("198.51.100.2")
	n.Allow(idle)
	for range 5 {
		n.Allow(active)
	}
	for range 4 { // 0.8 s: active keeps using it, idle does not
		n.clock.Advance(200 * time.Millisecond)
		n.Allow(active)
	}
	n.clock.Advance(300 * time.Millisecond) // sweep runs: idle is 1.1 s old, active 0.3 s
	if n.Allow(active) != true {
		t.Fatal("active source refused")
	}
	if size := n.limiter.size(); size != 1 {
		t.Fatalf("table holds %d entries after sweep, want only the active one", size)
	}
}
