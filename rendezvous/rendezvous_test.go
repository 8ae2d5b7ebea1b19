package rendezvous

import (
	"crypto/rand"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/crypto/curve25519"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

func newKeypair(t testing.TB) (priv [32]byte, pub Key) {
	t.Helper()
	rand.Read(priv[:])
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	copy(pub[:], p)
	return priv, pub
}

// testClient is a Client on its own loopback socket, recording callbacks.
type testClient struct {
	*Client
	conn *net.UDPConn
	addr netip.AddrPort
	pub  Key

	consent      atomic.Bool  // answer every ask by introducing the asker in turn
	dropRegister atomic.Int32 // REGISTERs still to drop instead of sending

	mu         sync.Mutex
	peers      []*Peer
	unknowns   []Key
	asks       []Ask
	registered int               // REGISTERED replies
	sent       map[byte]int      // messages sent, by type
	stunSeen   map[[12]byte]bool // transaction IDs of STUN answers received
	wg         sync.WaitGroup
}

func startClient(t *testing.T, srv netip.AddrPort, pin *Key, candidates []netip.AddrPort) *testClient {
	t.Helper()
	return startClientAt(t, "127.0.0.1", srv, pin, candidates)
}

// startClientAt starts a client on a socket bound to ip (a loopback
// address: 127.0.0.2 and so on stand for other hosts; ::1 for IPv6).
func startClientAt(t *testing.T, ip string, srv netip.AddrPort, pin *Key, candidates []netip.AddrPort) *testClient {
	t.Helper()
	network := "udp4"
	if strings.Contains(ip, ":") {
		network = "udp6"
	}
	conn, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Skipf("cannot bind %s: %v", ip, err)
	}
	priv, pub := newKeypair(t)
	tc := &testClient{conn: conn, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), pub: pub, stunSeen: map[[12]byte]bool{}, sent: map[byte]int{}}
	tc.Client = NewClient(ClientConfig{
		Server: srv, ServerKey: pin, Private: priv, Public: pub,
		Send: func(b []byte, to netip.AddrPort) {
			tc.mu.Lock()
			tc.sent[b[0]]++
			tc.mu.Unlock()
			if b[0] == typeRegister && tc.dropRegister.Add(-1) >= 0 {
				return
			}
			conn.WriteToUDPAddrPort(b, to)
		},
		Candidates: func() []netip.AddrPort { return candidates },
		Mapping:    func() Mapping { return MappingEndpointIndependent },
		OnPeer: func(p *Peer) {
			tc.mu.Lock()
			tc.peers = append(tc.peers, p)
			tc.mu.Unlock()
		},
		OnUnknown: func(k Key) {
			tc.mu.Lock()
			tc.unknowns = append(tc.unknowns, k)
			tc.mu.Unlock()
		},
		OnRegistered: func(netip.AddrPort) {
			tc.mu.Lock()
			tc.registered++
			tc.mu.Unlock()
		},
		OnAsk: func(a *Ask) {
			tc.mu.Lock()
			tc.asks = append(tc.asks, *a)
			tc.mu.Unlock()
			if tc.consent.Load() {
				tc.Introduce(a.Asker, time.Now())
			}
		},
	})
	tc.wg.Add(1)
	go func() {
		defer tc.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if !tc.Handle(buf[:n], from) && n >= 20 {
				var id [12]byte
				copy(id[:], buf[8:20])
				tc.mu.Lock()
				tc.stunSeen[id] = true
				tc.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); tc.wg.Wait() })
	return tc
}

// barrier sends a STUN Binding request from tc's socket and waits for its
// answer. The server handles a socket's datagrams in order and loopback
// keeps their order, so whatever the server sent tc in answer to anything
// tc sent before has been handled by the time barrier returns.
func (tc *testClient) barrier(t *testing.T, srv netip.AddrPort) {
	t.Helper()
	req := stunRequest(t, 0, 0)
	var id [12]byte
	copy(id[:], req[8:20])
	deadline := time.Now().Add(5 * time.Second)
	for next := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		tc.mu.Lock()
		seen := tc.stunSeen[id]
		tc.mu.Unlock()
		if seen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("barrier: no STUN answer from the server within 5 s")
		}
		if !time.Now().Before(next) { // resent, in case loopback dropped one
			tc.conn.WriteToUDPAddrPort(req, srv)
			next = time.Now().Add(time.Second)
		}
	}
}

