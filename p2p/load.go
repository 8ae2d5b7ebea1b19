package p2p

import (
	"sync"
	"time"
)

// Handshake load. Handshakes cost a node Diffie-Hellman operations, so a
// flood of them is a cheap way to burn its CPU. A node takes up to
// handshakeRate a second (with a burst of as many) as they come; past that,
// or with the worker's queue filling, it counts as under load for
// underLoadFor: an initiation then needs a cookie (proof that its source
// address is real) and passes a per-address rate limit, as WireGuard does.
const (
	handshakeRate  = 200
	handshakeBurst = 200
	underLoadFor   = time.Second
)

// loadMeter decides whether the node is under load. Safe for concurrent
// use.
type loadMeter struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
	until  time.Time // under load until then
}

func newLoadMeter(now time.Time) *loadMeter {
	return &loadMeter{tokens: handshakeBurst, last: now}
}

// admit is called for each initiation with a valid mac1. It reports whether
// the node is under load, taking a token when it is not.
func (l *loadMeter) admit(now time.Time, queueLen int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tokens = min(handshakeBurst, l.tokens+now.Sub(l.last).Seconds()*handshakeRate)
	l.last = now
	if queueLen >= underLoadLen || l.tokens < 1 {
		l.until = now.Add(underLoadFor)
	}
	if now.Before(l.until) {
		return true
	}
	l.tokens--
	return false
}
