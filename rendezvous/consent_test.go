package rendezvous

import (
	"bytes"
	"crypto/rand"
	"net/netip"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// waitFor polls cond every 5 ms until it holds, failing with what after
// the timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConsentBeforeIntroduction: an INTRODUCE tells the asker nothing and
// the target only who asks and from where; once the target introduces the
// asker in turn, both hear of each other at once.
func TestConsentBeforeIntroduction(t *testing.T) {
	leakcheck.Check(t)
	s := listenServer(t, ServerConfig{})
	candA := []netip.AddrPort{netip.MustParseAddrPort("192.168.1.5:4000")}
	candB := []netip.AddrPort{netip.MustParseAddrPort("10.1.2.3:5000"), netip.MustParseAddrPort("10.1.2.4:5001")}
	a := startClient(t, s.Addr(), nil, candA)
	b := startClient(t, s.Addr(), nil, candB)
	registerAll(t, a, b)

	a.Introduce(b.pub, time.Now())
	waitFor(t, 5*time.Second, "B to be asked (or anyone told anything)", func() bool {
		pa, _, _ := a.snapshot()
		pb, _, asks := b.snapshot()
		return len(asks) > 0 || len(pa) > 0 || len(pb) > 0
	})
	a.barrier(t, s.Addr())
	b.barrier(t, s.Addr())
	pa, ua, asksA := a.snapshot()
	if len(pa) != 0 || len(ua) != 0 || len(asksA) != 0 {
		t.Fatalf("the asker learnt something before the target consented: peers %+v, unknowns %v, asks %+v", pa, ua, asksA)
	}
	pb, _, asksB := b.snapshot()
	if len(pb) != 0 {
		t.Fatalf("the target was told the asker's candidates before consenting: %+v", pb[0])
	}
	if len(asksB) != 1 || asksB[0].Asker != a.pub || asksB[0].Observed != a.addr || asksB[0].Mapping != MappingEndpointIndependent {
		t.Fatalf("target got asks %+v, want one from %x at %v", asksB, a.pub[:4], a.addr)
	}
	if st := s.Stats(); st.Asks != 1 || st.Introductions != 0 {
		t.Fatalf("stats after the ask: %d asks, %d introductions; want 1, 0", st.Asks, st.Introductions)
	}

	// B consents: both get PEER, neither pushed.
	b.Introduce(a.pub, time.Now())
	waitFor(t, 5*time.Second, "both PEERs", func() bool {
		pa, _, _ := a.snapshot()
		pb, _, _ := b.snapshot()
		return len(pa) > 0 && len(pb) > 0
	})
	pa, _, _ = a.snapshot()
	pb, _, _ = b.snapshot()
	if p := pa[0]; p.About != b.pub || p.Observed != b.addr || p.Pushed || len(p.Candidates) != 2 || p.Candidates[1] != candB[1] {
		t.Errorf("asker got %+v", p)
	}
	if p := pb[0]; p.About != a.pub || p.Observed != a.addr || p.Pushed || len(p.Candidates) != 1 || p.Candidates[0] != candA[0] {
		t.Errorf("target got %+v", p)
	}
	if st := s.Stats(); st.Introductions != 1 || st.Asks != 1 {
		t.Errorf("stats after consent: %d introductions, %d asks; want 1, 1", st.Introductions, st.Asks)
	}
	// The pair's requests are gone: a new INTRODUCE asks again.
	a.barrier(t, s.Addr())
	a.Introduce(b.pub, time.Now())
	waitFor(t, 5*time.Second, "a second ask", func() bool { _, _, asks := b.snapshot(); return len(asks) == 2 })
	a.barrier(t, s.Addr())
	if pa, _, _ := a.snapshot(); len(pa) != 1 {
		t.Fatalf("the asker got %d PEERs for a consumed consent", len(pa))
	}
}

// TestRefusedAsk: a target that ignores the ask leaves the asker with
// nothing, however often it retries.
func TestRefusedAsk(t *testing.T) {
	leakcheck.Check(t)
	s := listenServer(t, ServerConfig{})
	a := startClient(t, s.Addr(), nil, nil)
	d := startClient(t, s.Addr(), nil, nil)
	registerAll(t, a, d)
	a.Introduce(d.pub, time.Now())
	// Retries at 0.25, 0.75, 1.75 s...: at most one ask a second for the pair.
	start := time.Now()
	run(t, 10*time.Second, func() bool { return s.Stats().Asks >= 3 }, a, d)
	elapsed := time.Since(start)
	a.barrier(t, s.Addr())
	d.barrier(t, s.Addr())
	pa, ua, _ := a.snapshot()
	if len(pa) != 0 || len(ua) != 0 {
		t.Fatalf("refused asker got peers %+v, unknowns %v", pa, ua)
	}
	pd, _, asks := d.snapshot()
	if len(pd) != 0 {
		t.Fatalf("the target that refused got %+v", pd[0])
	}
	for _, ask := range asks {
		if ask.Asker != a.pub {
			t.Fatalf("ask from %x", ask.Asker[:4])
		}
	}
	if max := int(elapsed/time.Second) + 2; len(asks) > max {
		t.Fatalf("%d asks for one pair in %v, want at most %d (one a second)", len(asks), elapsed, max)
	}
}

// TestAskRateLimit: a swarm of identities asking for one target gets it at
// most 20 asks at once and 10 a second after.
func TestAskRateLimit(t *testing.T) {
	leakcheck.Check(t)
	s := listenServer(t, ServerConfig{})
	b := startClient(t, s.Addr(), nil, nil)
	const n = 30
	askers := make([]*testClient, n)
	for i := range askers {
		askers[i] = startClient(t, s.Addr(), nil, nil)
	}
	registerAll(t, append(askers, b)...)
	start := time.Now()
	for _, a := range askers {
		a.Introduce(b.pub, time.Now())
	}
	// Retries of one pair within its second do not ask again.
	for range 4 {
		askers[0].Introduce(b.pub, time.Now())
	}
	waitFor(t, 5*time.Second, "every INTRODUCE handled", func() bool {
		st := s.Stats()
		return st.Asks+st.AsksLimited >= n
	})
	elapsed := time.Since(start)
	b.barrier(t, s.Addr())
	_, _, asks := b.snapshot()
	st := s.Stats()
	limit := 20 + int(10*elapsed.Seconds()) + 1
	if len(asks) > limit || uint64(len(asks)) != st.Asks || st.Asks+st.AsksLimited != n {
		t.Fatalf("%d asks reached the target in %v (server: %d sent, %d limited); want at most %d, and %d in all",
			len(asks), elapsed, st.Asks, st.AsksLimited, limit, n)
	}
	seen := map[Key]bool{}
	for _, ask := range asks {
		if seen[ask.Asker] {
			t.Fatalf("two asks from %x within its second", ask.Asker[:4])
		}
		seen[ask.Asker] = true
	}
}

// TestRequestExpires: a request the target answers after requestTTL is
// not consent any more: the target's INTRODUCE asks the other side anew.
func TestRequestExpires(t *testing.T) {
	leakcheck.Check(t)
	const ttl = 300 * time.Millisecond
	s := listenServer(t, ServerConfig{requestTTL: ttl})
	a := startClient(t, s.Addr(), nil, nil)
	b := startClient(t, s.Addr(), nil, nil)
	registerAll(t, a, b)
	a.Introduce(b.pub, time.Now()) // a does not tick from here on: no retry refreshes the request
	waitFor(t, 5*time.Second, "B to be asked", func() bool { _, _, asks := b.snapshot(); return len(asks) == 1 })
	time.Sleep(ttl + 50*time.Millisecond) // the request was made before B heard of it: it has expired
	b.Introduce(a.pub, time.Now())
	waitFor(t, 5*time.Second, "A to be asked", func() bool { _, _, asks := a.snapshot(); return len(asks) == 1 })
	a.barrier(t, s.Addr())
	b.barrier(t, s.Addr())
	pa, _, _ := a.snapshot()
	pb, _, _ := b.snapshot()
	if len(pa) != 0 || len(pb) != 0 {
		t.Fatalf("an expired request made an introduction: %d and %d PEERs", len(pa), len(pb))
	}
}

func TestAskWire(t *testing.T) {
	var k, other sessionKey
	rand.Read(k[:])
	rand.Read(other[:])
	a := Ask{Asker: Key{7, 8}, Timestamp: 99, Observed: netip.MustParseAddrPort("198.51.100.4:5000"), Mapping: MappingEndpointDependent}
	b := a.encode(&k)
	if len(b) != 78 || b[0] != typeAsk || !IsRendezvous(b) {
		t.Fatalf("ASK is %d bytes, type %#x", len(b), b[0])
	}
	got, ok := decodeAsk(b, &k)
	if !ok || *got != a {
		t.Fatalf("decoded %+v %v, want %+v", got, ok, a)
	}
	if _, ok := decodeAsk(b, &other); ok {
		t.Fatal("ASK decoded under another key")
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x10
		if _, ok := decodeAsk(c, &k); ok {
			t.Fatalf("ASK with byte %d flipped decoded", i)
		}
	}
	if _, ok := decodeAsk(b[:len(b)-1], &k); ok {
		t.Fatal("short ASK decoded")
	}
	if IsRendezvous([]byte{typeAsk + 1}) {
		t.Fatalf("%#x counted as rendezvous", typeAsk+1)
	}
}

// FuzzDecodeAsk: the decoder takes any bytes; under a valid MAC (resealed
// here, or mutations would never get past it) it accepts exactly the
// 78-byte ASKs, and what it accepts encodes back to the same fields.
func FuzzDecodeAsk(f *testing.F) {
	var k sessionKey
	f.Add((&Ask{Asker: Key{1}, Timestamp: 5, Observed: netip.MustParseAddrPort("203.0.113.7:9")}).encode(&k))
	f.Add((&Ask{Asker: Key{2}, Observed: netip.MustParseAddrPort("[2001:db8::1]:443")}).encode(&k))
	f.Add((&Ask{}).encode(&k))
	f.Add(make([]byte, askLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeAsk(b, &k) // raw input: must not panic
		if len(b) < macLen {
			return
		}
		sealed := sealMAC(&k, bytes.Clone(b[:len(b)-macLen]))
		a, ok := decodeAsk(sealed, &k)
		if want := len(b) == askLen && b[0] == typeAsk; ok != want {
			t.Fatalf("decoded %v, want %v, for %x", ok, want, sealed)
		}
		if !ok {
			return
		}
		again, ok := decodeAsk(a.encode(&k), &k)
		if !ok || *again != *a {
			t.Fatalf("%+v does not survive a round trip: %+v", a, again)
		}
	})
}
