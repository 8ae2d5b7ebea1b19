package rendezvous

import (
	"bufio"
	"context"
	"crypto/rand"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/relay"
)

func TestWireRelayFields(t *testing.T) {
	var k sessionKey
	rand.Read(k[:])
	relayed := netip.MustParseAddrPort("203.0.113.9:50000")
	r := Register{Peer: Key{1}, Timestamp: 7, RelayAllowed: true, Relay: relayed,
		Candidates: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:1")}}
	got, ok := decodeRegister(r.encode(&k))
	if !ok || !got.RelayAllowed || got.Relay != relayed || len(got.Candidates) != 1 {
		t.Fatalf("REGISTER %+v %v", got, ok)
	}
	p := Peer{About: Key{2}, RelayAllowed: true, Relay: relayed, TCP: true, Candidates: r.Candidates}
	gp, ok := decodePeer(p.encode(&k), &k)
	if !ok || !gp.RelayAllowed || !gp.TCP || gp.Relay != relayed || len(gp.Candidates) != 1 {
		t.Fatalf("PEER %+v %v", gp, ok)
	}
	creds := relay.NewCredentials("s", "peer", time.Hour, time.Now())
	reg := Registered{Observed: relayed, TTL: 60, Timestamp: 9, TURN: &TURN{Credentials: creds,
		Servers: []TURNServer{{relay.UDP, relayed}, {relay.TCP, netip.AddrPortFrom(netip.IPv4Unspecified(), 3478)}}}}
	b := reg.encode(&k)
	gr, ok := decodeRegistered(b, &k)
	if !ok || gr.TURN == nil || gr.TURN.Credentials != creds || len(gr.TURN.Servers) != 2 || gr.TURN.Servers[1].Transport != relay.TCP {
		t.Fatalf("REGISTERED %+v %v", gr, ok)
	}
	// Every truncation, and a byte too many, is refused even under a
	// valid MAC.
	for n := registeredLen - macLen; n < len(b)-macLen; n++ {
		if _, ok := decodeRegistered(sealMAC(&k, append([]byte(nil), b[:n]...)), &k); ok {
			t.Fatalf("REGISTERED cut to %d bytes decoded", n)
		}
	}
	if _, ok := decodeRegistered(sealMAC(&k, append(append([]byte(nil), b[:len(b)-macLen]...), 0)), &k); ok {
		t.Fatal("REGISTERED with a trailing byte decoded")
	}
	plain := Registered{Observed: relayed, TTL: 60}
	if g, ok := decodeRegistered(plain.encode(&k), &k); !ok || g.TURN != nil {
		t.Fatalf("REGISTERED without TURN: %+v %v", g, ok)
	}
}

func FuzzDecodeTURN(f *testing.F) {
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1, 0x0d, 0x96, 1, 'u', 1, 'p'})
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, ok := decodeTURN(b)
		if !ok {
			return
		}
		reg := Registered{TURN: tr}
		var k sessionKey
		back, ok := decodeRegistered(reg.encode(&k), &k)
		if !ok || back.TURN.Credentials != tr.Credentials || len(back.TURN.Servers) != len(tr.Servers) {
			t.Fatalf("%+v does not survive a round trip", tr)
		}
	})
}

// turnServer starts a rendezvous server with the embedded TURN server on
// one UDP socket and one TCP listener at the same port.
func turnServer(t *testing.T) *Server {
	t.Helper()
	return turnServerWith(t, func(*ServerConfig) {})
}

// turnServerWith is turnServer with changes to its configuration.
func turnServerWith(t *testing.T, mutate func(*ServerConfig)) *Server {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp4", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			continue // the TCP port is taken: try another
		}
		cfg := ServerConfig{Conns: []net.PacketConn{pc}, Listeners: []net.Listener{l}, TTL: 5 * time.Second,
			TURN: &TURNConfig{Secret: "sekrit", Embed: &relay.ServerConfig{}}}
		mutate(&cfg)
		s, err := NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	t.Fatal("no port free on both UDP and TCP")
	return nil
}

