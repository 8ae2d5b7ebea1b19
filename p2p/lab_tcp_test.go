package p2p

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/netlab"
	"github.com/gamewire/gamewire/internal/testcert"
	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

// TestLabDirectTCP: sites whose networks drop UDP reach each other over
// TCP straight through both NATs (simultaneous open from the listener's
// port), not through the relay: with both sites blocked, with one site
// blocked against a peer whose UDP works, and with relay forbidden, where
// the TCP link alone carries the session. A reliable stream crosses with
// nothing lost or duplicated. (TestLabRelayTCP disables direct TCP: the
// pair falls back to TURN over TCP.)
func TestLabDirectTCP(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	e := newLabEnvWith(t, "dtcp", 0, true)
	cfg := netlab.SiteConfig{NAT: netlab.NATPortRestricted}
	turn := e.srv.Relay()
	cases := []struct {
		name   string
		blockB bool
		ca, cb Config
		queue  int64 // a's link queue bound, if lowered
	}{
		{"both", true, Config{}, Config{}, 0},
		{"one", false, Config{}, Config{}, 0},
		{"norelay", true, Config{DisableRelay: true}, Config{}, 0},
		// One datagram fits a's link queue: bursts overflow it, and the
		// channels send what was dropped again.
		{"backlog", true, Config{}, Config{}, 1300},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sa, sb := e.sitePair(t, tc.name, cfg)
			if err := sa.BlockUDP(true); err != nil {
				t.Fatal(err)
			}
			if err := sb.BlockUDP(tc.blockB); err != nil {
				t.Fatal(err)
			}
			allocs := turn.Stats().Allocations
			p := e.relayPair(t, sa.Hosts[0], sb.Hosts[0], tc.ca, tc.cb)
			defer p.closeAll()
			if tc.queue != 0 {
				p.a.trav.direct.queueBytes.Store(tc.queue)
			}
			took, fail := p.connect(t, DefaultConnectTimeout)
			if fail != SessionErrorNone {
				t.Fatalf("failed with %v", fail)
			}
			on := func(want PathKind) func() bool {
				return func() bool {
					sa, _ := p.a.GetP2PSessionState(p.b.PeerID())
					sb, _ := p.b.GetP2PSessionState(p.a.PeerID())
					return sa.Path == want && sb.Path == want && sa.ConnectionActive && sb.ConnectionActive
				}
			}
			waitFor(t, 10*time.Second, "both sessions on "+PathTCP.String(), on(PathTCP))
			streamOrdered(t, p.a, p.b, 500, -1, nil)
			streamOrdered(t, p.b, p.a, 200, -1, nil)
			if tc.queue != 0 {
				burstOrdered(t, p.a, p.b, 300, 1000)
				if p.a.Stats().TCPDropped == 0 {
					t.Error("no datagram dropped: the backlog was not exercised")
				}
				t.Logf("%d datagrams dropped at a's link", p.a.Stats().TCPDropped)
			}
			if !on(PathTCP)() {
				t.Errorf("sessions left %v during the stream", PathTCP)
			}
			st, _ := p.a.GetP2PSessionState(p.b.PeerID())
			if st.UsingRelay {
				t.Errorf("UsingRelay %v on path %v", st.UsingRelay, st.Path)
			}
			if p.a.Stats().TCPLinks == 0 || p.b.Stats().TCPLinks == 0 {
				t.Errorf("TCP links a %d b %d, want both > 0", p.a.Stats().TCPLinks, p.b.Stats().TCPLinks)
			}
			if tc.ca.DisableRelay && turn.Stats().Allocations != allocs {
				t.Errorf("relay forbidden, yet %d TURN allocations", turn.Stats().Allocations-allocs)
			}
			t.Logf("first message after %v; path %v; TURN allocations %d", took.Round(time.Millisecond), PathTCP, turn.Stats().Allocations-allocs)
		})
	}
}

