package nat

import (
	"crypto/rand"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

func key32() (k [32]byte) {
	rand.Read(k[:])
	return k
}

func TestProbeWire(t *testing.T) {
	k := NewProbeKey([]byte("shared secret"), key32(), key32())
	p := Probe{Ack: true, Sender: key32(), TxID: [12]byte{1, 2, 3}, Observed: netip.MustParseAddrPort("203.0.113.5:4000")}
	b := p.Append(nil, &k)
	if len(b) != ProbeLen {
		t.Fatalf("%d bytes", len(b))
	}
	got, ok := ParseProbe(b)
	if !ok || got != p || !VerifyProbe(b, &k) {
		t.Fatalf("%+v %v", got, ok)
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x01
		if _, ok := ParseProbe(c); ok && VerifyProbe(c, &k) {
			t.Fatalf("flipping byte %d passes", i)
		}
	}
	other := NewProbeKey([]byte("another secret"), key32(), key32())
	if VerifyProbe(b, &other) {
		t.Fatal("verifies under another key")
	}
	// The key does not depend on which side derives it.
	a, c := key32(), key32()
	if NewProbeKey([]byte("x"), a, c) != NewProbeKey([]byte("x"), c, a) {
		t.Fatal("key depends on the order of the PeerIDs")
	}
}

func FuzzParseProbe(f *testing.F) {
	k := ProbeKey{}
	f.Add((&Probe{Sender: [32]byte{1}}).Append(nil, &k))
	f.Add(make([]byte, ProbeLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := ParseProbe(b)
		if !ok {
			return
		}
		back := p.Append(nil, &k)
		if q, ok := ParseProbe(back); !ok || q != p {
			t.Fatalf("round trip changed %+v to %+v", p, q)
		}
		VerifyProbe(b, &k)
	})
}

func TestPriority(t *testing.T) {
	local := []netip.Prefix{netip.MustParsePrefix("192.168.1.10/24")}
	c := func(a string, k Kind) Candidate { return Candidate{Addr: netip.MustParseAddrPort(a), Kind: k} }
	order := []Candidate{
		c("192.168.1.20:5000", KindHost), // same subnet
		c("10.0.0.5:5000", KindHost),     // another private network
		c("[2001:db8::5]:5000", KindHost),
		c("198.51.100.7:6000", KindPeerRefl),
		c("203.0.113.9:7000", KindServerRefl),
	}
	for i := 1; i < len(order); i++ {
		if Priority(order[i-1], local) <= Priority(order[i], local) {
			t.Errorf("%v should rank above %v", order[i-1], order[i])
		}
	}
	shuffled := []Candidate{order[4], order[2], order[0], order[3], order[1], order[0], {}}
	sorted := Sort(shuffled, local)
	if len(sorted) != 5 || sorted[0] != order[0] || sorted[4] != order[4] {
		t.Fatalf("Sort: %v", sorted)
	}
}

func TestHostCandidates(t *testing.T) {
	ifs := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/8"),
		netip.MustParsePrefix("fe80::1/64"),
		netip.MustParsePrefix("2001:db8::2/64"),
		netip.MustParsePrefix("192.168.1.10/24"),
	}
	got := HostCandidates(ifs, 4000, 4)
	if len(got) != 2 || got[0] != netip.MustParseAddrPort("192.168.1.10:4000") || got[1].Addr() != netip.MustParseAddr("2001:db8::2") {
		t.Fatalf("%v", got)
	}
	if got := HostCandidates(ifs[:1], 4000, 4); len(got) != 1 || !got[0].Addr().IsLoopback() {
		t.Fatalf("loopback only: %v", got)
	}
}

