package p2p

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/netlab"
	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

// Relay fallback across real NATs: the lab server runs the embedded TURN
// server beside the rendezvous service (newLabEnvWith).

// relayPair is a connection attempt between nodes with their own configs.
type relayPair struct {
	a, b     *Node
	closeAll func()
}

func (e *labEnv) relayPair(t testing.TB, ha, hb *netlab.Host, ca, cb Config) relayPair {
	t.Helper()
	a, closeA := e.node(t, ha, ca, false)
	b, closeB := e.node(t, hb, cb, false)
	e.waitRegistered(t, a, b)
	return relayPair{a, b, func() { closeA(); closeB() }}
}

// connect has both send and waits for both first messages; it returns
// the time from the first send to b's first delivery, or the session
// error a saw.
func (p relayPair) connect(t testing.TB, timeout time.Duration) (time.Duration, SessionError) {
	t.Helper()
	start := time.Now()
	p.a.SendP2PPacket(p.b.PeerID(), []byte("ping"), SendReliable, 0)
	p.b.SendP2PPacket(p.a.PeerID(), []byte("pong"), SendReliable, 0)
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Second)
	defer cancel()
	if _, err := p.b.Receive(ctx, 0); err != nil {
		return 0, awaitFail(p.a, p.b.PeerID(), 5*time.Second)
	}
	took := time.Since(start)
	if _, err := p.a.Receive(ctx, 0); err != nil {
		t.Fatalf("b's message never reached a: %v", err)
	}
	return took, SessionErrorNone
}

// TestLabRelay: two symmetric NATs, which no punch crosses, connect
// through the TURN relay and carry data both ways; with relay forbidden on
// either side (by Config or by AllowP2PPacketRelay) the same pair fails
// with Timeout at the connect timeout and the TURN server makes no
// allocation.
func TestLabRelay(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	e := newLabEnvWith(t, "relay", 0, true)
	cfg := netlab.SiteConfig{NAT: netlab.NATSymmetric}
	sa, sb := e.sitePair(t, "sym", cfg)
	turn := e.srv.Relay()
	t.Run("relayed", func(t *testing.T) {
		for run := range 3 {
			before := turn.Stats().Allocations
			p := e.relayPair(t, sa.Hosts[0], sb.Hosts[0], Config{ConnectTimeout: 10 * time.Second}, Config{ConnectTimeout: 10 * time.Second})
			took, fail := p.connect(t, 10*time.Second)
			if fail != SessionErrorNone {
				p.closeAll()
				t.Fatalf("run %d: failed with %v", run, fail)
			}
			exchange(t, p.a, p.b, false)
			exchange(t, p.b, p.a, false)
			for _, side := range []struct{ from, to *Node }{{p.a, p.b}, {p.b, p.a}} {
				st, _ := side.from.GetP2PSessionState(side.to.PeerID())
				if st.Path != PathRelay || !st.UsingRelay || !st.ConnectionActive {
					t.Errorf("run %d: state %+v, want an active relayed session", run, st)
				}
			}
			if n := turn.Stats().Allocations - before; n != 2 {
				t.Errorf("run %d: %d TURN allocations, want one per side", run, n)
			}
			if s := p.a.Stats(); s.RelayAllocations != 1 || s.RelayFailures != 0 {
				t.Errorf("run %d: node stats %+v", run, s)
			}
			t.Logf("run %d: relayed, first message after %v", run, took.Round(time.Millisecond))
			p.closeAll()
		}
	})
	forbid := []struct {
		name   string
		ca, cb Config
		allow  [2]bool // AllowP2PPacketRelay per side after start
	}{
		{"config-a", Config{DisableRelay: true}, Config{}, [2]bool{true, true}},
		{"config-b", Config{}, Config{DisableRelay: true}, [2]bool{true, true}},
		{"allow-false-b", Config{}, Config{}, [2]bool{true, false}},
	}
	for _, f := range forbid {
		t.Run("forbidden/"+f.name, func(t *testing.T) {
			const timeout = 3 * time.Second
			f.ca.ConnectTimeout, f.cb.ConnectTimeout = timeout, timeout
			regs := e.srv.Stats().Registrations
			p := e.relayPair(t, sa.Hosts[0], sb.Hosts[0], f.ca, f.cb)
			defer p.closeAll()
			if !f.allow[1] {
				p.b.AllowP2PPacketRelay(false)
				// The server must hear of it before anyone asks for b.
				waitFor(t, 5*time.Second, "b's registration without relay", func() bool {
					return e.srv.Stats().Registrations >= regs+3
				})
			}
			before := turn.Stats().Allocations
			start := time.Now()
			_, fail := p.connect(t, timeout)
			took := time.Since(start)
			if fail != SessionErrorTimeout {
				t.Fatalf("failed with %v, want Timeout", fail)
			}
			if took < timeout {
				t.Errorf("failed after %v, before the %v connect timeout", took, timeout)
			}
			if n := turn.Stats().Allocations - before; n != 0 {
				t.Errorf("%d TURN allocations with relay forbidden", n)
			}
			for _, n := range []*Node{p.a, p.b} {
				if s := n.Stats(); s.RelayAllocations != 0 {
					t.Errorf("node allocated: %+v", s)
				}
			}
		})
	}
}

