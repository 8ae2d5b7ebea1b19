package nat

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// ttlSock records each datagram with its TTL (0: the socket's own).
type ttlSock struct {
	mu   sync.Mutex
	sent []sentDatagram
}

type sentDatagram struct {
	to  netip.AddrPort
	ttl int
	at  time.Time
}

func (s *ttlSock) WriteTo(b []byte, to netip.AddrPort) error { return s.WriteToTTL(b, to, 0) }
func (s *ttlSock) WriteToTTL(b []byte, to netip.AddrPort, ttl int) error {
	s.mu.Lock()
	s.sent = append(s.sent, sentDatagram{to, ttl, time.Now()})
	s.mu.Unlock()
	return nil
}
func (s *ttlSock) Close() error { return nil }

func (s *ttlSock) all() []sentDatagram {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sent)
}

// to lists what went to addr: the TTLs, 0 for a full-TTL check.
func (s *ttlSock) to(addr netip.AddrPort) []int {
	var out []int
	for _, d := range s.all() {
		if d.to == addr {
			out = append(out, d.ttl)
		}
	}
	return out
}

var (
	publicCand = Candidate{Addr: netip.MustParseAddrPort("198.51.100.7:5000"), Kind: KindServerRefl}
	lanCand    = Candidate{Addr: netip.MustParseAddrPort("192.168.1.5:4000"), Kind: KindHost}
)

func primePunch(sock Socket, hold bool, cands ...Candidate) *Punch {
	self, peer := key32(), key32()
	return StartPunch(PunchConfig{Local: self, Peer: peer, Key: NewProbeKey([]byte("dh"), self, peer), Main: sock,
		Candidates: cands, Hold: hold, LocalMapping: MappingEndpointIndependent, PeerMapping: MappingEndpointIndependent})
}

// TestPunchPrimes: a public address gets primers (TTL 2 and 3) at once
// and its first full check PrimeWait later; a LAN address is checked at
// once. A socket without WriteToTTL is checked at once.
func TestPunchPrimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sock := &ttlSock{}
		p := primePunch(sock, false, lanCand, publicCand)
		defer p.Stop()
		if got := sock.to(lanCand.Addr); !slices.Equal(got, []int{0}) {
			t.Errorf("LAN candidate at start: %v, want one full check", got)
		}
		if got := sock.to(publicCand.Addr); !slices.Equal(got, primeTTLs[:]) {
			t.Errorf("public candidate at start: TTLs %v, want the primers %v only", got, primeTTLs)
		}
		time.Sleep(PrimeWait - time.Microsecond)
		if got := sock.to(publicCand.Addr); len(got) != len(primeTTLs) {
			t.Errorf("before PrimeWait: %v", got)
		}
		time.Sleep(time.Microsecond)
		synctest.Wait()
		if got := sock.to(publicCand.Addr); !slices.Equal(got, append(primeTTLs[:], 0)) {
			t.Errorf("after PrimeWait: %v, want the primers, then a full check", got)
		}
		if st := p.Stats(); st.Primers != len(primeTTLs) || st.Checks != 2 {
			t.Errorf("stats %+v, want %d primers and 2 checks", st, len(primeTTLs))
		}

		plain := &recordSock{}
		q := primePunch(plain, false, publicCand)
		defer q.Stop()
		if got := plain.sent(); !slices.Equal(got, []netip.AddrPort{publicCand.Addr}) {
			t.Errorf("socket without TTL: %v, want a check at once", got)
		}
	})
}

// TestPunchHold: held candidates are primed only, until AddCandidates.
func TestPunchHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sock := &ttlSock{}
		p := primePunch(sock, true, publicCand)
		defer p.Stop()
		time.Sleep(time.Second)
		if got := sock.to(publicCand.Addr); !slices.Equal(got, primeTTLs[:]) {
			t.Fatalf("held for 1 s: %v, want the primers only", got)
		}
		p.AddCandidates([]Candidate{publicCand, lanCand})
		time.Sleep(PrimeWait)
		synctest.Wait()
		if got := sock.to(publicCand.Addr); !slices.Equal(got, append(primeTTLs[:], 0)) {
			t.Errorf("released: %v, want one full check after the primers", got)
		}
	})
}

