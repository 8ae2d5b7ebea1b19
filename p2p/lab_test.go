package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/netlab"
	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/nat/portmap"
	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

// NAT traversal across real Linux NATs built by internal/netlab: nodes
// live in lab namespaces (their sockets are opened there), the rendezvous
// server sits on the lab's public segment with two addresses. These tests
// need root; they skip without it, and fail instead where
// GAMEWIRE_REQUIRE_LAB=1 (CI).

const labServerPort = 3478

// labEnv is a lab with a rendezvous server on it.
type labEnv struct {
	lab   *netlab.Lab
	srv   *rendezvous.Server
	delay time.Duration // added to every datagram nodes and the server send
	six   bool          // dual-stack (newLabEnv6): nodes get dual-stack sockets (node6)
}

func newLabEnv(tb testing.TB, name string, delay time.Duration) *labEnv {
	tb.Helper()
	return newLabEnvWith(tb, name, delay, false)
}

// labTURNSecret is the use-auth-secret of relay labs.
const labTURNSecret = "lab-secret"

// newLabEnvWith builds the lab server; with turn it also runs the
// embedded TURN server on the primary port, over UDP and TCP, and listens
// for rendezvous over TCP there.
func newLabEnvWith(tb testing.TB, name string, delay time.Duration, turn bool) *labEnv {
	tb.Helper()
	return newLabEnvServer(tb, name, delay, func(e *labEnv, cfg *rendezvous.ServerConfig) {
		if turn {
			labTURN(tb, e, cfg)
		}
	})
}

// labTURN adds the embedded TURN server and rendezvous over TCP to cfg.
func labTURN(tb testing.TB, e *labEnv, cfg *rendezvous.ServerConfig) {
	l, err := e.lab.Server().Listen("tcp4", netip.AddrPortFrom(e.lab.ServerAddrs()[0], labServerPort).String())
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Listeners = []net.Listener{l}
	cfg.TURN = &rendezvous.TURNConfig{Secret: labTURNSecret, Embed: &relay.ServerConfig{
		ListenPacket: e.lab.Server().ListenPacket, MinPort: 49152, MaxPort: 49999,
	}}
}

// newLabEnvServer builds the lab server with a configuration setup may
// change.
func newLabEnvServer(tb testing.TB, name string, delay time.Duration, setup func(*labEnv, *rendezvous.ServerConfig)) *labEnv {
	tb.Helper()
	e := &labEnv{lab: netlab.NewForTest(tb, netlab.Options{Name: name}), delay: delay}
	a := e.lab.ServerAddrs()
	// RFC 5780 needs the four combinations of two addresses and two ports
	// (rendezvous.ServerConfig.Conns).
	addrs := []netip.AddrPort{
		netip.AddrPortFrom(a[0], labServerPort), netip.AddrPortFrom(a[1], labServerPort+1),
		netip.AddrPortFrom(a[0], labServerPort+1), netip.AddrPortFrom(a[1], labServerPort),
	}
	var conns []net.PacketConn
	for _, ap := range addrs {
		pc, err := e.lab.Server().ListenPacket("udp4", ap.String())
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			tb.Fatal(err)
		}
		conns = append(conns, e.wrap(pc))
	}
	cfg := rendezvous.ServerConfig{Conns: conns}
	setup(e, &cfg)
	srv, err := rendezvous.NewServer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	e.srv = srv
	tb.Cleanup(func() { srv.Close() }) // before the lab's Close: cleanups run last-in first-out
	return e
}

// sitePair adds two sites of one kind, name-a and name-b.
func (e *labEnv) sitePair(tb testing.TB, name string, cfg netlab.SiteConfig) (a, b *netlab.Site) {
	tb.Helper()
	a, err := e.lab.AddSite(name+"-a", cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if b, err = e.lab.AddSite(name+"-b", cfg); err != nil {
		tb.Fatal(err)
	}
	return a, b
}

func (e *labEnv) wrap(pc net.PacketConn) net.PacketConn {
	if e.delay == 0 {
		return pc
	}
	return newDelayConn(pc, e.delay)
}

// node starts a node on host h. With hideLAN its host candidate is an
// address nobody can reach, as if the peer sat on another LAN behind the
// same NAT. The returned function closes it.
func (e *labEnv) node(tb testing.TB, h *netlab.Host, cfg Config, hideLAN bool) (*Node, func()) {
	tb.Helper()
	if e.six {
		return e.node6(tb, h, cfg)
	}
	laddr, prefix := netip.AddrPortFrom(h.IP, 0).String(), netip.PrefixFrom(h.IP, 24)
	if hideLAN {
		laddr, prefix = ":0", netip.MustParsePrefix("10.99.0.2/24")
	}
	if cfg.Rendezvous == "" {
		cfg.Rendezvous = netip.AddrPortFrom(e.lab.ServerAddrs()[0], labServerPort).String()
	}
	pc, err := h.ListenUDP(laddr)
	if err != nil {
		tb.Fatal(err)
	}
	return e.nodeOn(tb, h, cfg, pc, []netip.Prefix{prefix})
}

// nodeOn starts a node on host h over pc (a socket of h's), with prefixes
// for its interfaces.
func (e *labEnv) nodeOn(tb testing.TB, h *netlab.Host, cfg Config, pc net.PacketConn, prefixes []netip.Prefix) (*Node, func()) {
	tb.Helper()
	cfg.PacketConn = e.wrap(pc)
	cfg.ListenPacket = func(network, address string) (net.PacketConn, error) {
		pc, err := h.ListenPacket(network, address)
		if err != nil {
			return nil, err
		}
		return e.wrap(pc), nil
	}
	cfg.Interfaces = func() ([]netip.Prefix, error) { return prefixes, nil }
	cfg.Dial = h.DialContext
	if cfg.Gateway == nil {
		cfg.Gateway = labGateway(h)
	}
	cfg.ListenTCP = func(network, address string) (ln net.Listener, err error) {
		err = h.Do(func() (err error) {
			ln, err = nat.ListenTCP(network, address)
			return err
		})
		return ln, err
	}
	cfg.DialTCP = func(ctx context.Context, network, laddr, raddr string) (c net.Conn, err error) {
		err = h.Do(func() (err error) {
			c, err = nat.DialTCP(ctx, network, laddr, raddr)
			return err
		})
		return c, err
	}
	if os.Getenv("GW_DEBUG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", h.Name)
	}
	n, err := New(cfg)
	if err != nil {
		cfg.PacketConn.Close()
		tb.Fatal(err)
	}
	return n, func() {
		n.Close()
		cfg.PacketConn.Close()
	}
}