// tcpClient is a Client that talks to the server over a TCP stream.
type tcpClient struct {
	*Client
	conn  net.Conn
	mu    sync.Mutex
	peers []*Peer
	turn  *TURN
}

func startTCPClient(t *testing.T, srv netip.AddrPort, relayOK bool) *tcpClient {
	t.Helper()
	priv, pub := newKeypair(t)
	return startTCPClientAs(t, srv, relayOK, priv, pub)
}

// startTCPClientAs is startTCPClient with a given identity.
func startTCPClientAs(t *testing.T, srv netip.AddrPort, relayOK bool, priv [32]byte, pub Key) *tcpClient {
	t.Helper()
	conn, err := net.Dial("tcp4", srv.String())
	if err != nil {
		t.Fatal(err)
	}
	tc := &tcpClient{conn: conn}
	var wmu sync.Mutex
	tc.Client = NewClient(ClientConfig{Server: srv, Private: priv, Public: pub,
		Send: func(b []byte, _ netip.AddrPort) {
			wmu.Lock()
			defer wmu.Unlock()
			WriteFrame(conn, b)
		},
		RelayAllowed: func() bool { return relayOK },
		OnPeer: func(p *Peer) {
			tc.mu.Lock()
			tc.peers = append(tc.peers, p)
			tc.mu.Unlock()
		},
		OnTURN: func(tr *TURN) {
			tc.mu.Lock()
			tc.turn = tr
			tc.mu.Unlock()
		},
	})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		br := bufio.NewReader(conn)
		buf := make([]byte, maxPacketSize)
		for {
			b, err := ReadFrame(br, buf)
			if err != nil {
				return
			}
			tc.Handle(b, srv)
		}
	}()
	t.Cleanup(func() { conn.Close(); wg.Wait() })
	return tc
}

func (tc *tcpClient) state() ([]*Peer, *TURN) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return append([]*Peer(nil), tc.peers...), tc.turn
}