// TestPunchStall: with both NATs endpoint-independent and the peer's
// public address unanswered for stallAfter, OnStall runs and the stalled
// pair goes quiet; AddSocket primes the peer's public address from the
// fresh socket and holds its checks until freshWait after the next
// introduction (the peer's, through the primed NAT, go first). A heal
// that stalls too is healed again, at most maxHeals times in all, spaced
// by healAgain and doubling, and each stall quiets the fresh pairs of the
// heal before it.
func TestPunchStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sock, fresh := &ttlSock{}, &ttlSock{}
		var mu sync.Mutex
		var stalls []time.Time
		var atStall []int // the fresh socket's datagrams to the peer when each stall came
		self, peer := key32(), key32()
		start := time.Now()
		p := StartPunch(PunchConfig{Local: self, Peer: peer, Key: NewProbeKey([]byte("dh"), self, peer), Main: sock,
			Candidates: []Candidate{publicCand}, LocalMapping: MappingEndpointIndependent, PeerMapping: MappingEndpointIndependent,
			OnStall: func() {
				mu.Lock()
				stalls = append(stalls, time.Now())
				atStall = append(atStall, len(fresh.to(publicCand.Addr)))
				mu.Unlock()
			}})
		defer p.Stop()
		count := func() int { mu.Lock(); defer mu.Unlock(); return len(stalls) }
		time.Sleep(stallAfter)
		if count() != 0 {
			t.Fatal("stalled before stallAfter")
		}
		time.Sleep(2 * punchPace)
		if count() != 1 || !p.Stats().Stalled {
			t.Fatalf("after stallAfter: %d stalls, Stalled %v; want 1, true", count(), p.Stats().Stalled)
		}
		before := len(sock.to(publicCand.Addr))

		if !p.AddSocket(fresh) {
			t.Fatal("AddSocket refused")
		}
		if got := fresh.to(publicCand.Addr); !slices.Equal(got, primeTTLs[:]) {
			t.Errorf("fresh socket: %v, want the primers", got)
		}
		time.Sleep(100 * time.Millisecond)
		if got := fresh.to(publicCand.Addr); len(got) != len(primeTTLs) {
			t.Errorf("fresh socket before the introduction: %v, want the primers only", got)
		}
		p.AddCandidates([]Candidate{publicCand, {Addr: netip.MustParseAddrPort("198.51.100.7:7000"), Kind: KindHost}})
		time.Sleep(PrimeWait + freshWait/2)
		synctest.Wait()
		if got := fresh.to(publicCand.Addr); len(got) != len(primeTTLs) {
			t.Errorf("fresh socket just after the introduction: %v, want the primers only (the peer's check first)", got)
		}
		time.Sleep(freshWait/2 + punchPace)
		synctest.Wait()
		if got := fresh.to(publicCand.Addr); !slices.Equal(got, append(primeTTLs[:], 0)) {
			t.Errorf("fresh socket freshWait after the introduction: %v, want a full check", got)
		}
		if count() != 1 {
			t.Fatalf("%d stalls right after the heal, want 1", count())
		}

		time.Sleep(20 * time.Second)
		if got := len(sock.to(publicCand.Addr)); got != before {
			t.Errorf("the stalled pair got %d more checks, want none (its stale entries must expire)", got-before)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(stalls) != maxHeals {
			t.Fatalf("%d stalls in 20 s with no path, want %d", len(stalls), maxHeals)
		}
		for i := 1; i < len(stalls); i++ {
			if gap, min := stalls[i].Sub(stalls[i-1]), healAgain<<(i-1); gap < min || gap > min*3/2 {
				t.Errorf("stall %d came %v after the one before, want %v to %v", i+1, gap, min, min*3/2)
			}
		}
		if got := len(fresh.to(publicCand.Addr)); got != atStall[1] {
			t.Errorf("the first heal's pair got %d more checks after the next stall, want it quiet", got-atStall[1])
		}
		t.Logf("stalls at %v", func() (d []time.Duration) {
			for _, s := range stalls {
				d = append(d, s.Sub(start))
			}
			return d
		}())
	})
}

