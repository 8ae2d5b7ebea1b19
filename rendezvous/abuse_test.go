package rendezvous

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// keyOf returns c's session key with the server.
func keyOf(t *testing.T, c *Client) sessionKey {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.key == nil {
		t.Fatal("client has no session key")
	}
	return *c.key
}

// expectOnlySTUN sends a STUN request from conn and reads until its answer:
// anything the server sent conn before it (it handles a socket's datagrams
// in order) fails the test.
func expectOnlySTUN(t *testing.T, conn *net.UDPConn, srv netip.AddrPort, what string) {
	t.Helper()
	req := stunRequest(t, 0, 0)
	conn.WriteToUDPAddrPort(req, srv)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	buf := make([]byte, 2048)
	n, _, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("%s: no STUN answer: %v", what, err)
	}
	if IsRendezvous(buf[:n]) {
		t.Fatalf("%s: the server answered with a %#x message of %d bytes", what, buf[0], n)
	}
	if string(buf[8:20]) != string(req[8:20]) {
		t.Fatalf("%s: %d bytes that are not the STUN answer", what, n)
	}
}

// TestIntroduceUnverifiedSource: an INTRODUCE under a peer's key from
// anywhere but the origin it registered at (a copy sent from another port
// or another IP) is not answered, asks nobody, and does not move the
// registration.
func TestIntroduceUnverifiedSource(t *testing.T) {
	leakcheck.Check(t)
	s := listenServer(t, ServerConfig{})
	a := startClient(t, s.Addr(), nil, nil)
	b := startClient(t, s.Addr(), nil, nil)
	registerAll(t, a, b)
	keyA := keyOf(t, a.Client)
	_, ghost := newKeypair(t)
	ts := uint64(time.Now().UnixNano()) + 1e9 // newer than anything a sent
	for _, ip := range []string{"127.0.0.1", "127.0.0.3"} {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
		if err != nil {
			t.Skipf("cannot bind %s: %v", ip, err)
		}
		defer conn.Close()
		for _, target := range []Key{ghost, b.pub} {
			ts++
			m := Introduce{Peer: a.pub, Target: target, Timestamp: ts}
			conn.WriteToUDPAddrPort(m.encode(&keyA), s.Addr())
		}
		expectOnlySTUN(t, conn, s.Addr(), "INTRODUCE from "+conn.LocalAddr().String())
	}
	b.barrier(t, s.Addr())
	if _, _, asks := b.snapshot(); len(asks) != 0 {
		t.Fatalf("an unverified INTRODUCE asked the target: %+v", asks)
	}
	if st := s.Stats(); st.Unverified != 4 || st.Unknown != 0 || st.Asks != 0 {
		t.Fatalf("unverified %d, unknown %d, asks %d; want 4, 0, 0", st.Unverified, st.Unknown, st.Asks)
	}
	// a is still registered where it registered: b's ask reaches it there,
	// and once a consents b is told a's own address.
	a.consent.Store(true)
	b.Introduce(a.pub, time.Now())
	waitFor(t, 5*time.Second, "the introduction", func() bool {
		pb, _, _ := b.snapshot()
		return len(pb) > 0
	})
	if pb, _, _ := b.snapshot(); pb[0].Observed != a.addr {
		t.Fatalf("b was told a is at %v, a is at %v", pb[0].Observed, a.addr)
	}
	// a's own introductions from its registered address still work, and
	// what the copies carried does not count as replayed: their timestamps
	// were not recorded.
	a.Introduce(ghost, time.Now())
	waitFor(t, 5*time.Second, "UNKNOWN for the ghost", func() bool { _, u, _ := a.snapshot(); return len(u) == 1 })
}

// movingClient is a Client whose socket can be swapped, as when a NAT
// gives the node a new public address.
type movingClient struct {
	*Client
	cur   atomic.Pointer[net.UDPConn]
	mu    sync.Mutex
	first time.Time // first REGISTERED
}