// labGateway is a Config.Gateway that names h's default gateway, the
// lab router of its site: port mapping asks it, never the real network's.
func labGateway(h *netlab.Host) func() (netip.Addr, error) {
	return func() (gw netip.Addr, err error) {
		err = h.Do(func() (err error) {
			gw, err = portmap.DefaultGateway() // the namespace's routing table
			return err
		})
		return gw, err
	}
}

// waitRegistered polls until the server knows every node and every node
// knows it is registered.
func (e *labEnv) waitRegistered(tb testing.TB, nodes ...*Node) {
	tb.Helper()
	known := func() bool {
		for _, n := range nodes {
			if !n.trav.registered() {
				return false
			}
		}
		return registered(e.srv, nodes...)
	}
	for deadline := time.Now().Add(10 * time.Second); !known(); {
		if time.Now().After(deadline) {
			tb.Fatal("nodes did not register with the rendezvous server within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// labRun is one connection attempt between two lab hosts.
type labRun struct {
	connected bool
	connect   time.Duration // first send to first delivery
	fail      SessionError  // when not connected
	state     SessionState  // a's view of b, once connected
	// relayFirst: the session started on the relay (no direct path within
	// the budget) and moved to a direct one later.
	relayFirst bool
	allocs     uint64 // TURN allocations the run made
}

// runPair starts a node on each host, has both send (so each accepts the
// other), and once connected exchanges reliable and unreliable data both
// ways. lossy relaxes the unreliable check.
func (e *labEnv) runPair(t *testing.T, ha, hb *netlab.Host, cfg Config, hideLAN, lossy, wantDirect bool) (r labRun) {
	t.Helper()
	var allocsBefore uint64
	if rs := e.srv.Relay(); rs != nil {
		allocsBefore = rs.Stats().Allocations
	}
	a, closeA := e.node(t, ha, cfg, hideLAN)
	defer closeA()
	b, closeB := e.node(t, hb, cfg, hideLAN)
	defer closeB()
	e.waitRegistered(t, a, b)

	if rs := e.srv.Relay(); rs != nil {
		defer func() { r.allocs = rs.Stats().Allocations - allocsBefore }()
	}
	start := time.Now()
	a.SendP2PPacket(b.PeerID(), []byte("ping"), SendReliable, 0)
	b.SendP2PPacket(a.PeerID(), []byte("pong"), SendReliable, 0)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ConnectTimeout+5*time.Second)
	defer cancel()
	if _, err := b.Receive(ctx, 0); err != nil {
		r.fail = awaitFail(a, b.PeerID(), 5*time.Second)
		return r
	}
	r.connect = time.Since(start)
	if _, err := a.Receive(ctx, 0); err != nil {
		t.Errorf("b's message never reached a: %v", err)
		return r
	}
	r.connected = true
	exchange(t, a, b, lossy)
	exchange(t, b, a, lossy)
	r.state, _ = a.GetP2PSessionState(b.PeerID())
	if wantDirect && r.state.Path == PathRelay {
		// Relayed within the budget: direct attempts go on, and the
		// session must move.
		r.relayFirst = true
		for deadline := time.Now().Add(20 * time.Second); r.state.Path == PathRelay && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			r.state, _ = a.GetP2PSessionState(b.PeerID())
		}
	}
	return r
}

// awaitFail returns the error of the first SessionConnectFail about peer,
// or SessionErrorNone if none comes within d.
func awaitFail(n *Node, peer PeerID, d time.Duration) SessionError {
	deadline := time.After(d)
	for {
		select {
		case ev := <-n.Events():
			if f, ok := ev.(SessionConnectFail); ok && f.Peer == peer {
				return f.Error
			}
		case <-deadline:
			return SessionErrorNone
		}
	}
}

// exchange sends 100 numbered reliable messages and 20 unreliable ones
// from a to b and checks what arrives: every reliable one once, in order;
// every unreliable one (half, on a lossy path).
func exchange(t *testing.T, from, to *Node, lossy bool) {
	t.Helper()
	const reliable, unreliable = 100, 20
	for i := range reliable {
		if err := from.SendP2PPacket(to.PeerID(), binary.BigEndian.AppendUint32(nil, uint32(i)), SendReliable, 1); err != nil {
			t.Errorf("reliable send %d: %v", i, err)
			return
		}
	}
	if lossy {
		// Under loss the reliable burst keeps the congestion window busy
		// with resends, and unreliable messages waiting behind it are
		// dropped by design (channels' UnreliableMaxWait): send them once
		// the reliable ones are through, to measure the link's loss.
		if !receiveReliable(t, from, to, reliable) {
			return
		}
	}
	for i := range unreliable {
		from.SendP2PPacket(to.PeerID(), binary.BigEndian.AppendUint32(nil, uint32(i)), SendUnreliable, 2)
		if lossy {
			// A datagram each: coalesced into one, they would be lost
			// together one time in five.
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !lossy && !receiveReliable(t, from, to, reliable) {
		return
	}
	want := unreliable
	if lossy {
		// 19 % expected loss (10 % on each uplink), and under -race on a
		// busy machine the pacing sleeps stretch; a quarter still proves
		// unreliable delivery works across loss (40 trials a row).
		want = unreliable / 4
	}
	seen := map[uint32]bool{}
	uctx, ucancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer ucancel()
	for len(seen) < unreliable {
		p, err := to.Receive(uctx, 2)
		if err != nil {
			break
		}
		seen[binary.BigEndian.Uint32(p.Data)] = true
	}
	if len(seen) < want {
		t.Errorf("%d of %d unreliable messages arrived, want %d", len(seen), unreliable, want)
	}
}

// receiveReliable checks that to gets from's n reliable messages on
// channel 1, in order.
func receiveReliable(t *testing.T, from, to *Node, n int) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range n {
		p, err := to.Receive(ctx, 1)
		if err != nil {
			t.Errorf("reliable message %d never arrived: %v", i, err)
			return false
		}
		if got := binary.BigEndian.Uint32(p.Data); got != uint32(i) || p.From != from.PeerID() {
			t.Errorf("reliable message %d: got %d from %v", i, got, p.From)
			return false
		}
	}
	return true
}

// labKind is a kind of site in the matrix.
type labKind struct {
	name string
	cfg  netlab.SiteConfig
}

var labKinds = []labKind{
	{"none", netlab.SiteConfig{NAT: netlab.NATNone}},
	{"full-cone", netlab.SiteConfig{NAT: netlab.NATFullCone}},
	{"address-restricted", netlab.SiteConfig{NAT: netlab.NATAddrRestricted}},
	{"port-restricted", netlab.SiteConfig{NAT: netlab.NATPortRestricted}},
	{"symmetric", netlab.SiteConfig{NAT: netlab.NATSymmetric}},
	{"double", netlab.SiteConfig{NAT: netlab.NATPortRestricted, Outer: netlab.NATPortRestricted}},
}

func (k labKind) symmetric() bool {
	return k.cfg.NAT == netlab.NATSymmetric || k.cfg.Outer == netlab.NATSymmetric
}

// portFiltered: the site's NAT filters by remote address and port.
func (k labKind) portFiltered() bool {
	for _, n := range []netlab.NATKind{k.cfg.NAT, k.cfg.Outer} {
		if n == netlab.NATPortRestricted || n == netlab.NATSymmetric {
			return true
		}
	}
	return false
}

// expectation is what a pair must achieve.
type expectation int

const (
	expectDirect   expectation = iota // direct on every run
	expectBirthday                    // direct through the birthday approach on ≥ 95 % of runs
	expectRelay                       // no direct path: relayed on every run
	expectFail                        // no direct path and relay forbidden: a clean Timeout on every run
	expectTCP                         // UDP blocked: direct TCP on every run
)

func expect(a, b labKind) expectation {
	switch {
	case a.symmetric() && b.symmetric():
		return expectRelay
	case a.symmetric() && b.portFiltered(), b.symmetric() && a.portFiltered():
		return expectBirthday
	}
	return expectDirect
}

// matrixRow is a line of the NAT matrix table.
type matrixRow struct {
	pair, expected string
	runs           []labRun
}

func (r matrixRow) connected() int {
	n := 0
	for _, x := range r.runs {
		if x.connected {
			n++
		}
	}
	return n
}

// Run counts: direct and birthday rows run matrixRunsLong times with
// GAMEWIRE_LONG or when the table is written (docs/NAT-MATRIX.md), a few
// times otherwise; the other rows are deterministic.
const (
	matrixRuns     = 3
	matrixRunsLong = 20
)

func directRuns() int {
	if os.Getenv("GAMEWIRE_LONG") != "" || os.Getenv(matrixEnv) != "" {
		return matrixRunsLong
	}
	return matrixRuns
}

// TestLabNATMatrix connects two nodes through the rendezvous server for
// every pair of site kinds (each on its own NAT), with NATs that filter
// inbound datagrams to their own address and with NATs that accept them
// (the conntrack clash), on one NAT with and without hairpinning, and
// across a lossy pair, exchanging reliable and unreliable data. Where a
// direct path is expected the relay is forbidden. It prints the table;
// with GAMEWIRE_NAT_MATRIX=<file> it also writes it there as Markdown (go
// generate ./p2p regenerates docs/NAT-MATRIX.md).
func TestLabNATMatrix(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	e := newLabEnvServer(t, "matrix", 0, func(e *labEnv, cfg *rendezvous.ServerConfig) {
		labTURN(t, e, cfg)
		// A site's public address registers a fresh identity every run,
		// hundreds in all, and closed nodes stay registered until their
		// entries expire.
		cfg.MaxPeersPerIP = 4096
	})
	sites := map[string]*netlab.Site{}
	for _, accept := range []bool{false, true} {
		for _, k := range labKinds {
			if accept && k.cfg.NAT == netlab.NATNone {
				continue
			}
			for _, side := range []string{"a", "b"} {
				cfg := k.cfg
				cfg.AcceptInbound = accept
				name := k.name[:min(len(k.name), 12)] + "-" + side + map[bool]string{true: "x"}[accept]
				s, err := e.lab.AddSite(name, cfg)
				if err != nil {
					t.Fatal(err)
				}
				sites[fmt.Sprint(k.name, side, accept)] = s
			}
		}
	}
	host := func(k labKind, side string, accept bool) *netlab.Host {
		if k.cfg.NAT == netlab.NATNone {
			accept = false
		}
		return sites[fmt.Sprint(k.name, side, accept)].Hosts[0]
	}
	var rows []matrixRow
	for _, accept := range []bool{false, true} {
		for i, ka := range labKinds {
			for _, kb := range labKinds[i:] {
				if accept && ka.cfg.NAT == netlab.NATNone && kb.cfg.NAT == netlab.NATNone {
					continue
				}
				want := expect(ka, kb)
				label, sub := ka.name+" ↔ "+kb.name, ka.name+"/"+kb.name
				if accept {
					label, sub = label+", accepting inbound", sub+"/accept"
				}
				ha, hb := host(ka, "a", accept), host(kb, "b", accept)
				t.Run(sub, func(t *testing.T) {
					rows = append(rows, runMatrixPair(t, e, ha, hb, want, label, false, false))
				})
				if want == expectRelay {
					t.Run(sub+"/relay-forbidden", func(t *testing.T) {
						rows = append(rows, runMatrixPair(t, e, ha, hb, expectFail, label+", relay forbidden", false, false))
					})
				}
			}
		}
	}
	rows = append(rows, sameNATRows(t, e)...)
	rows = append(rows, portMapRows(t, e)...)
	rows = append(rows, lossRow(t, e))
	rows = append(rows, udpBlockedRows(t, e)...)
	rows = append(rows, ipv6Rows(t)...)

	table := formatMatrix(rows)
	t.Log("\n" + table)
	writeMatrix(t, table)
}

// sameNATRows puts both nodes behind one port-restricted NAT: on one LAN
// they meet on their host candidates whether or not the NAT hairpins; on
// (simulated) separate LANs, only a hairpinning NAT gives a direct path.
func sameNATRows(t *testing.T, e *labEnv) []matrixRow {
	var rows []matrixRow
	for _, hairpin := range []bool{false, true} {
		name := "samenat"
		if hairpin {
			name = "hairpin"
		}
		site, err := e.lab.AddSite(name, netlab.SiteConfig{NAT: netlab.NATPortRestricted, Hosts: 2, Hairpin: hairpin})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ hide, forbid bool }{{false, false}, {true, false}, {true, true}} {
			hide := tc.hide
			want := expectDirect
			if hide && !hairpin {
				want = expectRelay
				if tc.forbid {
					want = expectFail
				}
			} else if tc.forbid {
				continue // direct works: forbidding the relay changes nothing
			}
			label := fmt.Sprintf("same NAT, hairpin %s, %s", onOff(hairpin), map[bool]string{false: "same LAN", true: "LAN addresses unusable"}[hide])
			if tc.forbid {
				label += ", relay forbidden"
			}
			t.Run(name+"/hide="+fmt.Sprint(hide)+"/forbid="+fmt.Sprint(tc.forbid), func(t *testing.T) {
				row := runMatrixPair(t, e, site.Hosts[0], site.Hosts[1], want, label, hide, false)
				for _, r := range row.runs {
					if !r.connected || want != expectDirect {
						continue
					}
					tr := r.state.Traversal
					switch {
					case !hide && (tr.Candidate != nat.KindHost || r.state.RemoteAddr.Addr() != site.Hosts[1].IP):
						t.Errorf("same LAN: path %v via %v, want the peer's LAN address", tr.Candidate, r.state.RemoteAddr)
					case hide && r.state.RemoteAddr.Addr() != site.PublicIP:
						t.Errorf("hairpin: path via %v, want the NAT's public address %v", r.state.RemoteAddr, site.PublicIP)
					}
				}
				rows = append(rows, row)
			})
		}
	}
	return rows
}

// portMapRows: a symmetric NAT whose router offers port mapping
// (miniupnpd) against NATs that leave punching no chance (symmetric) or
// only the birthday approach (port-restricted): the mapping is a
// candidate every peer reaches directly.
func portMapRows(t *testing.T, e *labEnv) []matrixRow {
	netlab.RequireMiniUPnPd(t)
	var rows []matrixRow
	for _, accept := range []bool{false, true} {
		x := map[bool]string{true: "x"}[accept]
		mapped, err := e.lab.AddSite("pmap-sym"+x, netlab.SiteConfig{NAT: netlab.NATSymmetric, AcceptInbound: accept})
		if err != nil {
			t.Fatal(err)
		}
		e.startLabUPnPd(t, mapped)
		for _, k := range []labKind{labKinds[4], labKinds[3], labKinds[5]} { // symmetric, port-restricted, double
			cfg := k.cfg
			cfg.AcceptInbound = accept
			peer, err := e.lab.AddSite("pmap-"+k.name[:min(len(k.name), 8)]+x, cfg)
			if err != nil {
				t.Fatal(err)
			}
			label := "symmetric, port mapping ↔ " + k.name
			if accept {
				label += ", accepting inbound"
			}
			// Against a port-restricted NAT the birthday approach may win
			// the race when the mapping came after the first introduction:
			// direct either way.
			t.Run("portmap/"+k.name+"/accept="+fmt.Sprint(accept), func(t *testing.T) {
				rows = append(rows, runMatrixPair(t, e, mapped.Hosts[0], peer.Hosts[0], expectDirect, label, false, false))
			})
		}
	}
	return rows
}

// ipv6Rows run in a lab of their own whose server and public segment are
// dual-stack: sites with global IPv6 behind stateful firewalls beside
// their IPv4 NATs, or IPv6 alone. Where both families can go direct the
// session ends on IPv6; two symmetric IPv4 NATs, which would relay, go
// direct over IPv6.
func ipv6Rows(t *testing.T) []matrixRow {
	e := newLabEnv6(t, "matrix6", 0)
	var rows []matrixRow
	site := func(name string, nat netlab.NATKind, mode netlab.IPv6Mode) *netlab.Host {
		s, err := e.lab.AddSite(name, netlab.SiteConfig{NAT: nat, IPv6: mode})
		if err != nil {
			t.Fatal(err)
		}
		return s.Hosts[0]
	}
	pr, sym := netlab.NATPortRestricted, netlab.NATSymmetric
	dualA, dualB := site("dual-a", pr, netlab.IPv6Dual), site("dual-b", pr, netlab.IPv6Dual)
	symA, symB := site("dsym-a", sym, netlab.IPv6Dual), site("dsym-b", sym, netlab.IPv6Dual)
	v4, onlyA, onlyB := site("v4only", pr, netlab.IPv6None), site("v6only-a", pr, netlab.IPv6Only), site("v6only-b", pr, netlab.IPv6Only)
	// Dual-stack sockets over IPv4 through NATs that accept inbound
	// datagrams (the conntrack clash): priming through an IPv6 socket's
	// IPv4-mapped path. IPv6 between the two is blocked.
	accept := func(name string) (*netlab.Site, *netlab.Host) {
		s, err := e.lab.AddSite(name, netlab.SiteConfig{NAT: pr, IPv6: netlab.IPv6Dual, AcceptInbound: true})
		if err != nil {
			t.Fatal(err)
		}
		return s, s.Hosts[0]
	}
	accSite, accA := accept("dacc-a")
	_, accB := accept("dacc-b")
	if err := accSite.BlockAddr(accB.IP6, true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		label  string
		ha, hb *netlab.Host
		want6  bool
	}{
		{"IPv6: dual-stack ↔ dual-stack, accepting inbound, IPv6 blocked: IPv4 from dual-stack sockets", accA, accB, false},
		{"IPv6: dual-stack ↔ dual-stack (port-restricted IPv4), ends on IPv6", dualA, dualB, true},
		{"IPv6: dual-stack ↔ dual-stack (symmetric IPv4), over IPv6", symA, symB, true},
		{"IPv6: IPv6-only ↔ IPv6-only", onlyA, onlyB, true},
		{"IPv6: IPv6-only ↔ dual-stack", onlyA, dualB, true},
		{"IPv6: IPv4-only ↔ dual-stack, over IPv4", v4, dualB, false},
	} {
		t.Run("ipv6/"+tc.label, func(t *testing.T) {
			row := runMatrixPair(t, e, tc.ha, tc.hb, expectDirect, tc.label, false, false)
			for i, r := range row.runs {
				if r.connected && r.state.RemoteAddr.Addr().Is6() != tc.want6 {
					t.Errorf("run %d: on %v, want IPv6 %v", i, r.state.RemoteAddr, tc.want6)
				}
			}
			rows = append(rows, row)
		})
	}
	return rows
}

// lossRow runs a port-restricted pair with 10 % loss each way on both
// uplinks.
func lossRow(t *testing.T, e *labEnv) matrixRow {
	var row matrixRow
	cfg := netlab.SiteConfig{NAT: netlab.NATPortRestricted, LossPermille: 100}
	a, b := e.sitePair(t, "lossy", cfg)
	t.Run("lossy", func(t *testing.T) {
		row = runMatrixPair(t, e, a.Hosts[0], b.Hosts[0], expectDirect, "port-restricted ↔ port-restricted, 10 % loss on each uplink", false, true)
	})
	return row
}

// udpBlockedRows: sites whose uplink drops all UDP register over TCP and
// reach a peer over direct TCP (simultaneous open), or through TURN over
// TCP when the peer's NAT maps TCP per destination too.
func udpBlockedRows(t *testing.T, e *labEnv) []matrixRow {
	var rows []matrixRow
	site := func(name string, kind netlab.NATKind, block bool) *netlab.Host {
		s, err := e.lab.AddSite(name, netlab.SiteConfig{NAT: kind})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.BlockUDP(block); err != nil {
			t.Fatal(err)
		}
		return s.Hosts[0]
	}
	blockedA := site("udpblk-a", netlab.NATPortRestricted, true)
	blockedB := site("udpblk-b", netlab.NATPortRestricted, true)
	open := site("udpopen", netlab.NATPortRestricted, false)
	sym := site("udpsym", netlab.NATSymmetric, false)
	for _, tc := range []struct {
		peer  *netlab.Host
		label string
		want  expectation
	}{
		{open, "port-restricted, UDP blocked ↔ port-restricted", expectTCP},
		{blockedB, "port-restricted, UDP blocked ↔ port-restricted, UDP blocked", expectTCP},
		{sym, "port-restricted, UDP blocked ↔ symmetric", expectRelay},
		{sym, "port-restricted, UDP blocked ↔ symmetric, relay forbidden", expectFail},
	} {
		t.Run("udp-blocked/"+tc.label, func(t *testing.T) {
			rows = append(rows, runMatrixPair(t, e, blockedA, tc.peer, tc.want, tc.label, false, false))
		})
	}
	return rows
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// runMatrixPair runs one pair as often as its expectation needs and checks
// the outcome.
func runMatrixPair(t *testing.T, e *labEnv, ha, hb *netlab.Host, want expectation, label string, hide, lossy bool) matrixRow {
	t.Helper()
	runs, cfg := matrixRuns, Config{ConnectTimeout: 10 * time.Second}
	switch want {
	case expectDirect, expectBirthday:
		// Direct is expected: the relay would hide a failure.
		runs, cfg.DisableRelay = directRuns(), true
	case expectFail:
		cfg.ConnectTimeout, cfg.DisableRelay = 4*time.Second, true
	}
	row := matrixRow{pair: label, expected: [...]string{"direct", "direct (birthday)", "relay", "fails: Timeout", "direct TCP"}[want]}
	if cfg.DisableRelay && want != expectFail {
		row.expected += ", relay forbidden"
	}
	wantDirect := want == expectDirect || want == expectBirthday || want == expectTCP
	for range runs {
		row.runs = append(row.runs, e.runPair(t, ha, hb, cfg, hide, lossy, wantDirect))
	}
	for i, r := range row.runs {
		switch {
		case want == expectFail && r.connected:
			t.Errorf("run %d connected via %v (%v), want no path", i, r.state.RemoteAddr, r.state.Path)
		case want == expectFail && r.fail != SessionErrorTimeout:
			t.Errorf("run %d: failed with %v, want %v", i, r.fail, SessionErrorTimeout)
		case want == expectFail && r.allocs != 0:
			t.Errorf("run %d: %d TURN allocations with relay forbidden", i, r.allocs)
		case (want == expectDirect || want == expectRelay) && !r.connected:
			t.Errorf("run %d: no connection (%v)", i, r.fail)
		case want == expectRelay && r.connected && (r.state.Path != PathRelay || !r.state.UsingRelay):
			t.Errorf("run %d: path %v, want relay", i, r.state.Path)
		case want == expectRelay:
		case want == expectTCP && r.connected && r.state.Path != PathTCP:
			t.Errorf("run %d: path %v, want tcp", i, r.state.Path)
		case want == expectTCP:
		case r.connected && !r.state.Traversal.Punched:
			t.Errorf("run %d: connected without traversal recording a path: %+v", i, r.state.Traversal)
		case r.connected && r.state.Path != PathDirect:
			t.Errorf("run %d: path %v, want direct", i, r.state.Path)
		case want == expectBirthday && r.connected && !r.state.Traversal.Birthday:
			t.Errorf("run %d: connected via %v without the birthday approach", i, r.state.RemoteAddr)
		}
	}
	if want == expectBirthday {
		rate := float64(row.connected()) / float64(runs)
		t.Logf("birthday approach: %d of %d runs connected (%.0f %%)", row.connected(), runs, 100*rate)
		if rate < 0.95 {
			t.Errorf("birthday approach connected %.0f %% of runs, want ≥ 95 %%", 100*rate)
		}
	}
	return row
}

// formatMatrix renders the rows as a Markdown table.
func formatMatrix(rows []matrixRow) string {
	var b []byte
	b = fmt.Appendf(b, "| pair | expected | connected | path | connect median | connect max | checks sent (median) | birthday sockets | TURN allocations |\n")
	b = fmt.Appendf(b, "|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		var times []time.Duration
		var checks []int
		paths := map[string]int{}
		sockets := 0
		var allocs uint64
		for _, x := range r.runs {
			allocs += x.allocs
			if !x.connected {
				continue
			}
			times = append(times, x.connect)
			checks = append(checks, x.state.Traversal.Checks)
			sockets = max(sockets, x.state.Traversal.Sockets)
			paths[runPathLabel(x)]++
		}
		med, top, chk, path := "–", "–", "–", "none"
		if len(times) > 0 {
			slices.Sort(times)
			slices.Sort(checks)
			med, top = fmtMS(times[len(times)/2]), fmtMS(times[len(times)-1])
			chk = fmt.Sprint(checks[len(checks)/2])
			path = ""
			for _, k := range slices.Sorted(maps.Keys(paths)) {
				if path != "" {
					path += ", "
				}
				path += fmt.Sprintf("%s ×%d", k, paths[k])
			}
		}
		fails := ""
		for _, x := range r.runs {
			if !x.connected && x.fail != SessionErrorNone {
				fails = fmt.Sprintf(" (%v)", x.fail)
				break
			}
		}
		b = fmt.Appendf(b, "| %s | %s | %d/%d%s | %s | %s | %s | %s | %d | %d |\n",
			r.pair, r.expected, r.connected(), len(r.runs), fails, path, med, top, chk, sockets, allocs)
	}
	return string(b)
}

// runPathLabel names the path a run ended on, and the relay if it began
// there.
func runPathLabel(r labRun) string {
	switch {
	case r.state.Path == PathRelay:
		return "relay"
	case r.state.Path == PathTCP && r.relayFirst:
		return "relay, then TCP"
	case r.state.Path == PathTCP:
		return "TCP"
	case r.relayFirst:
		return "relay, then " + pathLabel(r.state.Traversal)
	}
	s := pathLabel(r.state.Traversal)
	if a := r.state.RemoteAddr.Addr(); a.Is6() && !a.Is4In6() {
		s = "IPv6 " + s
	}
	return s
}

func pathLabel(tr Traversal) string {
	s := tr.Candidate.String()
	if tr.Candidate == nat.KindHost {
		s = "host" // a LAN address, or a public one of the peer's own (IPv6, a port mapping)
	}
	if tr.Birthday {
		s += " (birthday)"
	}
	return s
}

func fmtMS(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// MatrixEnv names the variable that makes TestLabNATMatrix write its table.
const matrixEnv = "GAMEWIRE_NAT_MATRIX"

func writeMatrix(t *testing.T, table string) {
	path := os.Getenv(matrixEnv)
	if path == "" {
		return
	}
	doc := `# NAT matrix

Generated by ` + "`TestLabNATMatrix`" + ` (p2p/lab_test.go) on real Linux NATs built by
internal/netlab: network namespaces, veth pairs and nftables, one lab per run, the
rendezvous server on the public segment with two addresses (RFC 5780). Each pair
is two nodes on two different sites of those kinds, fresh sockets every run;
both send a reliable message, then each sends the other 100 reliable and 20
unreliable messages. "Connect" is first send to first delivery; the lab adds no
delay, so it measures the protocol's round trips at LAN speed and the checks'
pacing. Regenerate as root with

    go generate ./p2p

(which runs ` + "`" + matrixEnv + `=../docs/NAT-MATRIX.md go test -count=1 -run TestLabNATMatrix .` + "`" + `).

Site kinds: none (public address), full-cone (EIM, EIF), address-restricted
(EIM, ADF), port-restricted (EIM, APDF: Linux masquerade), symmetric (APDM:
masquerade fully-random), double (port-restricted home NAT behind a
port-restricted carrier NAT). Rows "accepting inbound" run the same pairs
on NATs that accept unsolicited UDP to their own address (OpenWrt fw4, a
bare MASQUERADE rule: netlab's AcceptInbound), where a peer's check that
arrives before ours left moves our mapping (the conntrack clash); nodes
prime their NAT with low-TTL probes first (the public segment counts as 4
routers), and heal a stall from a fresh port. The server also runs the
embedded TURN server (same port, UDP and TCP) and hands the nodes
use-auth-secret credentials. Where a direct path is expected the relay is
forbidden (both nodes set Config.DisableRelay), so a relayed fallback
cannot hide a failure; elsewhere nodes use the default RelayAfter budget of
1 s, or the relay at once when both NATs map per destination. Direct rows
run 20 times. Every connect includes nat.PrimeWait (5 ms) before the first
full check toward a public address. Rows "port mapping" put miniupnpd (UPnP
IGD, NAT-PMP, PCP) on one site's router: its node maps its port and
advertises the mapping. Rows "IPv6" run in a second lab whose public
segment and server are dual-stack (2001:db8:100::/64; the server answers
RFC 5780 in each family): sites have global IPv6 behind a stateful
firewall beside their IPv4 NAT (dual-stack), or IPv6 alone, and nodes name
the server by both addresses.

Path: the kind of the peer's address the session settled on (host: an
address of its own, on its LAN or public: IPv6, a port mapping;
server-reflexive: its public mapping as the server saw it; peer-reflexive:
an address learnt from its probes), "IPv6" when it is one, and whether port
prediction or the birthday approach found it. "relay": the session runs
through TURN. "relay, then ...": no direct path within the budget, so the
first messages went through TURN, and the session moved to the direct path
when the background attempts found it. "TCP": the session runs over a
direct TCP connection the two sides opened to each other at once (TCP
simultaneous open through both NATs). Rows with "UDP blocked" have a site
whose uplink drops all UDP: it registers over TCP at the rendezvous port.
"Connect" counts to the first
delivery on whichever path carried it. "TURN allocations" sums the
embedded server's allocations over the row's runs (two per relayed run, one
per side).

`
	if err := os.WriteFile(path, []byte(doc+table), 0o644); err != nil {
		t.Errorf("writing %s: %v", path, err)
	}
}

// TestLabNATBehaviour checks that a node's RFC 5780 discovery reports
// what each lab NAT really does.
func TestLabNATBehaviour(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	e := newLabEnv(t, "behaviour", 0)
	want := map[string][3]string{ // mapping, filtering, NATType
		"none":               {"endpoint-independent", "endpoint-independent", "Open"},
		"full-cone":          {"endpoint-independent", "endpoint-independent", "Open"},
		"address-restricted": {"endpoint-independent", "address-dependent", "Moderate"},
		"port-restricted":    {"endpoint-independent", "address-and-port-dependent", "Moderate"},
		"symmetric":          {"endpoint-dependent", "address-and-port-dependent", "Strict"},
		"double":             {"endpoint-independent", "address-and-port-dependent", "Moderate"},
	}
	for _, k := range labKinds {
		t.Run(k.name, func(t *testing.T) {
			site, err := e.lab.AddSite(k.name[:min(len(k.name), 12)], k.cfg)
			if err != nil {
				t.Fatal(err)
			}
			n, closeN := e.node(t, site.Hosts[0], Config{}, false)
			defer closeN()
			var b nat.Behaviour
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if b = n.trav.Behaviour(); b.Filtering != nat.FilteringUnknown {
					break
				}
			}
			var r NATReport
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if r = n.NATType(); r.Type != NATTypeUnknown && r.PortMapTried {
					break
				}
			}
			if got := [3]string{b.Mapping.String(), b.Filtering.String(), r.Type.String()}; got != want[k.name] {
				t.Errorf("discovered mapping %s, filtering %s, NAT type %s; want %s, %s, %s", got[0], got[1], got[2], want[k.name][0], want[k.name][1], want[k.name][2])
			}
			if r.NoNAT != (k.cfg.NAT == netlab.NATNone) || r.PortMapping.Valid() || r.Public != b.Mapped {
				t.Errorf("NAT report %v: want no NAT %v, no port mapping, public %v", r, k.cfg.NAT == netlab.NATNone, b.Mapped)
			}
			t.Logf("NAT report: %v", r)
			if b.Mapped.Addr() != site.PublicIP {
				t.Errorf("mapped address %v, want the site's public address %v", b.Mapped, site.PublicIP)
			}
		})
	}
}

// TestLabMappingChange runs a reliable stream between two port-restricted
// sites and, halfway, makes a NAT forget its mappings: the session must
// recover through the rendezvous server with every message delivered once,
// in order, and no SessionConnectFail.
func TestLabMappingChange(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	e := newLabEnv(t, "remap", 0)
	cfg := netlab.SiteConfig{NAT: netlab.NATPortRestricted}
	sa, sb := e.sitePair(t, "remap", cfg)
	t.Run("new-port", func(t *testing.T) {
		moved := e.streamAcross(t, sa.Hosts[0], sb.Hosts[0], sa.ChangeMappings)
		if !moved {
			t.Error("b still sees a at its old public port after the NAT changed its mappings")
		}
	})
	t.Run("flush-conntrack", func(t *testing.T) {
		e.streamAcross(t, sa.Hosts[0], sb.Hosts[0], func() error {
			return errors.Join(sa.FlushConntrack(), sb.FlushConntrack())
		})
	})
}

// streamAcross connects nodes on ha and hb, streams numbered reliable
// messages from a to b and calls disrupt a third of the way through. It
// reports whether b's view of a's address changed.
func (e *labEnv) streamAcross(t *testing.T, ha, hb *netlab.Host, disrupt func() error) (moved bool) {
	const (
		total = 1500 // 7.5 s of stream
	)
	a, closeA := e.node(t, ha, Config{}, false)
	defer closeA()
	b, closeB := e.node(t, hb, Config{}, false)
	defer closeB()
	e.waitRegistered(t, a, b)
	a.SendP2PPacket(b.PeerID(), []byte("hello"), SendReliable, 0)
	b.SendP2PPacket(a.PeerID(), []byte("hello"), SendReliable, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, n := range []*Node{a, b} {
		if _, err := n.Receive(ctx, 0); err != nil {
			t.Fatalf("connecting: %v", err)
		}
	}
	before, _ := b.GetP2PSessionState(a.PeerID())

	fails := make(chan SessionConnectFail, 16)
	stop := make(chan struct{})
	var watchers sync.WaitGroup
	for _, n := range []*Node{a, b} {
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			for {
				select {
				case ev := <-n.Events():
					if f, ok := ev.(SessionConnectFail); ok {
						select {
						case fails <- f:
						default: // one is enough to fail the test
						}
					}
				case <-stop:
					return
				}
			}
		}()
	}
	defer func() { close(stop); watchers.Wait() }()

	gap := streamOrdered(t, a, b, total, total/3, disrupt)
	select {
	case f := <-fails:
		t.Errorf("SessionConnectFail during the stream: %+v", f)
	default:
	}
	if gap >= pathDeadAfter {
		t.Errorf("the stream stalled for %v: the broken path should be noticed from overdue acknowledgements, before %v of silence", gap, pathDeadAfter)
	}
	after, _ := b.GetP2PSessionState(a.PeerID())
	t.Logf("a's address as b sees it: %v before, %v after; longest gap between deliveries %v", before.RemoteAddr, after.RemoteAddr, gap.Round(time.Millisecond))
	return after.RemoteAddr.Port() != before.RemoteAddr.Port()
}

// streamOrdered sends total numbered reliable messages from a to b, 200 a
// second, calls disrupt just before message disruptAt, and checks that b
// gets every one exactly once and in order. It returns the longest wait
// between two deliveries.
func streamOrdered(t *testing.T, a, b *Node, total, disruptAt int, disrupt func() error) (gap time.Duration) {
	t.Helper()
	const interval = 5 * time.Millisecond
	sendErr := make(chan error, 1)
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := range total {
			if i == disruptAt {
				if err := disrupt(); err != nil {
					sendErr <- fmt.Errorf("disrupting the path: %w", err)
					return
				}
			}
			if err := a.SendP2PPacket(b.PeerID(), binary.BigEndian.AppendUint32(nil, uint32(i)), SendReliable, 1); err != nil {
				sendErr <- fmt.Errorf("send %d: %w", i, err)
				return
			}
			<-tick.C
		}
		sendErr <- nil
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	last := time.Now()
	for i := range total {
		p, err := b.Receive(ctx, 1)
		if err != nil {
			t.Fatalf("message %d never arrived: %v", i, err)
		}
		now := time.Now()
		gap, last = max(gap, now.Sub(last)), now
		if got := binary.BigEndian.Uint32(p.Data); got != uint32(i) {
			t.Fatalf("message %d: got %d (lost or duplicated)", i, got)
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	// Anything beyond the stream would be a duplicate.
	extra, cancelExtra := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelExtra()
	if p, err := b.Receive(extra, 1); err == nil {
		t.Errorf("extra message after the stream: %x", p.Data)
	}
	return gap
}

// BenchmarkLabConnect measures first send to first delivery between two
// nodes behind port-restricted NATs (Linux masquerade) that have
// registered with the rendezvous server but never talked: introduction,
// hole punching, handshake and the first reliable message. delay is added
// to every datagram the nodes and the server send, so one round trip to
// the server or between the peers is twice it. It reports the median and
// p95 over b.N connections and the target of docs/ARCHITECTURE.md, "Performance targets" (3 round
// trips to the server + 1 between the peers); run with -benchtime=20x or
// more.
func BenchmarkLabConnect(b *testing.B) {
	netlab.Require(b)
	delays := []time.Duration{0, 10 * time.Millisecond, 50 * time.Millisecond}
	for _, accept := range []bool{false, true} {
		for _, delay := range delays {
			benchLabConnect(b, accept, delay)
		}
	}
	for _, delay := range delays {
		benchLabConnectPortMap(b, delay)
	}
	for _, delay := range delays {
		benchLabConnectIPv6(b, delay)
	}
}

// benchLabConnectIPv6 times connects between two dual-stack sites (IPv6
// behind stateful firewalls, IPv4 behind port-restricted NATs): the
// session starts on whichever path validates first and settles on IPv6.
func benchLabConnectIPv6(b *testing.B, delay time.Duration) {
	b.Run(fmt.Sprintf("nat=dual-stack/rtt=%v", 2*delay), func(b *testing.B) {
		e := newLabEnv6(b, "conn6", delay)
		cfg := netlab.SiteConfig{NAT: netlab.NATPortRestricted, IPv6: netlab.IPv6Dual}
		sa, sb := e.sitePair(b, "conn", cfg)
		times := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			times = append(times, e.connectOnce(b, sa.Hosts[0], sb.Hosts[0]))
		}
		reportConnect(b, times, delay)
	})
}

// benchLabConnectPortMap times connects across two symmetric NATs, one of
// whose routers grants a port mapping (miniupnpd).
func benchLabConnectPortMap(b *testing.B, delay time.Duration) {
	b.Run(fmt.Sprintf("nat=symmetric-portmap/rtt=%v", 2*delay), func(b *testing.B) {
		netlab.RequireMiniUPnPd(b)
		e := newLabEnv(b, "connpm", delay)
		sa, sb := e.sitePair(b, "conn", netlab.SiteConfig{NAT: netlab.NATSymmetric})
		e.startLabUPnPd(b, sa)
		times := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			a, closeA := e.node(b, sa.Hosts[0], Config{DisableRelay: true}, false)
			nb, closeB := e.node(b, sb.Hosts[0], Config{DisableRelay: true}, false)
			waitPortMapped(b, a)
			e.waitRegistered(b, a, nb)
			times = append(times, connectPair(b, a, nb, b.StartTimer, b.StopTimer))
			closeA()
			closeB()
		}
		reportConnect(b, times, delay)
	})
}

// reportConnect reports the median and 95th percentile of times, and the
// target: 4 round trips.
func reportConnect(b *testing.B, times []time.Duration, delay time.Duration) {
	slices.Sort(times)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(times[len(times)/2]), "median-ms")
	b.ReportMetric(ms(times[(len(times)*95+99)/100-1]), "p95-ms")
	b.ReportMetric(ms(8*delay), "target-ms")
}

// benchLabConnect times connects across two port-restricted NATs that
// filter inbound datagrams to their own address or (accept) take them:
// the conntrack clash, which priming avoids.
func benchLabConnect(b *testing.B, accept bool, delay time.Duration) {
	b.Run(fmt.Sprintf("nat=%s/rtt=%v", map[bool]string{false: "filtering", true: "accepting"}[accept], 2*delay), func(b *testing.B) {
		e := newLabEnv(b, "connect", delay)
		cfg := netlab.SiteConfig{NAT: netlab.NATPortRestricted, AcceptInbound: accept}
		sa, sb := e.sitePair(b, "conn", cfg)
		times := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			d := e.connectOnce(b, sa.Hosts[0], sb.Hosts[0])
			times = append(times, d)
		}
		reportConnect(b, times, delay)
	})
}