func TestSprayPort(t *testing.T) {
	seen := map[uint16]int{}
	for n := 1; n <= 2*predictWindow; n++ {
		p := sprayPort(40000, n)
		if n%2 == 1 && p != 40000+uint16((n+1)/2) {
			t.Fatalf("probe %d: port %d, want the next predicted one", n, p)
		}
		if p < 1024 {
			t.Fatalf("port %d below 1024", p)
		}
		seen[p]++
	}
	// Near the top of the range prediction stops at 65535.
	if p := sprayPort(65535, 1); p < 1024 {
		t.Fatalf("%d", p)
	}
	for range 10000 {
		if p := randomPort(); p < 1024 {
			t.Fatalf("random port %d", p)
		}
	}
}

// udpSock is a Socket on a real UDP socket.
type udpSock struct{ c *net.UDPConn }

func (s udpSock) WriteTo(b []byte, to netip.AddrPort) error {
	_, err := s.c.WriteToUDPAddrPort(b, to)
	return err
}
func (s udpSock) Close() error { return s.c.Close() }

// TestPunchLoopback: two punches on loopback sockets find each other,
// including through an address learnt from the peer's probes.
func TestPunchLoopback(t *testing.T) {
	leakcheck.Check(t)
	ca, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	cb, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer ca.Close()
	defer cb.Close()
	ida, idb := key32(), key32()
	key := NewProbeKey([]byte("dh"), ida, idb)
	var mu sync.Mutex
	var paths [2][]Path
	mk := func(i int, c *net.UDPConn, self, peer [32]byte, cands []Candidate) *Punch {
		return StartPunch(PunchConfig{Local: self, Peer: peer, Key: key, Main: udpSock{c}, Candidates: cands,
			OnPath: func(p Path) { mu.Lock(); paths[i] = append(paths[i], p); mu.Unlock() }})
	}
	addrB := cb.LocalAddr().(*net.UDPAddr).AddrPort()
	// A knows B's address; B knows nothing and learns A from its probes.
	pa := mk(0, ca, ida, idb, []Candidate{{Addr: addrB, Kind: KindServerRefl}, {Addr: netip.MustParseAddrPort("127.0.0.1:9"), Kind: KindHost}})
	pb := mk(1, cb, idb, ida, nil)
	defer pa.Stop()
	defer pb.Stop()
	read := func(c *net.UDPConn, p *Punch, main Socket, done *sync.WaitGroup) {
		defer done.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			p.HandleProbe(buf[:n], from, main)
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go read(ca, pa, udpSock{ca}, &wg)
	go read(cb, pb, udpSock{cb}, &wg)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		done := len(paths[0]) > 0 && len(paths[1]) > 0
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no path found")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ca.Close()
	cb.Close()
	wg.Wait()
	if paths[0][0].Remote != addrB {
		t.Errorf("A's path %v, B at %v", paths[0][0].Remote, addrB)
	}
	if paths[1][0].Kind != KindPeerRefl || paths[1][0].Remote != ca.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Errorf("B's path %+v", paths[1][0])
	}
}

// TestPunchIgnoresStrangers: probes from another peer or with a bad MAC are
// refused and not answered.
func TestPunchIgnoresStrangers(t *testing.T) {
	c, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer c.Close()
	self, peer := key32(), key32()
	key := NewProbeKey([]byte("dh"), self, peer)
	p := StartPunch(PunchConfig{Local: self, Peer: peer, Key: key, Main: udpSock{c}})
	defer p.Stop()
	from := netip.MustParseAddrPort("127.0.0.1:9")
	stranger := (&Probe{Sender: key32()}).Append(nil, &key)
	if p.HandleProbe(stranger, from, nil) {
		t.Error("probe from another sender accepted")
	}
	wrongKey := ProbeKey{1}
	forged := (&Probe{Sender: peer}).Append(nil, &wrongKey)
	if p.HandleProbe(forged, from, nil) {
		t.Error("probe with a bad MAC accepted")
	}
	good := (&Probe{Sender: peer}).Append(nil, &key)
	if !p.HandleProbe(good, from, nil) {
		t.Error("good probe refused")
	}
}

// recordSock records where probes go.
type recordSock struct {
	mu   sync.Mutex
	to   []netip.AddrPort
	last []byte
}