// TestMovedPeerReregisters: a peer whose address changed gets a CHALLENGE
// for its next REGISTER (the cookie is bound to the old address), then
// registers at once at the new address, without waiting out the refresh
// limit, and its introductions are accepted from there.
func TestMovedPeerReregisters(t *testing.T) {
	leakcheck.Check(t)
	s := listenServer(t, ServerConfig{})
	var conns [2]*net.UDPConn
	for i := range conns {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	priv, pub := newKeypair(t)
	mc := &movingClient{}
	var unknowns atomic.Int32
	mc.Client = NewClient(ClientConfig{Server: s.Addr(), Private: priv, Public: pub,
		Send: func(b []byte, to netip.AddrPort) { mc.cur.Load().WriteToUDPAddrPort(b, to) },
		OnRegistered: func(netip.AddrPort) {
			mc.mu.Lock()
			if mc.first.IsZero() {
				mc.first = time.Now()
			}
			mc.mu.Unlock()
		},
		OnUnknown: func(Key) { unknowns.Add(1) },
	})
	mc.cur.Store(conns[0])
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				mc.Handle(buf[:n], from)
			}
		}()
	}
	defer func() { conns[0].Close(); conns[1].Close(); wg.Wait() }()
	observed := func() netip.AddrPort { a, _ := mc.Registered(); return a }
	at := func(i int) netip.AddrPort { return conns[i].LocalAddr().(*net.UDPAddr).AddrPort() }
	waitFor(t, 5*time.Second, "registration", func() bool { mc.Tick(time.Now()); return observed() == at(0) })
	before := s.Stats()

	mc.cur.Store(conns[1])
	mc.Reregister(time.Now())
	waitFor(t, 5*time.Second, "registration at the new address", func() bool { return observed() == at(1) })
	moved := time.Now()
	after := s.Stats()
	if after.Challenges != before.Challenges+1 || after.Registrations != before.Registrations+1 {
		t.Fatalf("challenges %d→%d, registrations %d→%d: want one challenge for the new address, then one registration",
			before.Challenges, after.Challenges, before.Registrations, after.Registrations)
	}
	mc.mu.Lock()
	first := mc.first
	mc.mu.Unlock()
	if after.RefreshLimited != 0 || moved.Sub(first) >= time.Second {
		t.Fatalf("the move took %v after the first registration (refresh limited %d): it must not wait out the 1 s refresh limit",
			moved.Sub(first), after.RefreshLimited)
	}
	_, ghost := newKeypair(t)
	mc.Introduce(ghost, time.Now())
	waitFor(t, 5*time.Second, "UNKNOWN at the new address", func() bool { return unknowns.Load() == 1 })
}