// TestLabRelaySwitch: a rule drops all traffic between two port-restricted
// sites, so their session starts on the relay; the rule is lifted while a
// reliable stream runs, the session moves to the direct path (PathChanged
// on both sides), and the stream loses and duplicates nothing.
func TestLabRelaySwitch(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	e := newLabEnvWith(t, "switch", 0, true)
	cfg := netlab.SiteConfig{NAT: netlab.NATPortRestricted}
	sa, sb := e.sitePair(t, "sw", cfg)
	if err := sa.BlockAddr(sb.PublicIP, true); err != nil {
		t.Fatal(err)
	}
	p := e.relayPair(t, sa.Hosts[0], sb.Hosts[0], Config{}, Config{})
	defer p.closeAll()
	took, fail := p.connect(t, DefaultConnectTimeout)
	if fail != SessionErrorNone {
		t.Fatalf("failed with %v", fail)
	}
	if st, _ := p.a.GetP2PSessionState(p.b.PeerID()); st.Path != PathRelay {
		t.Fatalf("path %v with direct traffic blocked, want relay", st.Path)
	}
	t.Logf("relayed first message after %v", took.Round(time.Millisecond))

	changes := make(chan PathChanged, 16)
	stop := make(chan struct{})
	var watchers sync.WaitGroup
	for _, n := range []*Node{p.a, p.b} {
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			for {
				select {
				case ev := <-n.Events():
					switch ev := ev.(type) {
					case PathChanged:
						select {
						case changes <- ev:
						default:
						}
					case SessionConnectFail:
						t.Errorf("SessionConnectFail during the stream: %+v", ev)
					}
				case <-stop:
					return
				}
			}
		}()
	}
	defer func() { close(stop); watchers.Wait() }()

	streamOrdered(t, p.a, p.b, 1000, 250, func() error { return sa.BlockAddr(sb.PublicIP, false) })
	waitFor(t, 20*time.Second, "direct path on both sides", func() bool {
		sa, _ := p.a.GetP2PSessionState(p.b.PeerID())
		sb, _ := p.b.GetP2PSessionState(p.a.PeerID())
		return sa.Path == PathDirect && sb.Path == PathDirect && !sa.UsingRelay && !sb.UsingRelay
	})
	seen := map[PeerID]bool{}
	for len(seen) < 2 {
		select {
		case c := <-changes:
			if c.Path == PathDirect {
				seen[c.Peer] = true
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("PathChanged to direct seen for %d of 2 sides", len(seen))
		}
	}
}

// TestLabRelayTCP: a site whose NAT drops all UDP registers over TCP at
// the rendezvous port and connects to a peer through TURN over TCP (the
// peer's side of the relay is UDP); data flows both ways.
func TestLabRelayTCP(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	e := newLabEnvWith(t, "tcp", 0, true)
	cfg := netlab.SiteConfig{NAT: netlab.NATPortRestricted}
	sa, sb := e.sitePair(t, "tcp", cfg)
	if err := sa.BlockUDP(true); err != nil {
		t.Fatal(err)
	}
	noTCP := Config{DisableDirectTCP: true} // else the pair goes straight over TCP (TestLabDirectTCP)
	p := e.relayPair(t, sa.Hosts[0], sb.Hosts[0], noTCP, noTCP)
	defer p.closeAll()
	if p.a.Stats().TCPLinks+p.b.Stats().TCPLinks != 0 {
		t.Error("direct TCP disabled, yet links were made")
	}
	if isRegistered(p.a.trav.rv) || p.a.trav.tcp.client() == nil {
		t.Fatal("a should be registered over TCP only")
	}
	took, fail := p.connect(t, DefaultConnectTimeout)
	if fail != SessionErrorNone {
		t.Fatalf("failed with %v", fail)
	}
	exchange(t, p.a, p.b, false)
	exchange(t, p.b, p.a, false)
	for _, side := range []struct{ from, to *Node }{{p.a, p.b}, {p.b, p.a}} {
		st, _ := side.from.GetP2PSessionState(side.to.PeerID())
		if st.Path != PathRelay || !st.ConnectionActive {
			t.Errorf("state %+v, want an active relayed session", st)
		}
	}
	if _, tr := p.a.trav.relay.server(); tr != relay.TCP {
		t.Errorf("a's relay transport %v, want tcp", tr)
	}
	if _, tr := p.b.trav.relay.server(); tr != relay.UDP {
		t.Errorf("b's relay transport %v, want udp", tr)
	}
	if s := e.srv.Stats(); s.Streams == 0 {
		t.Errorf("server stats %+v: no TCP stream", s)
	}
	if st := e.srv.Relay().Stats(); st.Allocations != 2 {
		t.Errorf("TURN stats %+v, want two allocations", st)
	}
	t.Logf("UDP-blocked site connected through TURN over TCP; first message after %v", took.Round(time.Millisecond))
}