// snapshot returns copies of what tc was told.
func (tc *testClient) snapshot() (peers []*Peer, unknowns []Key, asks []Ask) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return append([]*Peer(nil), tc.peers...), append([]Key(nil), tc.unknowns...), append([]Ask(nil), tc.asks...)
}

// run ticks the clients until cond holds or the timeout passes.
func run(t *testing.T, timeout time.Duration, cond func() bool, clients ...*testClient) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		for _, c := range clients {
			c.Tick(time.Now())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startServer(t *testing.T, alternate bool) *Server {
	t.Helper()
	var alt []netip.AddrPort
	// Ports must be fixed for the alternate sockets: pick free ones.
	p1, p2 := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.2")
	primary := []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p1)}
	if alternate {
		alt = []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), p2)}
	}
	s, err := Listen(ServerConfig{TTL: 2 * time.Second}, primary, alt)
	if err != nil {
		t.Skipf("cannot listen: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func freePort(t *testing.T, ip string) uint16 {
	t.Helper()
	for range 20 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
		if err != nil {
			t.Skipf("cannot bind %s: %v", ip, err)
		}
		p := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		c.Close()
		// The same port must be free on both loopback addresses.
		if c2, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(p)}); err == nil {
			c2.Close()
			if c3, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: int(p)}); err == nil {
				c3.Close()
				return p
			}
		}
	}
	t.Skip("no free port pair")
	return 0
}

