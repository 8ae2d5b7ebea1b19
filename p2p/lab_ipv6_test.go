package p2p

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/netlab"
	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

// newLabEnv6 builds a lab whose public segment and server are dual-stack:
// the server answers RFC 5780 in each family (two addresses, two ports:
// a group of four sockets each, ServerConfig.Conns). delay is added to
// every datagram nodes and the server send.
func newLabEnv6(tb testing.TB, name string, delay time.Duration) *labEnv {
	tb.Helper()
	return newLabEnv6With(tb, name, delay, false)
}

// newLabEnv6With is newLabEnv6 with, if turn, the embedded TURN server on
// the first socket of each family (relaying in that family).
func newLabEnv6With(tb testing.TB, name string, delay time.Duration, turn bool) *labEnv {
	tb.Helper()
	e := &labEnv{lab: netlab.NewForTest(tb, netlab.Options{Name: name, IPv6: true}), delay: delay, six: true}
	var conns []net.PacketConn
	for _, a := range [][]netip.Addr{e.lab.ServerAddrs(), e.lab.ServerAddrs6()} {
		network := "udp4"
		if a[0].Is6() {
			network = "udp6"
		}
		for _, ap := range []netip.AddrPort{
			netip.AddrPortFrom(a[0], labServerPort), netip.AddrPortFrom(a[1], labServerPort+1),
			netip.AddrPortFrom(a[0], labServerPort+1), netip.AddrPortFrom(a[1], labServerPort),
		} {
			pc, err := e.lab.Server().ListenPacket(network, ap.String())
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				tb.Fatal(err)
			}
			conns = append(conns, e.wrap(pc))
		}
	}
	cfg := rendezvous.ServerConfig{Conns: conns, MaxPeersPerIP: 4096}
	if turn {
		cfg.TURN = &rendezvous.TURNConfig{Secret: labTURNSecret, Embed: &relay.ServerConfig{
			ListenPacket: e.lab.Server().ListenPacket, MinPort: 49152, MaxPort: 49999,
		}}
	}
	srv, err := rendezvous.NewServer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	e.srv = srv
	tb.Cleanup(func() { srv.Close() })
	return e
}

// rendezvous6 names the server by both its addresses.
func (e *labEnv) rendezvous6() string {
	return fmt.Sprintf("%s@%v,%v", PeerID(e.srv.PublicKey()),
		netip.AddrPortFrom(e.lab.ServerAddrs()[0], labServerPort), netip.AddrPortFrom(e.lab.ServerAddrs6()[0], labServerPort))
}

// node6 starts a node on h with a dual-stack socket (an IPv6 one on an
// IPv6-only host) that knows the server in both families.
func (e *labEnv) node6(tb testing.TB, h *netlab.Host, cfg Config) (*Node, func()) {
	tb.Helper()
	var prefixes []netip.Prefix
	if h.IP.IsValid() {
		prefixes = append(prefixes, netip.PrefixFrom(h.IP, 24))
	}
	if h.IP6.IsValid() {
		prefixes = append(prefixes, netip.PrefixFrom(h.IP6, 64))
	}
	cfg.Rendezvous = e.rendezvous6()
	network := "udp" // dual-stack
	if !h.IP.IsValid() {
		network = "udp6"
	}
	pc, err := h.ListenPacket(network, ":0")
	if err != nil {
		tb.Fatal(err)
	}
	return e.nodeOn(tb, h, cfg, pc, prefixes)
}

// dualRun is one connection and a stream across it.
type dualRun struct {
	connect time.Duration
	remote  netip.AddrPort // a's view of b, at the end
	changes uint64         // path changes on both sides, connect included
}

// runDual connects a (on ha) and b (on hb), streams reliable messages both
// ways for a second, and reports where the session ended and
// how often its path changed.
func (e *labEnv) runDual(t *testing.T, ha, hb *netlab.Host, cfg Config) dualRun {
	t.Helper()
	a, closeA := e.node6(t, ha, cfg)
	defer closeA()
	b, closeB := e.node6(t, hb, cfg)
	defer closeB()
	e.waitRegistered(t, a, b)
	var r dualRun
	r.connect = connectPair(t, a, b, func() {}, func() {})
	for range 10 { // through the settle window's first half, where moves happen
		exchange(t, a, b, false)
		exchange(t, b, a, false)
		time.Sleep(100 * time.Millisecond)
	}
	st, _ := a.GetP2PSessionState(b.PeerID())
	r.remote = st.RemoteAddr
	r.changes = a.Stats().PathChanges + b.Stats().PathChanges
	if st.Path != PathDirect {
		t.Errorf("path %v via %v, want direct", st.Path, st.RemoteAddr)
	}
	return r
}