// TestPeersPerIPCap: 50 identities registering from one IP get
// MaxPeersPerIP registrations between them; another IP is not affected.
func TestPeersPerIPCap(t *testing.T) {
	leakcheck.Check(t)
	const capPerIP, n = 8, 50
	s := listenServer(t, ServerConfig{MaxPeersPerIP: capPerIP})
	clients := make([]*testClient, n)
	for i := range clients {
		clients[i] = startClientAt(t, "127.0.0.2", s.Addr(), nil, nil)
	}
	deadline := time.Now().Add(15 * time.Second)
	for s.Stats().PeersPerIPRefused < n-capPerIP {
		if time.Now().After(deadline) {
			t.Fatalf("after 15 s: %d refused for the IP's cap, want at least %d", s.Stats().PeersPerIPRefused, n-capPerIP)
		}
		registered := 0
		for _, c := range clients {
			c.Tick(time.Now())
			if _, ok := c.Registered(); ok {
				registered++
			}
		}
		if registered > capPerIP {
			t.Fatalf("%d identities registered from one IP, cap %d", registered, capPerIP)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.Stats().Registered; got != capPerIP {
		t.Fatalf("server holds %d registrations, want %d", got, capPerIP)
	}
	other := startClientAt(t, "127.0.0.3", s.Addr(), nil, nil)
	registerAll(t, other)
}

// TestIntroducePerIPLimit: identities sharing an IP share its INTRODUCE
// bucket (40 at once, 20 a second), whatever their own buckets allow.
func TestIntroducePerIPLimit(t *testing.T) {
	leakcheck.Check(t)
	const ids, each = 8, 40
	s := listenServer(t, ServerConfig{})
	clients := make([]*testClient, ids)
	for i := range clients {
		clients[i] = startClientAt(t, "127.0.0.2", s.Addr(), nil, nil)
	}
	registerAll(t, clients...)
	before := s.Stats()
	start := time.Now()
	for _, c := range clients {
		for range each {
			_, target := newKeypair(t)
			c.Introduce(target, time.Now())
		}
	}
	waitFor(t, 10*time.Second, "every INTRODUCE handled", func() bool {
		st := s.Stats()
		return st.Unknown+st.RateLimited-before.Unknown-before.RateLimited >= ids*each
	})
	elapsed := time.Since(start)
	answered := s.Stats().Unknown - before.Unknown
	if limit := 40 + uint64(20*elapsed.Seconds()) + 1; answered > limit {
		t.Fatalf("%d introductions from one IP answered in %v, want at most %d", answered, elapsed, limit)
	}
	got := 0
	for _, c := range clients {
		c.barrier(t, s.Addr())
		_, u, _ := c.snapshot()
		got += len(u)
	}
	if uint64(got) != answered {
		t.Fatalf("clients got %d UNKNOWNs, server sent %d", got, answered)
	}
}

// TestRefreshLimited: REGISTER spam from one registered identity gets at
// most one REGISTERED a second (each one carries TURN credentials when
// the server has TURN: they must not be farmed at line rate).
func TestRefreshLimited(t *testing.T) {
	leakcheck.Check(t)
	s := listenServer(t, ServerConfig{})
	c := startClient(t, s.Addr(), nil, nil)
	registerAll(t, c)
	c.barrier(t, s.Addr())
	c.mu.Lock()
	base := c.registered
	c.mu.Unlock()
	start := time.Now()
	for range 150 {
		c.Reregister(time.Now())
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	c.barrier(t, s.Addr())
	c.mu.Lock()
	replies := c.registered - base
	c.mu.Unlock()
	if limit := int(elapsed/time.Second) + 1; replies > limit {
		t.Fatalf("%d REGISTERED for 150 REGISTERs in %v, want at most %d", replies, elapsed, limit)
	}
	if st := s.Stats(); st.RefreshLimited == 0 {
		t.Fatal("no refresh counted as limited")
	}
}

// TestRegistrationsExpire: registrations that are not refreshed leave the
// server (Stats, and the table itself, by the sweep) with no other
// message arriving.
func TestRegistrationsExpire(t *testing.T) {
	leakcheck.Check(t)
	s := listenServer(t, ServerConfig{TTL: 300 * time.Millisecond})
	clients := []*testClient{startClient(t, s.Addr(), nil, nil), startClient(t, s.Addr(), nil, nil), startClient(t, s.Addr(), nil, nil)}
	registerAll(t, clients...)
	for _, c := range clients {
		c.Close()
	}
	held := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.peers.peers)
	}
	waitFor(t, 3*time.Second, "the sweep to drop the expired registrations", func() bool { return held() == 0 })
	if st := s.Stats(); st.Registered != 0 || st.Evicted != 3 {
		t.Fatalf("registered %d, evicted %d; want 0, 3", st.Registered, st.Evicted)
	}
}

// TestReplayAfterEviction: once a registration expired and was evicted,
// its last REGISTER, replayed from its own address while its cookie still
// holds, is refused (the tombstone keeps its timestamp) and brings nothing
// back.
func TestReplayAfterEviction(t *testing.T) {
	leakcheck.Check(t)
	s := listenServer(t, ServerConfig{TTL: 300 * time.Millisecond})
	priv, pub := newKeypair(t)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var sent [][]byte
	c := NewClient(ClientConfig{Server: s.Addr(), Private: priv, Public: pub,
		Send: func(b []byte, to netip.AddrPort) {
			mu.Lock()
			sent = append(sent, append([]byte(nil), b...))
			mu.Unlock()
			conn.WriteToUDPAddrPort(b, to)
		}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.Handle(buf[:n], from)
		}
	}()
	defer func() { conn.Close(); <-done }()
	waitFor(t, 5*time.Second, "registration", func() bool { c.Tick(time.Now()); _, ok := c.Registered(); return ok })
	c.Close()
	s.mu.Lock()
	accepted := s.peers.peers[pub].lastReg
	s.mu.Unlock()
	var replay []byte
	mu.Lock()
	for _, b := range sent {
		if r, ok := decodeRegister(b); ok && r.Timestamp == accepted {
			replay = b
		}
	}
	mu.Unlock()
	if replay == nil {
		t.Fatal("the accepted REGISTER was not among those sent")
	}
	waitFor(t, 3*time.Second, "eviction", func() bool { return s.Stats().Evicted == 1 })
	before := s.Stats()
	conn.WriteToUDPAddrPort(replay, s.Addr())
	waitFor(t, 5*time.Second, "the replay to be handled", func() bool {
		st := s.Stats()
		return st.Replayed+st.Registrations > before.Replayed+before.Registrations
	})
	if st := s.Stats(); st.Registrations != before.Registrations || st.Replayed != before.Replayed+1 || s.IsRegistered(pub) {
		t.Fatalf("replay after eviction: registrations %d→%d, replayed %d→%d", before.Registrations, st.Registrations, before.Replayed, st.Replayed)
	}
}

// TestCookieNotForgeable: a cookie nobody was sent is not valid. The
// previous secret used to start as zeros, so for the first rotation
// period anyone could compute a valid cookie for any address (a spoofed
// one included) without a CHALLENGE; and rotation is lazy, so after a
// quiet spell a cookie must not outlive two periods.
func TestCookieNotForgeable(t *testing.T) {
	leakcheck.Check(t)
	s := listenServer(t, ServerConfig{})
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	src := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	priv, pub := newKeypair(t)
	server := s.PublicKey()
	k, err := deriveKey(priv, server, pub, server)
	if err != nil {
		t.Fatal(err)
	}
	r := Register{Peer: pub, Timestamp: uint64(time.Now().UnixNano()), Cookie: s.cookie(&[32]byte{}, src)}
	conn.WriteToUDPAddrPort(r.encode(&k), s.Addr())
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	if buf[0] != typeChallenge || n != challengeLen {
		t.Fatalf("a cookie made with a zero secret got a %#x answer of %d bytes, want a CHALLENGE", buf[0], n)
	}

	t0 := time.Now()
	c, _ := s.cookies(src, [cookieLen]byte{}, t0)
	if _, ok := s.cookies(src, c, t0.Add(cookieRotate+time.Second)); !ok {
		t.Fatal("a cookie is refused one rotation on")
	}
	c, _ = s.cookies(src, [cookieLen]byte{}, t0.Add(cookieRotate+time.Second))
	if _, ok := s.cookies(src, c, t0.Add(4*cookieRotate)); ok {
		t.Fatalf("a cookie is valid %v after it was issued, past two rotations", 3*cookieRotate)
	}
}

// TestRefreshWithNewsPasses: a REGISTER that changes what the server keeps
// (a candidate, a relayed address just allocated) is accepted within the
// 1 s refresh limit; a bare repeat is not.
func TestRefreshWithNewsPasses(t *testing.T) {
	leakcheck.Check(t)
	s := listenServer(t, ServerConfig{})
	cands := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:1000")}
	c := startClient(t, s.Addr(), nil, cands)
	registerAll(t, c)
	c.barrier(t, s.Addr())
	replies := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.registered
	}
	base := replies()
	cands[0] = netip.MustParseAddrPort("192.0.2.1:1001")
	c.Reregister(time.Now())
	waitFor(t, 2*time.Second, "the REGISTER with a new candidate to be answered", func() bool { return replies() == base+1 })
	limited := s.Stats().RefreshLimited
	c.Reregister(time.Now())
	c.barrier(t, s.Addr())
	if got := replies(); got != base+1 || s.Stats().RefreshLimited != limited+1 {
		t.Fatalf("a bare repeat within 1 s was answered: %d replies (want %d), %d limited", got, base+1, s.Stats().RefreshLimited)
	}
}