// listenServer starts a server at 127.0.0.1 with cfg.
func listenServer(t *testing.T, cfg ServerConfig) *Server {
	t.Helper()
	s, err := Listen(cfg, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, nil)
	if err != nil {
		t.Skipf("cannot listen: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// registerAll ticks the clients until every one is registered.
func registerAll(t *testing.T, clients ...*testClient) {
	t.Helper()
	run(t, 10*time.Second, func() bool {
		for _, c := range clients {
			if _, ok := c.Registered(); !ok {
				return false
			}
		}
		return true
	}, clients...)
}

func TestRegisterAndIntroduce(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, false)
	candA := []netip.AddrPort{netip.MustParseAddrPort("192.168.1.5:4000")}
	a := startClient(t, s.Addr(), nil, candA) // trust on first use
	pin := s.PublicKey()
	b := startClient(t, s.Addr(), &pin, nil)
	b.consent.Store(true)
	registerAll(t, a, b)
	if obs, _ := a.Registered(); obs != a.addr {
		t.Fatalf("observed %v, client at %v", obs, a.addr)
	}
	a.Introduce(b.pub, time.Now())
	run(t, 5*time.Second, func() bool {
		pa, _, _ := a.snapshot()
		pb, _, _ := b.snapshot()
		return len(pa) > 0 && len(pb) > 0
	}, a, b)
	pa, pb := a.peers[0], b.peers[0]
	if pa.About != b.pub || pa.Observed != b.addr || pa.Pushed || pa.Mapping != MappingEndpointIndependent {
		t.Errorf("requester got %+v", pa)
	}
	// b consented by asking in turn: it is no more pushed than a.
	if pb.About != a.pub || pb.Observed != a.addr || pb.Pushed || len(pb.Candidates) != 1 || pb.Candidates[0] != candA[0] {
		t.Errorf("target got %+v", pb)
	}
	// No more retries once answered: neither side has an introduction pending.
	for _, c := range []*testClient{a, b} {
		c.Client.mu.Lock()
		n := len(c.Client.intros)
		c.Client.mu.Unlock()
		if n != 0 {
			t.Errorf("%d introductions still pending after the answer", n)
		}
	}

	// An unregistered target.
	_, ghost := newKeypair(t)
	a.Introduce(ghost, time.Now())
	run(t, 5*time.Second, func() bool {
		_, u, _ := a.snapshot()
		return len(u) == 1 && u[0] == ghost
	}, a)

	// A registration that is not refreshed expires (TTL 2 s here).
	b.Close()
	deadline := time.Now().Add(5 * time.Second)
	for s.IsRegistered(b.pub) {
		if time.Now().After(deadline) {
			t.Fatal("registration outlived its TTL by 3 s")
		}
		a.Tick(time.Now())
		time.Sleep(20 * time.Millisecond)
	}
	a.Introduce(b.pub, time.Now())
	run(t, 5*time.Second, func() bool {
		_, u, _ := a.snapshot()
		return len(u) == 2
	}, a)
}

func TestPinnedKeyMismatch(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, false)
	_, wrong := newKeypair(t)
	c := startClient(t, s.Addr(), &wrong, nil)
	for range 30 {
		c.Tick(time.Now())
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok := c.Registered(); ok {
		t.Fatal("registered with a server whose key is not the pinned one")
	}
}

// TestReplayedRegister: a REGISTER captured and sent again from another
// address, or sent again from the same one, changes nothing.
func TestReplayedRegister(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, false)
	priv, pub := newKeypair(t)
	conn, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer conn.Close()
	var captured []byte
	var mu sync.Mutex
	done := make(chan struct{})
	c := NewClient(ClientConfig{Server: s.Addr(), Private: priv, Public: pub,
		Send: func(b []byte, to netip.AddrPort) {
			mu.Lock()
			captured = append([]byte(nil), b...)
			mu.Unlock()
			conn.WriteToUDPAddrPort(b, to)
		}})
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
	deadline := time.Now().Add(5 * time.Second)
	for _, ok := c.Registered(); !ok; _, ok = c.Registered() {
		if time.Now().After(deadline) {
			t.Fatal("no registration")
		}
		c.Tick(time.Now())
		time.Sleep(10 * time.Millisecond)
	}
	attacker, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer attacker.Close()
	mu.Lock()
	replay := captured
	mu.Unlock()
	before := s.Stats()
	attacker.WriteToUDPAddrPort(replay, s.Addr()) // cookie of another address
	conn.WriteToUDPAddrPort(replay, s.Addr())     // same address, old timestamp
	time.Sleep(200 * time.Millisecond)
	after := s.Stats()
	if after.Registrations != before.Registrations {
		t.Fatal("a replayed REGISTER was accepted")
	}
	if after.Challenges != before.Challenges+1 || after.Replayed != before.Replayed+1 {
		t.Fatalf("before %+v after %+v", before, after)
	}
	conn.Close()
	<-done
}

func stunRequest(t *testing.T, padTo int, change byte) []byte {
	t.Helper()
	m := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if change != 0 {
		m.Add(stun.AttrChangeRequest, []byte{0, 0, 0, change})
	}
	if pad := padTo - len(m.Raw) - 4; pad > 0 {
		m.Add(stun.AttrPadding, make([]byte, pad))
	}
	m.Encode()
	return m.Raw
}

func stunExchange(t *testing.T, conn *net.UDPConn, req []byte, to netip.AddrPort) (*stun.Message, netip.AddrPort, bool) {
	t.Helper()
	conn.WriteToUDPAddrPort(req, to)
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 1500)
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, netip.AddrPort{}, false
	}
	if n > max(len(req), stunAnswerFloor) {
		t.Errorf("answer of %d bytes to a request of %d", n, len(req))
	}
	m := &stun.Message{Raw: buf[:n]}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	return m, from, true
}