// TestTCPRegistrationAndTURN: a client whose UDP is blocked registers over
// TCP at the rendezvous port, gets TURN credentials, allocates a relay
// over TCP at that same port, and is introduced to a UDP client, which
// learns it is TCP-only and allows relay.
func TestTCPRegistrationAndTURN(t *testing.T) {
	leakcheck.Check(t)
	s := turnServer(t)
	tcpc := startTCPClient(t, s.Addr(), true)
	udpc := startClient(t, s.Addr(), nil, nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		tcpc.Tick(time.Now())
		udpc.Tick(time.Now())
		_, tr := tcpc.state()
		_, ok := udpc.Registered()
		if tr != nil && ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no registration")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, tr := tcpc.state()
	if len(tr.Servers) != 2 || tr.Servers[0].Addr != s.Addr() || tr.Servers[1].Transport != relay.TCP || tr.Servers[1].Addr.Port() != s.Addr().Port() {
		t.Fatalf("TURN servers %+v, want UDP and TCP at %v", tr.Servers, s.Addr())
	}
	if !tr.Credentials.Valid("sekrit", time.Now()) {
		t.Fatal("credentials do not check out under the secret")
	}
	if s.Stats().Streams != 1 {
		t.Fatalf("streams %d", s.Stats().Streams)
	}
	// The same credentials allocate over TCP and over UDP, at the
	// rendezvous port.
	for _, srv := range tr.Servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := relay.Allocate(ctx, relay.ClientConfig{Server: srv.Addr, Transport: srv.Transport, Credentials: tr.Credentials, LocalIP: "127.0.0.1"})
		cancel()
		if err != nil {
			t.Fatalf("allocate over %v: %v", srv.Transport, err)
		}
		c.Close()
	}
	if st := s.Relay().Stats(); st.Allocations != 2 {
		t.Fatalf("TURN stats %+v", st)
	}
	// The UDP client asks for the TCP one, which consents by asking back:
	// both hear of each other, the TCP one through its stream.
	udpc.Introduce(tcpc.Client.cfg.Public, time.Now())
	tcpc.Introduce(udpc.cfg.Public, time.Now())
	deadline = time.Now().Add(5 * time.Second)
	for {
		udpc.Tick(time.Now())
		tcpc.Tick(time.Now())
		peers, _ := tcpc.state()
		udpc.mu.Lock()
		n := len(udpc.peers)
		var about *Peer
		if n > 0 {
			about = udpc.peers[0]
		}
		udpc.mu.Unlock()
		if len(peers) > 0 && about != nil {
			if !about.TCP || !about.RelayAllowed {
				t.Fatalf("UDP side was told %+v: want TCP and relay allowed", about)
			}
			if peers[0].TCP || peers[0].RelayAllowed {
				t.Fatalf("TCP side was told %+v", peers[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no introduction")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNoTURNWithoutRelay: a client that forbids relay gets no credentials.
func TestNoTURNWithoutRelay(t *testing.T) {
	leakcheck.Check(t)
	s := turnServer(t)
	c := startTCPClient(t, s.Addr(), false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.Tick(time.Now())
		if _, ok := c.Registered(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no registration")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, tr := c.state(); tr != nil {
		t.Fatalf("credentials issued to a client that forbids relay: %+v", tr)
	}
}

// TestTCPJunkClosed: a TCP connection that starts with neither a frame nor
// TURN is closed and counted; one that never speaks is closed too.
func TestTCPJunkClosed(t *testing.T) {
	leakcheck.Check(t)
	s := turnServer(t)
	c, err := net.Dial("tcp4", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0xC0, 1, 2, 3}) // outside every protocol's first-byte range
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("junk connection answered")
	}
	// A frame with a bad length closes the stream.
	c2, err := net.Dial("tcp4", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte{frameMarker, 0xff, 0xff})
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("bad frame answered")
	}
	if s.Stats().Malformed < 2 {
		t.Fatalf("malformed %d", s.Stats().Malformed)
	}
}

// turnCreds registers a fresh identity over TCP, keeps its registration
// alive until the test ends, and returns the TURN section the server
// answered with.
func turnCreds(t *testing.T, s *Server) *TURN {
	t.Helper()
	priv, pub := newKeypair(t)
	tr, _ := registerForTURN(t, s, priv, pub)
	return tr
}

// registerForTURN registers pub over TCP and keeps the registration alive
// until stop is called (or the test ends); it returns the TURN section the
// server answered with.
func registerForTURN(t *testing.T, s *Server, priv [32]byte, pub Key) (tr *TURN, stop func()) {
	t.Helper()
	c := startTCPClientAs(t, s.Addr(), true, priv, pub)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			c.Tick(time.Now())
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, tr := c.state(); tr != nil {
			return tr, stop
		}
		if time.Now().After(deadline) {
			t.Fatal("no TURN credentials in REGISTERED")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type relayed struct {
	data string
	from netip.AddrPort
}

// turnAllocate makes a UDP allocation on s's embedded relay from local
// address ip.
func turnAllocate(t *testing.T, s *Server, creds relay.Credentials, ip string) (*relay.Client, chan relayed, error) {
	t.Helper()
	ch := make(chan relayed, 64)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := relay.Allocate(ctx, relay.ClientConfig{Server: s.Addr(), Credentials: creds, LocalIP: ip,
		Receive: func(b []byte, from netip.AddrPort) {
			select {
			case ch <- relayed{string(b), from}:
			default:
			}
		}})
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, ch, nil
}

// relayExchange sends msg from a to b's relayed address until b hears it;
// anything else b hears meanwhile is an error.
func relayExchange(t *testing.T, a, b *relay.Client, bch chan relayed, msg string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := a.WriteTo([]byte(msg), b.RelayedAddr()); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-bch:
			if r.data == msg && r.from == a.RelayedAddr() {
				return
			}
			t.Errorf("got %q from %v, waiting for %q from %v", r.data, r.from, msg, a.RelayedAddr())
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%q never arrived", msg)
		}
	}
}

// TestTURNIsNoOpenProxy: with the credentials any registered identity
// gets, the embedded relay gives no way to private, loopback or
// link-local addresses, nor to the server's own ports; relay to relay on
// the server still works. Nothing here is sent off the machine: private
// and link-local peers are refused at CreatePermission, before any
// datagram, and never written to.
func TestTURNIsNoOpenProxy(t *testing.T) {
	leakcheck.Check(t)
	s := turnServer(t) // relayed addresses are 127.0.0.1:port
	a, ach, err := turnAllocate(t, s, turnCreds(t, s).Credentials, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	b, bch, err := turnAllocate(t, s, turnCreds(t, s).Credentials, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range []string{"10.0.0.1:9", "172.16.0.1:9", "192.168.1.1:9", "100.64.0.1:9",
		"169.254.169.254:80", "127.0.0.5:9", "0.0.0.0:9", "224.0.0.1:9", "255.255.255.255:9"} {
		if err := a.Permit(netip.MustParseAddrPort(peer)); err == nil {
			t.Errorf("permission to %s granted", peer)
		}
	}

	// The relay's own IP is granted (relayed addresses have it), so
	// what stops these is the check on each datagram.
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	service := echo.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := a.Permit(service, s.Addr()); err != nil {
		t.Fatalf("permission to the relay's own IP: %v", err)
	}
	before := s.Stats()
	for _, w := range []struct {
		b  []byte
		to netip.AddrPort
	}{{[]byte("to a loopback service"), service}, {[]byte{0xC0, 'j', 'u', 'n', 'k'}, s.Addr()}, {stunRequest(t, 0, 0), s.Addr()}} {
		if err := a.WriteTo(w.b, w.to); err != nil {
			t.Fatal(err)
		}
	}

	// Relay to relay: the datagrams above went out of a's relay socket
	// before these, in order, and loopback delivers at the send.
	if err := b.Permit(a.RelayedAddr()); err != nil {
		t.Fatal(err)
	}
	if err := a.Permit(b.RelayedAddr()); err != nil {
		t.Fatal(err)
	}
	relayExchange(t, a, b, bch, "ping")
	relayExchange(t, b, a, ach, "pong")

	buf := make([]byte, 1500)
	echo.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, from, err := echo.ReadFromUDPAddrPort(buf); err == nil {
		t.Errorf("a loopback service got %q from %v through the relay", buf[:n], from)
	}
	// A direct STUN request answered: the rendezvous has handled all that
	// reached its socket before.
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	if _, _, ok := stunExchange(t, probe, stunRequest(t, 0, 0), s.Addr()); !ok {
		t.Fatal("no answer to a direct STUN request")
	}
	after := s.Stats()
	if after.Malformed != before.Malformed || after.STUNAnswered != before.STUNAnswered+1 {
		t.Errorf("the rendezvous port heard the relay: malformed %d→%d, STUN answered %d→%d (1 is the probe)",
			before.Malformed, after.Malformed, before.STUNAnswered, after.STUNAnswered)
	}
	// 9 permissions and 3 datagrams.
	if st := s.Relay().Stats(); st.DeniedPeers < 12 {
		t.Errorf("relay stats %+v: want at least 12 denied peers", st)
	}
	for range len(ach) {
		if r := <-ach; r.from != b.RelayedAddr() {
			t.Errorf("a got %q from %v", r.data, r.from)
		}
	}
}

// TestTURNCredentialsDieWithRegistration: the embedded relay accepts a
// peer's credentials while it is registered, and refuses them, for new
// allocations and for requests on the one it holds, once the registration
// has expired, long before the credentials' own expiry.
func TestTURNCredentialsDieWithRegistration(t *testing.T) {
	leakcheck.Check(t)
	s := turnServerWith(t, func(c *ServerConfig) { c.TTL = time.Second })
	priv, pub := newKeypair(t)
	tr, stop := registerForTURN(t, s, priv, pub)
	c, _, err := turnAllocate(t, s, tr.Credentials, "127.0.0.1")
	if err != nil {
		t.Fatalf("allocation while registered: %v", err)
	}
	if err := c.Permit(netip.MustParseAddrPort("198.51.100.1:9")); err != nil {
		t.Fatalf("permission while registered: %v", err)
	}
	stop()
	deadline := time.Now().Add(5 * time.Second)
	for s.IsRegistered(pub) {
		if time.Now().After(deadline) {
			t.Fatal("the registration outlived its TTL")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if exp, _ := tr.Credentials.Expires(); time.Until(exp) < time.Hour {
		t.Fatalf("credentials expire at %v: the test wants them valid by time", exp)
	}
	if err := c.Permit(netip.MustParseAddrPort("198.51.100.2:9")); err == nil {
		t.Error("permission granted on the allocation of a peer no longer registered")
	}
	if _, _, err := turnAllocate(t, s, tr.Credentials, "127.0.0.1"); err == nil {
		t.Error("allocation with the credentials of a peer no longer registered")
	}
}

// TestTURNCredentialsBoundToServerKey: credentials from a server do not
// work on another with the same TURN secret and another key (as after a
// restart with a new key), though the peer is registered there too.
func TestTURNCredentialsBoundToServerKey(t *testing.T) {
	leakcheck.Check(t)
	first, second := turnServer(t), turnServer(t)
	priv, pub := newKeypair(t)
	fromFirst, _ := registerForTURN(t, first, priv, pub)
	fromSecond, _ := registerForTURN(t, second, priv, pub)
	if !second.IsRegistered(pub) {
		t.Fatal("not registered on the second server")
	}
	if _, _, err := turnAllocate(t, second, fromFirst.Credentials, "127.0.0.1"); err == nil {
		t.Error("the second server accepted credentials the first issued")
	}
	if _, _, err := turnAllocate(t, second, fromSecond.Credentials, "127.0.0.1"); err != nil {
		t.Errorf("the second server refused its own credentials: %v", err)
	}
	if _, _, err := turnAllocate(t, first, fromFirst.Credentials, "127.0.0.1"); err != nil {
		t.Errorf("the first server refused its own credentials: %v", err)
	}
}

// TestTURNUsernames: the user part is PEERID.TAG, and the embedded
// relay's check takes that form only, for a registered peer, under this
// server's key.
func TestTURNUsernames(t *testing.T) {
	leakcheck.Check(t)
	s := turnServer(t)
	priv, pub := newKeypair(t)
	tr, _ := registerForTURN(t, s, priv, pub)
	tag := keyTag(s.PublicKey())
	if len(tag) != 8 {
		t.Fatalf("tag %q", tag)
	}
	want := peerUser(pub) + "." + tag
	exp, user, _ := strings.Cut(tr.Credentials.Username, ":")
	if user != want {
		t.Fatalf("username %q, want expiry:%s", tr.Credentials.Username, want)
	}
	if _, err := tr.Credentials.Expires(); err != nil {
		t.Fatalf("not coturn's expiry:user form: %v", err)
	}
	_, stranger := newKeypair(t)
	other := Key{1}
	for u, ok := range map[string]bool{
		exp + ":" + want:                true,
		"1:" + want:                     true, // expiry is the relay's own check
		want:                            false,
		exp + ":" + peerUser(pub):       false,
		exp + ":" + peerUser(pub) + ".": false,
		exp + ":" + peerUser(pub) + "." + keyTag(other):        false,
		exp + ":" + strings.ToUpper(peerUser(pub)) + "." + tag: false,
		exp + ":" + peerUser(pub)[:51] + "." + tag:             false,
		exp + ":" + peerUser(pub) + "a." + tag:                 false,
		exp + ":" + peerUser(stranger) + "." + tag:             false, // not registered
		exp + ":" + want + ".x":                                false,
	} {
		if got := s.authorizeTURN(u, nil); got != ok {
			t.Errorf("authorizeTURN(%q) = %v, want %v", u, got, ok)
		}
	}
	// A non-canonical spelling of the same key (its last character's
	// unused bits set) is another username: refused.
	id := []byte(peerUser(pub))
	last := strings.IndexByte("abcdefghijklmnopqrstuvwxyz234567", id[len(id)-1])
	id[len(id)-1] = "abcdefghijklmnopqrstuvwxyz234567"[last|1]
	if string(id) != peerUser(pub) {
		if k, _ := parsePeerUser(string(id)); k == pub && s.authorizeTURN(exp+":"+string(id)+"."+tag, nil) {
			t.Errorf("non-canonical PeerID %s accepted", id)
		}
	}
}