// TestLabDualStack: dual-stack sites whose IPv4 NATs are easy (both
// families can go direct, so both validate) connect directly every run,
// settle on IPv6 and change path at most twice, on both sides together;
// with IPv6 between them blocked they go direct over IPv4, and with two
// symmetric IPv4 NATs (no direct IPv4 path) over IPv6. The relay is
// forbidden throughout.
func TestLabDualStack(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	e := newLabEnv6(t, "dual", 0)
	easy := netlab.SiteConfig{NAT: netlab.NATPortRestricted, IPv6: netlab.IPv6Dual}
	a, b := e.sitePair(t, "easy", easy)
	hard := netlab.SiteConfig{NAT: netlab.NATSymmetric, IPv6: netlab.IPv6Dual}
	sa, sb := e.sitePair(t, "sym", hard)
	cfg := Config{ConnectTimeout: 10 * time.Second, DisableRelay: true}
	for _, tc := range []struct {
		name   string
		ha, hb *netlab.Host
		block  bool // block IPv6 between the two sites
		want6  bool
	}{
		{"both families", a.Hosts[0], b.Hosts[0], false, true},
		{"IPv6 blocked", a.Hosts[0], b.Hosts[0], true, false},
		{"IPv4 symmetric", sa.Hosts[0], sb.Hosts[0], false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.block {
				if err := a.BlockAddr(tc.hb.IP6, true); err != nil {
					t.Fatal(err)
				}
				defer a.BlockAddr(tc.hb.IP6, false)
			}
			var worst uint64
			var total time.Duration
			runs := directRuns()
			for run := range runs {
				r := e.runDual(t, tc.ha, tc.hb, cfg)
				switch {
				case tc.want6 && r.remote != netip.AddrPortFrom(tc.hb.IP6, r.remote.Port()):
					t.Errorf("run %d: ended on %v, want b's IPv6 address %v", run, r.remote, tc.hb.IP6)
				case !tc.want6 && !r.remote.Addr().Is4():
					t.Errorf("run %d: ended on %v, want IPv4", run, r.remote)
				}
				if r.changes > 2 {
					t.Errorf("run %d: %d path changes, want at most 2", run, r.changes)
				}
				worst, total = max(worst, r.changes), total+r.connect
			}
			t.Logf("%d runs: mean connect %v, at most %d path changes a run", runs, total/time.Duration(runs), worst)
		})
	}
}

// TestLabIPv6Relay: two IPv6-only sites with no direct path between them
// (each blocks the other's address) relay over IPv6: both register over
// IPv6, are told the server's IPv6 TURN address first, and allocate IPv6
// relayed addresses that can reach each other.
func TestLabIPv6Relay(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	e := newLabEnv6With(t, "relay6", 0, true)
	a, b := e.sitePair(t, "only", netlab.SiteConfig{NAT: netlab.NATPortRestricted, IPv6: netlab.IPv6Only})
	for _, blk := range []struct {
		s    *netlab.Site
		peer netip.Addr
	}{{a, b.Hosts[0].IP6}, {b, a.Hosts[0].IP6}} {
		if err := blk.s.BlockAddr(blk.peer, true); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{ConnectTimeout: 10 * time.Second}
	for run := range matrixRuns {
		r := e.runPair(t, a.Hosts[0], b.Hosts[0], cfg, false, false, false)
		switch {
		case !r.connected:
			t.Errorf("run %d: no connection (%v)", run, r.fail)
		case r.state.Path != PathRelay || !r.state.RemoteAddr.Addr().Is6():
			t.Errorf("run %d: path %v via %v, want the relay over IPv6", run, r.state.Path, r.state.RemoteAddr)
		case r.allocs != 2:
			t.Errorf("run %d: %d TURN allocations, want 2", run, r.allocs)
		default:
			t.Logf("run %d: relayed in %v via %v", run, r.connect, r.state.RemoteAddr)
		}
	}
}

// TestLabNATBehaviour6: what NATType reports of each IPv6 kind: a
// dual-stack host's IPv6 address as the server sees it is its own (no
// NAT66) behind a firewall that filters by address and port, beside its
// IPv4 NAT's behaviour; an IPv6-only host behind that firewall is
// Moderate, behind an open one Open.
func TestLabNATBehaviour6(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	e := newLabEnv6(t, "behaviour6", 0)
	apdf, eif := "address-and-port-dependent", "endpoint-independent"
	for _, tc := range []struct {
		name      string
		cfg       netlab.SiteConfig
		typ       NATType
		filtering string // IPv6's
	}{
		{"dual", netlab.SiteConfig{NAT: netlab.NATPortRestricted, IPv6: netlab.IPv6Dual}, NATTypeModerate, apdf},
		{"only", netlab.SiteConfig{NAT: netlab.NATPortRestricted, IPv6: netlab.IPv6Only}, NATTypeModerate, apdf},
		{"open", netlab.SiteConfig{NAT: netlab.NATPortRestricted, IPv6: netlab.IPv6Only, IPv6Open: true}, NATTypeOpen, eif},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := e.lab.AddSite(tc.name, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			h := s.Hosts[0]
			n, closeN := e.node6(t, h, Config{})
			defer closeN()
			var r NATReport
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if r = n.NATType(); r.Type != NATTypeUnknown && r.PortMapTried && r.IPv6Filtering != 0 {
					break
				}
			}
			t.Logf("NAT report: %v", r)
			port := addrOfConn(n.main.pc).Port()
			if r.Type != tc.typ || r.IPv6Public != netip.AddrPortFrom(h.IP6, port) || r.IPv6Filtering.String() != tc.filtering ||
				r.IPv6Mapping.String() != eif {
				t.Errorf("got %v; want %v, IPv6 public %v (the host's own), mapping %s, filtering %s",
					r, tc.typ, netip.AddrPortFrom(h.IP6, port), eif, tc.filtering)
			}
		})
	}
}