func TestSTUN(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, true)
	conn, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer conn.Close()
	me := conn.LocalAddr().(*net.UDPAddr).AddrPort()

	// A padded request gets everything.
	m, from, ok := stunExchange(t, conn, stunRequest(t, 100, 0), s.Addr())
	if !ok || from != s.Addr() {
		t.Fatalf("no answer (from %v)", from)
	}
	var xa stun.XORMappedAddress
	var other stun.OtherAddress
	var origin stun.ResponseOrigin
	if xa.GetFrom(m) != nil || other.GetFrom(m) != nil || origin.GetFrom(m) != nil {
		t.Fatalf("attributes missing: %v", m)
	}
	if xa.Port != int(me.Port()) || !xa.IP.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("mapped %v, client %v", xa, me)
	}
	if !other.IP.Equal(net.IPv4(127, 0, 0, 2)) || other.Port != int(s.addrs[1].Port()) {
		t.Errorf("other address %v", other)
	}

	// A bare request (20 bytes, as RFC 5389 clients send) gets what fits
	// in 44 bytes: XOR-MAPPED-ADDRESS and, for IPv4, OTHER-ADDRESS, which
	// an unpadded RFC 5780 client needs.
	if m, _, ok := stunExchange(t, conn, stunRequest(t, 0, 0), s.Addr()); !ok || xa.GetFrom(m) != nil || other.GetFrom(m) != nil || len(m.Raw) != stunAnswerFloor {
		t.Errorf("bare 20-byte request: answer %v, want XOR-MAPPED-ADDRESS and OTHER-ADDRESS in %d bytes", m, stunAnswerFloor)
	}
	// Without a second address, no OTHER-ADDRESS (RESPONSE-ORIGIN fits).
	if m, _, ok := stunExchange(t, conn, stunRequest(t, 0, 0), startServer(t, false).Addr()); !ok || xa.GetFrom(m) != nil || other.GetFrom(m) == nil {
		t.Errorf("bare 20-byte request to a one-address server: answer %v, want XOR-MAPPED-ADDRESS and no OTHER-ADDRESS", m)
	}
	// Just room for XOR-MAPPED-ADDRESS.
	if m, _, ok := stunExchange(t, conn, stunRequest(t, 32, 0), s.Addr()); !ok || xa.GetFrom(m) != nil {
		t.Error("no trimmed answer for a 32-byte request")
	}

	// CHANGE-REQUEST: the answer leaves from the other IP, port, or both.
	for _, tc := range []struct {
		flags byte
		want  netip.AddrPort
	}{
		{changeIPFlag | changePortFlag, s.addrs[1]},
		{changePortFlag, s.addrs[2]},
		{changeIPFlag, s.addrs[3]},
	} {
		_, from, ok := stunExchange(t, conn, stunRequest(t, 100, tc.flags), s.Addr())
		if !ok || from != tc.want {
			t.Errorf("change %#x: answered from %v, want %v", tc.flags, from, tc.want)
		}
	}
}

// FuzzServerHandle feeds the server arbitrary datagrams from an
// unauthenticated source, at each socket of an RFC 5780 group and at a
// plain one beside it, and checks it never answers with more bytes than
// it got (or the 44-byte STUN floor).
func FuzzServerHandle(f *testing.F) {
	f.Add(stunRequest(&testing.T{}, 64, 0))
	f.Add(classicRequest(&testing.T{}))
	f.Add(classicRequest(&testing.T{}, classicAttr(classicChangeRequest, []byte{0, 0, 0, 0})))
	f.Add(make([]byte, minRegisterLen))
	f.Add(append([]byte{typeRegister, 1, 1, 0}, make([]byte, minRegisterLen-4)...))
	f.Add(append([]byte{typeIntroduce}, make([]byte, introduceLen-1)...))
	f.Add(append([]byte{typeAsk}, make([]byte, askLen-1)...))
	f.Add(classicRequest(&testing.T{}, classicAttr(classicChangeRequest, []byte{0, 0, 0, changeIPFlag | changePortFlag})))
	f.Add(stunRequest(&testing.T{}, 0, changePortFlag))
	addrs := []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.1:3478"), netip.MustParseAddrPort("203.0.113.2:3479"),
		netip.MustParseAddrPort("203.0.113.1:3479"), netip.MustParseAddrPort("203.0.113.2:3478"),
		netip.MustParseAddrPort("[2001:db8::1]:3478"),
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		recs := make([]*recordConn, len(addrs))
		conns := make([]net.PacketConn, len(addrs))
		for i := range recs {
			recs[i] = &recordConn{}
			conns[i] = recs[i]
		}
		s := newServer(ServerConfig{Conns: conns, TTL: time.Minute, MaxPeers: 10})
		s.addrs, s.groups = addrs, groupSockets(addrs)
		for i := range addrs {
			src := netip.MustParseAddrPort("198.51.100.7:40000")
			if addrs[i].Addr().Is6() {
				src = netip.MustParseAddrPort("[2001:db8:7::7]:40000")
			}
			s.handle(origin{sock: i, addr: src}, b)
		}
		for _, rec := range recs {
			for _, w := range rec.writes {
				if w > max(len(b), stunAnswerFloor) {
					t.Fatalf("answered %d bytes to %d", w, len(b))
				}
			}
		}
	})
}