func (s *recordSock) WriteTo(b []byte, to netip.AddrPort) error {
	s.mu.Lock()
	s.to = append(s.to, to)
	s.last = slices.Clone(b)
	s.mu.Unlock()
	return nil
}
func (s *recordSock) Close() error { return nil }

func (s *recordSock) sent() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.to)
}

// TestPunchFirstRound: every candidate is checked the moment it arrives,
// at start and when a new introduction adds one; retries are paced.
func TestPunchFirstRound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sock := &recordSock{}
		self, peer := key32(), key32()
		cands := []Candidate{
			{Addr: netip.MustParseAddrPort("192.168.1.5:4000"), Kind: KindHost},
			{Addr: netip.MustParseAddrPort("10.0.0.5:4000"), Kind: KindHost},
			{Addr: netip.MustParseAddrPort("198.51.100.7:5000"), Kind: KindServerRefl},
		}
		p := StartPunch(PunchConfig{Local: self, Peer: peer, Key: NewProbeKey([]byte("dh"), self, peer), Main: sock, Candidates: cands})
		defer p.Stop()
		got := sock.sent()
		if len(got) != len(cands) {
			t.Fatalf("at start: probes to %v, want one to each of the %d candidates", got, len(cands))
		}
		for _, c := range cands {
			if !slices.Contains(got, c.Addr) {
				t.Errorf("no first probe to %v", c.Addr)
			}
		}
		moved := netip.MustParseAddrPort("198.51.100.7:6000")
		p.AddCandidates(append(cands, Candidate{Addr: moved, Kind: KindServerRefl}))
		if got := sock.sent(); len(got) != len(cands)+1 || got[len(got)-1] != moved {
			t.Errorf("after a new introduction: probes %v, want one more, to %v only", got, moved)
		}
		time.Sleep(firstRetry - time.Millisecond)
		if got := sock.sent(); len(got) != len(cands)+1 {
			t.Errorf("%d probes before the first retry was due, want %d", len(got), len(cands)+1)
		}
		// Retries 25, 50 and 100 ms apart, paced at one per punchPace over
		// the four candidates, then every retryFast: within 400 ms each
		// candidate has had its quick retries (retryFast alone would give
		// it two).
		time.Sleep(400 * time.Millisecond)
		perCand := map[netip.AddrPort]int{}
		for _, to := range sock.sent() {
			perCand[to]++
		}
		for addr, n := range perCand {
			if n < 1+quickRetries {
				t.Errorf("%v: %d checks in 400 ms, want at least %d", addr, n, 1+quickRetries)
			}
		}
	})
}

// TestPunchSprayedPeerReflexive: when the spray opens our NAT toward one
// of the peer's mappings and the peer's probe comes through it first, the
// path found by the triggered check counts as the birthday approach's.
func TestPunchSprayedPeerReflexive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sock := &recordSock{}
		self, peer := key32(), key32()
		key := NewProbeKey([]byte("dh"), self, peer)
		public := netip.MustParseAddrPort("198.51.100.7:5000")
		paths := make(chan Path, 4)
		p := StartPunch(PunchConfig{Local: self, Peer: peer, Key: key, Main: sock,
			LocalMapping: MappingEndpointIndependent, PeerMapping: MappingEndpointDependent,
			Candidates: []Candidate{{Addr: public, Kind: KindServerRefl}},
			OnPath:     func(path Path) { paths <- path }})
		defer p.Stop()
		time.Sleep(birthdayDelay + 100*time.Millisecond)
		var sprayed netip.AddrPort
		for _, to := range sock.sent() {
			if to != public {
				sprayed = to
			}
		}
		if !sprayed.IsValid() {
			t.Fatal("no spray after birthdayDelay")
		}
		probe := (&Probe{Sender: peer}).Append(nil, &key)
		if !p.HandleProbe(probe, sprayed, nil) {
			t.Fatal("probe refused")
		}
		sock.mu.Lock()
		check, ok := ParseProbe(sock.last)
		sock.mu.Unlock()
		if !ok || check.Ack {
			t.Fatal("no triggered check after the peer's probe")
		}
		ack := (&Probe{Ack: true, Sender: peer, TxID: check.TxID}).Append(nil, &key)
		p.HandleProbe(ack, sprayed, nil)
		select {
		case path := <-paths:
			if path.Remote != sprayed || !path.Birthday {
				t.Errorf("path %+v, want %v found by the birthday approach", path, sprayed)
			}
		default:
			t.Fatal("the triggered check's ack validated no path")
		}
	})
}