// burstOrdered sends total reliable messages of size bytes from a to b at
// once and checks that b gets each exactly once, in order.
func burstOrdered(t *testing.T, a, b *Node, total, size int) {
	t.Helper()
	for i := range total {
		m := make([]byte, size)
		binary.BigEndian.PutUint32(m, uint32(i))
		if err := a.SendP2PPacket(b.PeerID(), m, SendReliable, 3); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range total {
		p, err := b.Receive(ctx, 3)
		if err != nil {
			t.Fatalf("message %d never arrived: %v", i, err)
		}
		if got := binary.BigEndian.Uint32(p.Data); got != uint32(i) || len(p.Data) != size {
			t.Fatalf("message %d: got %d (%d bytes)", i, got, len(p.Data))
		}
	}
	extra, cancelExtra := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelExtra()
	if p, err := b.Receive(extra, 3); err == nil {
		t.Errorf("extra message after the burst: %x", p.Data[:4])
	}
}

// TestLabRelayTLS: the only TURN server the rendezvous server lists is
// reached over TLS (turns:, a TURN server of its own beside the rendezvous
// server). A site that drops UDP and its peer relay through it when
// both trust its certificate; a node that does not trust it makes no
// allocation, and the session fails with Timeout.
func TestLabRelayTLS(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	var turns *relay.Server
	var at netip.AddrPort
	var pool *x509.CertPool
	e := newLabEnvServer(t, "tls", 0, func(e *labEnv, cfg *rendezvous.ServerConfig) {
		srv := e.lab.Server()
		at = netip.AddrPortFrom(e.lab.ServerAddrs()[1], 5349)
		cert, roots, err := testcert.New(at.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		pool = roots
		l, err := srv.Listen("tcp4", netip.AddrPortFrom(e.lab.ServerAddrs()[0], labServerPort).String())
		if err != nil {
			t.Fatal(err)
		}
		cfg.Listeners = []net.Listener{l} // rendezvous over TCP
		tl, err := srv.Listen("tcp4", at.String())
		if err != nil {
			t.Fatal(err)
		}
		turns, err = relay.NewServer(relay.ServerConfig{Secret: labTURNSecret,
			Listeners: []net.Listener{tls.NewListener(tl, &tls.Config{Certificates: []tls.Certificate{cert}})},
			RelayIP:   at.Addr(), ListenPacket: srv.ListenPacket, MinPort: 50000, MaxPort: 50999})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { turns.Close() })
		cfg.TURN = &rendezvous.TURNConfig{Secret: labTURNSecret,
			Servers: []rendezvous.TURNServer{{Transport: relay.TLS, Addr: at}}}
	})
	trusted := Config{DisableDirectTCP: true, RelayTLS: &tls.Config{RootCAs: pool, ServerName: at.Addr().String()}}
	cfg := netlab.SiteConfig{NAT: netlab.NATPortRestricted}
	t.Run("trusted", func(t *testing.T) {
		sa, sb := e.sitePair(t, "tls", cfg)
		if err := sa.BlockUDP(true); err != nil {
			t.Fatal(err)
		}
		p := e.relayPair(t, sa.Hosts[0], sb.Hosts[0], trusted, trusted)
		defer p.closeAll()
		took, fail := p.connect(t, DefaultConnectTimeout)
		if fail != SessionErrorNone {
			t.Fatalf("failed with %v", fail)
		}
		streamOrdered(t, p.a, p.b, 200, -1, nil)
		for _, n := range []*Node{p.a, p.b} {
			if _, tr := n.trav.relay.server(); tr != relay.TLS {
				t.Errorf("relay transport %v, want tls", tr)
			}
		}
		st, _ := p.a.GetP2PSessionState(p.b.PeerID())
		if st.Path != PathRelay || !st.UsingRelay {
			t.Errorf("state %+v, want relayed", st)
		}
		if s := turns.Stats(); s.Allocations != 2 {
			t.Errorf("TURN over TLS stats %+v, want two allocations", s)
		}
		t.Logf("relayed over TURN/TLS; first message after %v", took.Round(time.Millisecond))
	})
	t.Run("untrusted", func(t *testing.T) {
		sa, sb := e.sitePair(t, "tlsx", cfg)
		if err := sa.BlockUDP(true); err != nil {
			t.Fatal(err)
		}
		untrusted := trusted
		untrusted.RelayTLS = &tls.Config{RootCAs: x509.NewCertPool(), ServerName: at.Addr().String()}
		untrusted.ConnectTimeout = 3 * time.Second
		p := e.relayPair(t, sa.Hosts[0], sb.Hosts[0], untrusted, trusted)
		defer p.closeAll()
		if _, fail := p.connect(t, untrusted.ConnectTimeout); fail != SessionErrorTimeout {
			t.Fatalf("session ended with %v, want Timeout", fail)
		}
		if st := p.a.Stats(); st.RelayAllocations != 0 || st.RelayFailures == 0 {
			t.Errorf("untrusting node: %d allocations, %d failures", st.RelayAllocations, st.RelayFailures)
		}
	})
}