// TestPunchNoStall: no OnStall when a NAT maps per destination (the
// birthday approach's case) or once a path is found.
func TestPunchNoStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var stalls atomic.Int32
		self, peer := key32(), key32()
		p := StartPunch(PunchConfig{Local: self, Peer: peer, Key: NewProbeKey([]byte("dh"), self, peer), Main: &ttlSock{},
			Candidates: []Candidate{publicCand}, LocalMapping: MappingEndpointIndependent, PeerMapping: MappingEndpointDependent,
			OnStall: func() { stalls.Add(1) }})
		time.Sleep(2 * time.Second)
		p.Stop()
		if stalls.Load() != 0 {
			t.Errorf("%d stalls against an endpoint-dependent peer", stalls.Load())
		}
		// Unless this side's NAT filters by address only (HealDependent).
		q := StartPunch(PunchConfig{Local: self, Peer: peer, Key: NewProbeKey([]byte("dh"), self, peer), Main: &ttlSock{},
			Candidates: []Candidate{publicCand}, LocalMapping: MappingEndpointIndependent, PeerMapping: MappingEndpointDependent,
			HealDependent: true, OnStall: func() { stalls.Add(1) }})
		time.Sleep(time.Second)
		q.Stop()
		if stalls.Load() != 1 {
			t.Errorf("HealDependent: %d stalls, want 1", stalls.Load())
		}
	})
}

// TestPunchHairpinUnprimed: the peer's address at our own public IP (one
// NAT, hairpinning) is checked at once.
func TestPunchHairpinUnprimed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sock := &ttlSock{}
		self, peer := key32(), key32()
		p := StartPunch(PunchConfig{Local: self, Peer: peer, Key: NewProbeKey([]byte("dh"), self, peer), Main: sock,
			Candidates: []Candidate{publicCand}, LocalPublic: publicCand.Addr.Addr()})
		defer p.Stop()
		if got := sock.to(publicCand.Addr); !slices.Equal(got, []int{0}) {
			t.Errorf("hairpin candidate: %v, want one full check at once", got)
		}
	})
}

// TestBirthdayHardSidePrimes: the hard side's sockets open their mappings
// with primers: a full probe reaching the easy side's NAT first would
// move its mapping.
func TestBirthdayHardSidePrimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var socks []*ttlSock
		self, peer := key32(), key32()
		p := StartPunch(PunchConfig{Local: self, Peer: peer, Key: NewProbeKey([]byte("dh"), self, peer), Main: &ttlSock{},
			Candidates: []Candidate{publicCand}, LocalMapping: MappingEndpointDependent, PeerMapping: MappingEndpointIndependent,
			OpenSocket: func() (Socket, error) {
				s := &ttlSock{}
				mu.Lock()
				socks = append(socks, s)
				mu.Unlock()
				return s, nil
			}})
		time.Sleep(birthdayDelay + sockResend + time.Second)
		p.Stop()
		mu.Lock()
		defer mu.Unlock()
		if len(socks) != birthdaySocks {
			t.Fatalf("%d sockets, want %d", len(socks), birthdaySocks)
		}
		for _, s := range socks {
			got := s.to(publicCand.Addr)
			if len(got) != 2*len(primeTTLs) || slices.Contains(got, 0) {
				t.Fatalf("a birthday socket sent %v, want primers only, two rounds", got)
			}
		}
	})
}