// TestTriggeredChecksPaced: the peer's probes from an address that is not
// the best path trigger one check per triggerGap, not one each. Two
// punches answering each other's probes on such a pair used to probe each
// other as fast as the network delivered (forever, on a network with no
// delay).
func TestTriggeredChecksPaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sock := &recordSock{}
		self, peer := key32(), key32()
		key := NewProbeKey([]byte("dh"), self, peer)
		p := StartPunch(PunchConfig{Local: self, Peer: peer, Key: key, Main: sock})
		defer p.Stop()
		from := netip.MustParseAddrPort("198.51.100.7:5001")
		checks := func() int {
			sock.mu.Lock()
			defer sock.mu.Unlock()
			n := 0
			for _, to := range sock.to {
				if to == from {
					n++
				}
			}
			return n
		}
		for range 100 {
			p.HandleProbe((&Probe{Sender: peer}).Append(nil, &key), from, nil)
		}
		// Each probe gets its ack; checks of our own come on top.
		if extra := checks() - 100; extra != 1 {
			t.Fatalf("%d checks triggered by 100 probes at one instant, want 1", extra)
		}
		time.Sleep(triggerGap)
		p.HandleProbe((&Probe{Sender: peer}).Append(nil, &key), from, nil)
		if extra := checks() - 101; extra < 2 {
			t.Fatalf("%d checks triggered after triggerGap, want a second", extra)
		}
	})
}

// TestHardSideBirthdayMainSocket: on the hard side, a path to the easy
// side's public address counts as the birthday approach's even over the
// main socket: the easy side's spray found that socket's mapping, and
// nothing else opens the easy side's NAT to it. (A session that came up
// there was recorded as found without the birthday approach.)
func TestHardSideBirthdayMainSocket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		self, peer := key32(), key32()
		key := NewProbeKey([]byte("dh"), self, peer)
		public := netip.MustParseAddrPort("198.51.100.7:5000")
		main := &recordSock{}
		paths := make(chan Path, 4)
		p := StartPunch(PunchConfig{Local: self, Peer: peer, Key: key, Main: main,
			OpenSocket:   func() (Socket, error) { return &recordSock{}, nil },
			LocalMapping: MappingEndpointDependent, PeerMapping: MappingEndpointIndependent,
			Candidates: []Candidate{{Addr: public, Kind: KindServerRefl}},
			OnPath:     func(path Path) { paths <- path }})
		defer p.Stop()
		if p.FromBirthday(public, nil) {
			t.Fatal("a birthday path before the birthday approach started")
		}
		time.Sleep(birthdayDelay + 2*punchPace)
		if !p.FromBirthday(public, nil) {
			t.Fatal("the main socket's path to the easy side's public address is not counted as the birthday approach's")
		}
		if p.FromBirthday(netip.MustParseAddrPort("192.168.1.5:4000"), nil) {
			t.Fatal("a LAN path counted as the birthday approach's")
		}
		// The main socket's own check to the public address, acked: the
		// validated path says so too.
		main.mu.Lock()
		check, ok := ParseProbe(main.last)
		main.mu.Unlock()
		if !ok || check.Ack {
			t.Fatal("no check from the main socket")
		}
		p.HandleProbe((&Probe{Ack: true, Sender: peer, TxID: check.TxID}).Append(nil, &key), public, nil)
		select {
		case path := <-paths:
			if !path.Birthday || path.Socket != Socket(main) {
				t.Fatalf("path %+v, want the main socket's, found by the birthday approach", path)
			}
		default:
			t.Fatal("the ack validated no path")
		}
	})
}