// TestLabCoturn: the rendezvous server hands out credentials for a real
// coturn (Debian's turnserver, started here with use-auth-secret and the
// same secret) instead of its embedded TURN; two symmetric NATs connect
// through it.
func TestLabCoturn(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	var coturn netip.AddrPort
	e := newLabEnvServer(t, "coturn", 0, func(e *labEnv, cfg *rendezvous.ServerConfig) {
		coturn = netip.AddrPortFrom(e.lab.ServerAddrs()[1], 3490) // 3478 and 3479 are the rendezvous server's
		cfg.TURN = &rendezvous.TURNConfig{Secret: labTURNSecret,
			Servers: []rendezvous.TURNServer{{Transport: relay.UDP, Addr: coturn}}}
	})
	netlab.StartCoturn(t, e.lab.Server(), coturn, labTURNSecret)
	cfg := netlab.SiteConfig{NAT: netlab.NATSymmetric}
	sa, sb := e.sitePair(t, "ct", cfg)
	p := e.relayPair(t, sa.Hosts[0], sb.Hosts[0], Config{}, Config{})
	defer p.closeAll()
	took, fail := p.connect(t, DefaultConnectTimeout)
	if fail != SessionErrorNone {
		t.Fatalf("failed with %v", fail)
	}
	exchange(t, p.a, p.b, false)
	exchange(t, p.b, p.a, false)
	for _, n := range []*Node{p.a, p.b} {
		if srv, _ := n.trav.relay.server(); srv != coturn {
			t.Errorf("node allocated on %v, want coturn at %v", srv, coturn)
		}
	}
	if st, _ := p.a.GetP2PSessionState(p.b.PeerID()); st.Path != PathRelay {
		t.Errorf("path %v, want relay", st.Path)
	}
	t.Logf("relayed through coturn; first message after %v", took.Round(time.Millisecond))
}

// BenchmarkLabRelayConnect measures first send to first delivery where no
// direct path exists, so the first message goes through the TURN relay:
// two symmetric NATs (the relay at once), and two port-restricted NATs
// whose direct traffic a rule drops (the relay after the RelayAfter
// budget of 1 s). delay is added to every datagram nodes and the server
// send (TURN included). The target is 2 s (docs/ARCHITECTURE.md, "Performance targets"); run with
// -benchtime=10x or more.
func BenchmarkLabRelayConnect(b *testing.B) {
	netlab.Require(b)
	for _, delay := range []time.Duration{0, 50 * time.Millisecond} {
		for _, kind := range []string{"symmetric", "direct-blocked"} {
			b.Run(fmt.Sprintf("%s/rtt=%v", kind, 2*delay), func(b *testing.B) {
				e := newLabEnvWith(b, "rconn", delay, true)
				cfg := netlab.SiteConfig{NAT: netlab.NATSymmetric}
				if kind == "direct-blocked" {
					cfg.NAT = netlab.NATPortRestricted
				}
				sa, sb := e.sitePair(b, "rc", cfg)
				if kind == "direct-blocked" {
					if err := sa.BlockAddr(sb.PublicIP, true); err != nil {
						b.Fatal(err)
					}
				}
				times := make([]time.Duration, 0, b.N)
				for range b.N {
					p := e.relayPair(b, sa.Hosts[0], sb.Hosts[0], Config{}, Config{})
					took, fail := p.connect(b, DefaultConnectTimeout)
					st, _ := p.a.GetP2PSessionState(p.b.PeerID())
					p.closeAll()
					if fail != SessionErrorNone || st.Path != PathRelay {
						b.Fatalf("failed with %v, path %v", fail, st.Path)
					}
					times = append(times, took)
				}
				slices.Sort(times)
				ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(ms(times[len(times)/2]), "median-ms")
				b.ReportMetric(ms(times[(len(times)*95+99)/100-1]), "p95-ms")
				b.ReportMetric(2000, "target-ms")
			})
		}
	}
}
