package p2p

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/netlab"
)

// TestLabClashHeal: a stale conntrack entry on A's NAT (as a peer's
// datagram that arrived before A's own left would leave on a NAT that
// accepts inbound datagrams) moves A's mapping toward B, and every probe
// of B's keeps the entry alive. Priming cannot undo an entry that exists,
// so both punches stall; healing from a fresh port must connect them
// directly, with the relay forbidden, and leave the stalled pair quiet.
func TestLabClashHeal(t *testing.T) {
	netlab.Require(t)
	if _, err := exec.LookPath("conntrack"); err != nil {
		if os.Getenv("GAMEWIRE_REQUIRE_LAB") != "" {
			t.Fatal("the conntrack tool is missing (Debian package conntrack)")
		}
		t.Skip("the conntrack tool is missing (Debian package conntrack)")
	}
	leakcheck.Check(t)
	e := newLabEnv(t, "heal", 0)
	sa, sb := e.sitePair(t, "heal", netlab.SiteConfig{NAT: netlab.NATPortRestricted, AcceptInbound: true})
	cfg := Config{ConnectTimeout: 10 * time.Second, DisableRelay: true}
	for run := range 3 {
		a, closeA := e.node(t, sa.Hosts[0], cfg, false)
		b, closeB := e.node(t, sb.Hosts[0], cfg, false)
		e.waitRegistered(t, a, b)
		ma, _ := a.trav.rv.Registered()
		mb, _ := b.trav.rv.Registered()
		if err := sa.StaleEntry(mb, ma); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		a.SendP2PPacket(b.PeerID(), []byte("ping"), SendReliable, 0)
		b.SendP2PPacket(a.PeerID(), []byte("pong"), SendReliable, 0)
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ConnectTimeout)
		_, errB := b.Receive(ctx, 0)
		_, errA := a.Receive(ctx, 0)
		cancel()
		if errA != nil || errB != nil {
			t.Fatalf("run %d: not connected (a: %v, b: %v; a heals %d, b heals %d)", run, errA, errB, a.Stats().Heals, b.Stats().Heals)
		}
		connect := time.Since(start)
		exchange(t, a, b, false)
		exchange(t, b, a, false)
		st, _ := a.GetP2PSessionState(b.PeerID())
		t.Logf("run %d: connected in %v via %v (%v), heals a %d b %d, traversal %+v", run, connect, st.RemoteAddr, st.Path,
			a.Stats().Heals, b.Stats().Heals, st.Traversal)
		if st.Path != PathDirect {
			t.Errorf("run %d: path %v, want direct", run, st.Path)
		}
		if a.Stats().Heals+b.Stats().Heals == 0 {
			t.Errorf("run %d: connected without healing: the stale entry did not clash", run)
		}
		if !st.Traversal.Healed {
			t.Errorf("run %d: Traversal.Healed false", run)
		}
		if st.RemoteAddr == mb {
			// B's main mapping is fine; A's is the one that moved, so the
			// path must use A's fresh port: B sees A elsewhere.
			if sb, _ := b.GetP2PSessionState(a.PeerID()); sb.RemoteAddr == ma {
				t.Errorf("run %d: both sides on the main mappings %v and %v, which the stale entry blocks", run, ma, mb)
			}
		}
		closeA()
		closeB()
	}
}

// TestLabPrimeDelayed: across NATs that accept inbound datagrams, with a
// real round trip (20 ms), priming alone connects: no stall to heal.
// The responder consents a round trip before the asker hears of the
// introduction, so anything it sent toward the asker at full TTL then (a
// check, its speculative handshake) would reach the asker's NAT first.
// Priming races the peer's first check by PrimeWait (5 ms), which a busy
// machine's scheduling can lose (two CPU hogs beside -race: one run in
// six); the heal then connects, so every run must connect within a second
// and at least one of the three on priming alone.
func TestLabPrimeDelayed(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	e := newLabEnv(t, "primed", 10*time.Millisecond)
	sa, sb := e.sitePair(t, "primed", netlab.SiteConfig{NAT: netlab.NATPortRestricted, AcceptInbound: true})
	primedOnly := 0
	for run := range 3 {
		a, closeA := e.node(t, sa.Hosts[0], Config{DisableRelay: true}, false)
		b, closeB := e.node(t, sb.Hosts[0], Config{DisableRelay: true}, false)
		e.waitRegistered(t, a, b)
		d := connectPair(t, a, b, func() {}, func() {})
		h := a.Stats().Heals + b.Stats().Heals
		t.Logf("run %d: connected in %v after %d heals", run, d, h)
		if d > time.Second {
			t.Errorf("run %d: connected in %v, want within 1 s", run, d)
		}
		if h == 0 {
			primedOnly++
		}
		closeA()
		closeB()
	}
	if primedOnly == 0 {
		t.Error("no run connected on priming alone: every one needed a heal")
	}
}