// connectOnce starts a node on each host, waits for both to register,
// and times a's first reliable message until b receives it (b accepts on
// its SessionRequest).
func (e *labEnv) connectOnce(b *testing.B, ha, hb *netlab.Host) time.Duration {
	a, closeA := e.node(b, ha, Config{}, false)
	defer closeA()
	nb, closeB := e.node(b, hb, Config{}, false)
	defer closeB()
	e.waitRegistered(b, a, nb)
	return connectPair(b, a, nb, b.StartTimer, b.StopTimer)
}

// connectPair times a's first reliable message to nb until nb receives it
// (nb accepts on its SessionRequest), between start() and stop().
func connectPair(tb testing.TB, a, nb *Node, start, stop func()) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			select {
			case ev := <-nb.Events():
				if r, ok := ev.(SessionRequest); ok {
					nb.AcceptP2PSessionWithUser(r.Peer)
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() { cancel(); <-accepted }()
	start()
	began := time.Now()
	a.SendP2PPacket(nb.PeerID(), []byte("first"), SendReliable, 0)
	_, err := nb.Receive(ctx, 0)
	d := time.Since(began)
	stop()
	if err != nil {
		tb.Fatalf("first message never arrived: %v", err)
	}
	return d
}

// TestLabKeepalive: behind NATs that forget an idle UDP mapping after 3 s,
// an idle session's keepalives hold the path: after 10 s of silence from
// the application a message goes straight through, with no re-punch.
func TestLabKeepalive(t *testing.T) {
	netlab.Require(t)
	leakcheck.Check(t)
	e := newLabEnv(t, "keepalive", 0)
	cfg := netlab.SiteConfig{NAT: netlab.NATPortRestricted, UDPTimeout: 3 * time.Second}
	sa, sb := e.sitePair(t, "keep", cfg)
	a, closeA := e.node(t, sa.Hosts[0], Config{}, false)
	defer closeA()
	b, closeB := e.node(t, sb.Hosts[0], Config{}, false)
	defer closeB()
	e.waitRegistered(t, a, b)
	a.SendP2PPacket(b.PeerID(), []byte("hello"), SendReliable, 0)
	b.SendP2PPacket(a.PeerID(), []byte("hello"), SendReliable, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range []*Node{a, b} {
		if _, err := n.Receive(ctx, 0); err != nil {
			t.Fatalf("connecting: %v", err)
		}
	}
	before, _ := b.GetP2PSessionState(a.PeerID())
	time.Sleep(10 * time.Second)
	start := time.Now()
	a.SendP2PPacket(b.PeerID(), []byte("still there?"), SendReliable, 0)
	if _, err := b.Receive(ctx, 0); err != nil {
		t.Fatalf("after the idle time: %v", err)
	}
	took := time.Since(start)
	after, _ := b.GetP2PSessionState(a.PeerID())
	if r := a.Stats().Repunches + b.Stats().Repunches; r != 0 {
		t.Errorf("%d re-punches: keepalives did not hold the NAT mappings", r)
	}
	if after.RemoteAddr != before.RemoteAddr || took > 500*time.Millisecond {
		t.Errorf("after 10 s idle: delivered in %v via %v (was %v)", took, after.RemoteAddr, before.RemoteAddr)
	}
}
