package rendezvous

import (
	"hash/maphash"
	"net/netip"
	"time"

	"github.com/gamewire/gamewire/internal/secure"
)

// ipGroup is what per-IP limits count by: an IPv4 address, or an IPv6 /64
// (one host usually holds a whole /64), as secure.RateLimiter groups them.
// It is invalid for an invalid address.
func ipGroup(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	switch {
	case a.Is4():
		return netip.PrefixFrom(a, 32)
	case a.Is6():
		p, _ := a.WithZone("").Prefix(64)
		return p
	}
	return netip.Prefix{}
}

// ipLimiter is a per-source token bucket (secure.RateLimiter) split into
// shards by a keyed hash of the source's group. One RateLimiter holds at
// most 4096 sources, and keeps a bucket for at least its refill time (2 s
// for 10 a second, burst 20) after its last use: a server of 100000 peers
// refreshing every 20 s sees 5000 sources a second, more than one table
// holds, and would refuse peers for want of room. The hash is keyed with
// a random seed, so a flood cannot pick the shard its sources fill.
type ipLimiter struct {
	seed   maphash.Seed
	shards []*secure.RateLimiter
}

// limiterShards sizes an ipLimiter for maxPeers: 4096 sources for every
// 2048 peers, at least one shard and at most 64.
func limiterShards(maxPeers int) int { return min(64, max(1, (maxPeers+2047)/2048)) }

func newIPLimiter(perSecond, burst, shards int) *ipLimiter {
	l := &ipLimiter{seed: maphash.MakeSeed(), shards: make([]*secure.RateLimiter, shards)}
	for i := range l.shards {
		l.shards[i] = secure.NewRateLimiter(perSecond, burst)
	}
	return l
}

// Allow takes a token from src's bucket at now; it reports false when there
// is none, when src is invalid, or when src's shard is full.
func (l *ipLimiter) Allow(src netip.Addr, now time.Time) bool {
	g := ipGroup(src)
	if !g.IsValid() {
		return false
	}
	b := g.Addr().As16()
	return l.shards[maphash.Bytes(l.seed, b[:])%uint64(len(l.shards))].Allow(src, now)
}
