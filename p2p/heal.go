package p2p

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/gamewire/gamewire/nat"
)

// Healing a stalled punch (docs/ARCHITECTURE.md, "The conntrack clash").
const (
	healSTUNTimeout = 2 * time.Second
	// maxFresh bounds the fresh ports advertised at once: they ride in the
	// registration beside at most hostCandidates host addresses.
	maxFresh = 2
)

// heal answers a stall of the punch toward peer (nat.PunchConfig.OnStall):
// a fresh socket, whose new NAT mapping no stale conntrack entry clashes
// with, checks the peer's public addresses; the server's STUN answer names
// that mapping, which the registration then carries and a new
// introduction hands to the peer, and that introduction releases the
// fresh socket's checks. Called on the punch's goroutine.
func (t *traversal) heal(peer PeerID, punch *nat.Punch) {
	t.do(func() {
		if pp := t.peers[peer]; pp == nil || pp.punch != punch {
			return // retired meanwhile
		}
		s, err := t.n.openExtra()
		if err != nil {
			t.n.log.Debug("p2p: fresh socket to heal a stall", "peer", peer, "err", err)
			return
		}
		if !punch.AddSocket(s) {
			s.Close()
			return
		}
		t.n.stats.heals.Add(1)
		t.wg.Add(1)
		go t.advertiseFresh(peer, s)
	})
}

// advertiseFresh learns the fresh socket's mapping from the server and
// has the peer introduced to it.
func (t *traversal) advertiseFresh(peer PeerID, s *udpSocket) {
	defer t.wg.Done()
	ctx, cancel := context.WithTimeout(t.ctx, healSTUNTimeout)
	defer cancel()
	res, err := t.stun.QueryVia(ctx, s.WriteTo, t.server, nat.ChangeNone)
	if err != nil || !res.Mapped.IsValid() {
		t.n.log.Debug("p2p: fresh socket's mapping", "peer", peer, "err", err)
		return
	}
	mapped := netip.AddrPortFrom(res.Mapped.Addr().Unmap(), res.Mapped.Port())
	t.mu.Lock()
	t.fresh = slices.DeleteFunc(t.fresh, func(f freshPort) bool { return f.peer == peer })
	if len(t.fresh) >= maxFresh {
		t.fresh = t.fresh[1:]
	}
	t.fresh = append(t.fresh, freshPort{peer, mapped})
	t.mu.Unlock()
	t.n.log.Debug("p2p: healing a stall from a fresh port", "peer", peer, "mapped", mapped)
	now := time.Now()
	t.reregister(now)
	t.introduce(peer, now)
}

// freshPort is a fresh socket's public mapping, advertised while the punch
// toward peer runs.
type freshPort struct {
	peer PeerID
	addr netip.AddrPort
}

// forgetFresh stops advertising peer's fresh port (its punch is over).
func (t *traversal) forgetFresh(peer PeerID) {
	t.mu.Lock()
	t.fresh = slices.DeleteFunc(t.fresh, func(f freshPort) bool { return f.peer == peer })
	t.mu.Unlock()
}

// freshCandidates are the fresh ports to advertise.
func (t *traversal) freshCandidates() []netip.AddrPort {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]netip.AddrPort, len(t.fresh))
	for i, f := range t.fresh {
		out[i] = f.addr
	}
	return out
}
