package rendezvous

import (
	"bufio"
	"context"
	"crypto/rand"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/relay"
)

func TestWireRelayFields(t *testing.T) {
	var k SessionKey
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
		var k SessionKey
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
		s, err := NewServer(ServerConfig{Conns: []net.PacketConn{pc}, Listeners: []net.Listener{l}, TTL: 5 * time.Second,
			TURN: &TURNConfig{Secret: "sekrit", Embed: &relay.ServerConfig{}}})
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
	conn, err := net.Dial("tcp4", srv.String())
	if err != nil {
		t.Fatal(err)
	}
	priv, pub := newKeypair(t)
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
	// The UDP client asks for the TCP one: both hear of each other, the
	// TCP one through its stream.
	udpc.Introduce(tcpc.Client.cfg.Public, time.Now())
	deadline = time.Now().Add(5 * time.Second)
	for {
		udpc.Tick(time.Now())
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
	c2.Write([]byte{FrameMarker, 0xff, 0xff})
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("bad frame answered")
	}
	if s.Stats().Malformed < 2 {
		t.Fatalf("malformed %d", s.Stats().Malformed)
	}
}