// recordConn is a PacketConn that records the sizes written.
type recordConn struct {
	net.PacketConn
	writes []int
}

func (r *recordConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	r.writes = append(r.writes, len(b))
	return len(b), nil
}

func TestWireRoundTrip(t *testing.T) {
	var k sessionKey
	rand.Read(k[:])
	cand := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("[2001:db8::1]:2")}
	r := Register{Peer: Key{1}, Timestamp: 7, Cookie: [16]byte{9}, Mapping: MappingEndpointDependent, Candidates: cand}
	b := r.encode(&k)
	got, ok := decodeRegister(b)
	if !ok || !checkMAC(&k, b) || got.Timestamp != 7 || got.Mapping != MappingEndpointDependent || len(got.Candidates) != 2 || got.Candidates[1] != cand[1] {
		t.Fatalf("%+v %v", got, ok)
	}
	b[10] ^= 1
	if checkMAC(&k, b) {
		t.Fatal("tampered REGISTER passes its MAC")
	}
	p := Peer{About: Key{2}, Timestamp: 3, Pushed: true, Mapping: MappingEndpointIndependent, Observed: cand[0], Candidates: cand}
	gp, ok := decodePeer(p.encode(&k), &k)
	if !ok || !gp.Pushed || gp.Observed != cand[0] || gp.Candidates[1] != cand[1] {
		t.Fatalf("%+v %v", gp, ok)
	}
	// Sizes: nothing unauthenticated is answered with more than it carried.
	if challengeLen > minRegisterLen {
		t.Fatal("a CHALLENGE is larger than the smallest REGISTER")
	}
}

// TestReregisterRetried: a REGISTER with news (Reregister: a new
// candidate) that the network or the server's rate limit drops goes again
// until it is confirmed, well before the next refresh, so introductions
// carry the news.
func TestReregisterRetried(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, false)
	cands := []netip.AddrPort{netip.MustParseAddrPort("192.168.1.5:4000")}
	a := startClient(t, s.Addr(), nil, cands)
	b := startClient(t, s.Addr(), nil, nil)
	b.consent.Store(true)
	registerAll(t, a, b)
	cands[0] = netip.MustParseAddrPort("203.0.113.5:4000") // a port mapping, say
	a.dropRegister.Store(2)
	a.Reregister(time.Now())
	start := time.Now()
	if a.Confirmed() {
		t.Fatal("news confirmed before the server could answer")
	}
	run(t, 3*time.Second, a.Confirmed, a, b) // the refresh is 20 s away
	if n := a.dropRegister.Load(); n > 0 {
		t.Fatalf("%d drops left: the news went out only %d times", n, 2-n)
	}
	t.Logf("news confirmed after %v, with two REGISTERs dropped", time.Since(start))
	a.Introduce(b.pub, time.Now())
	run(t, 3*time.Second, func() bool {
		pb, _, _ := b.snapshot()
		return len(pb) > 0
	}, a, b)
	if pb, _, _ := b.snapshot(); !slices.Equal(pb[0].Candidates, cands) {
		t.Errorf("peer told of candidates %v, want %v", pb[0].Candidates, cands)
	}
}
