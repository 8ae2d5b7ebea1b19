package p2p

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-reuseport"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// lanUnit is LAN discovery on a node that runs nothing: its checks, table
// and counters, driven by hand with explicit times.
func lanUnit(t testing.TB, app string) *lanDiscovery {
	t.Helper()
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	n := &Node{cfg: Config{AppID: app}, id: id, appHash: appHash(app), log: log,
		events: newEventQueue(DefaultEventQueueSize, log), done: make(chan struct{})}
	return newLAN(n, netip.MustParseAddr("10.0.0.1"))
}

// beaconFrom is a valid beacon of app from a fresh identity, or from peer.
func beaconFrom(app string, peer PeerID, at time.Time) []byte {
	key := lanKey(app)
	return encodeLANBeacon(&key, appHash(app), peer, uint64(at.UnixMilli()))
}

func newPeerID(t testing.TB) PeerID {
	t.Helper()
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id.PeerID()
}

// unitStats are the LAN counters of a lanUnit (its node has no paths or
// queues for Stats to read).
func unitStats(l *lanDiscovery) NodeStats {
	c := &l.n.stats
	return NodeStats{LANSent: c.lanSent.Load(), LANHeard: c.lanHeard.Load(), LANDropped: c.lanDropped.Load(),
		LANRefused: c.lanRefused.Load(), LANErrors: c.lanErrors.Load()}
}

// queued takes the next event a lanUnit queued; nil if none.
func queued(l *lanDiscovery) Event {
	select {
	case e := <-l.n.events.ch:
		return e
	default:
		return nil
	}
}

var lanT0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// TestLANBeaconWire: the layout round trips, and every kind of bad
// datagram gets its verdict and is counted, never listed.
func TestLANBeaconWire(t *testing.T) {
	l := lanUnit(t, "wire")
	peer := newPeerID(t)
	b := beaconFrom("wire", peer, lanT0)
	if len(b) != lanBeaconLen || b[0] != 0xB0 || b[1] != 1 {
		t.Fatalf("beacon % x", b)
	}
	if !bytes.Equal(b[2:18], l.n.appHash[:]) || !bytes.Equal(b[18:50], peer[:]) {
		t.Fatal("app hash or PeerID not where the layout puts them")
	}
	got, ms, v := openLANBeacon(b, l.n.appHash, &l.key)
	if v != lanOK || got != peer || ms != uint64(lanT0.UnixMilli()) {
		t.Fatalf("open: %v %v %d", v, got, ms)
	}

	src := netip.MustParseAddrPort("10.0.0.2:4000")
	mutate := func(f func([]byte) []byte) []byte { return f(slices.Clone(b)) }
	cases := []struct {
		name string
		b    []byte
		src  netip.AddrPort
		at   time.Time
		want lanVerdict
	}{
		{"empty", nil, src, lanT0, lanMalformed},
		{"short", b[:lanBeaconLen-1], src, lanT0, lanMalformed},
		{"long", append(slices.Clone(b), 0), src, lanT0, lanMalformed},
		{"type", mutate(func(b []byte) []byte { b[0] = 0x80; return b }), src, lanT0, lanMalformed},
		{"version", mutate(func(b []byte) []byte { b[1] = 2; return b }), src, lanT0, lanMalformed},
		{"other app", beaconFrom("other", peer, lanT0), src, lanT0, lanOtherApp},
		{"app hash changed", mutate(func(b []byte) []byte { b[5] ^= 1; return b }), src, lanT0, lanOtherApp},
		{"PeerID changed", mutate(func(b []byte) []byte { b[20] ^= 1; return b }), src, lanT0, lanBadMAC},
		{"time changed", mutate(func(b []byte) []byte { b[50] ^= 1; return b }), src, lanT0, lanBadMAC},
		{"MAC changed", mutate(func(b []byte) []byte { b[73] ^= 0x80; return b }), src, lanT0, lanBadMAC},
		{"keyed by the hash it carries", func() []byte {
			var key [32]byte
			copy(key[:], l.n.appHash[:])
			return encodeLANBeacon(&key, l.n.appHash, peer, uint64(lanT0.UnixMilli()))
		}(), src, lanT0, lanBadMAC},
		{"too old", b, src, lanT0.Add(lanMaxSkew + time.Millisecond), lanStale},
		{"from the future", b, src, lanT0.Add(-lanMaxSkew - time.Millisecond), lanStale},
		{"time past int64", mutate(func(b []byte) []byte {
			return encodeLANBeacon(&l.key, l.n.appHash, peer, 1<<63)
		}), src, lanT0, lanStale},
		{"from a multicast source", b, netip.MustParseAddrPort("239.255.71.87:4000"), lanT0, lanMalformed},
		{"from port 0", b, netip.MustParseAddrPort("10.0.0.2:0"), lanT0, lanMalformed},
		{"ours", beaconFrom("wire", l.n.id.PeerID(), lanT0), src, lanT0, lanOwn},
	}
	dropped := uint64(0)
	for _, c := range cases {
		if v := l.receive(c.b, c.src, c.at); v != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, v, c.want)
		}
		if c.want != lanOwn {
			dropped++
		}
	}
	if st := unitStats(l); st.LANDropped != dropped || st.LANHeard != 0 {
		t.Fatalf("dropped %d heard %d, want %d and 0", st.LANDropped, st.LANHeard, dropped)
	}
	if l.peers.size() != 0 || len(l.n.events.ch) != 0 {
		t.Fatal("a bad beacon was listed")
	}

	// Within the window both ways: taken. Then a copy of it is a
	// duplicate (not counted), an older one a replay, a newer one a
	// refresh; a new address is the same peer's.
	if v := l.receive(b, src, lanT0.Add(lanMaxSkew)); v != lanNew {
		t.Fatalf("fresh beacon: %d", v)
	}
	if v := l.receive(b, src, lanT0.Add(time.Second)); v != lanDuplicate {
		t.Fatalf("copy: %d", v)
	}
	if v := l.receive(beaconFrom("wire", peer, lanT0.Add(-time.Second)), src, lanT0.Add(time.Second)); v != lanReplayed {
		t.Fatalf("older beacon: %d", v)
	}
	if v := l.receive(beaconFrom("wire", peer, lanT0.Add(2*time.Second)), src, lanT0.Add(2*time.Second)); v != lanRefreshed {
		t.Fatalf("newer beacon: %d", v)
	}
	v6 := netip.MustParseAddrPort("[fe80::1%eth0]:4000")
	if v := l.receive(beaconFrom("wire", peer, lanT0.Add(2*time.Second)), v6, lanT0.Add(2*time.Second)); v != lanRefreshed {
		t.Fatalf("second address: %d", v)
	}
	peers := l.peers.list(lanT0.Add(2 * time.Second))
	if len(peers) != 1 || peers[0].Peer != peer || !slices.Equal(peers[0].Addrs, []netip.AddrPort{src, v6}) {
		t.Fatalf("listed %+v", peers)
	}
	if st := unitStats(l); st.LANHeard != 3 || st.LANDropped != dropped+1 {
		t.Fatalf("heard %d dropped %d", st.LANHeard, st.LANDropped)
	}
	if e := queued(l); e != (LANPeerFound{Peer: peer, Addr: src}) || len(l.n.events.ch) != 0 {
		t.Fatalf("events: %#v and %d more", e, len(l.n.events.ch))
	}
}

// FuzzLANBeacon feeds the discovery port anything: no panic, nothing but
// an intact beacon of this AppID is ever listed, and the table stays
// within its bound.
func FuzzLANBeacon(f *testing.F) {
	l := lanUnit(f, "fuzz")
	at := lanT0
	peer := newPeerID(f)
	good := beaconFrom("fuzz", peer, at)
	f.Add(good, uint16(4000), int64(0))
	f.Add(good[:40], uint16(4000), int64(0))
	f.Add(beaconFrom("other", peer, at), uint16(1), int64(0))
	f.Add(beaconFrom("fuzz", peer, at.Add(-3*time.Minute)), uint16(4000), int64(time.Second))
	f.Add([]byte{0xB0, 1}, uint16(0), int64(-1))
	f.Fuzz(func(t *testing.T, b []byte, port uint16, offset int64) {
		src := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.7"), port)
		before := l.peers.size()
		v := l.receive(b, src, at.Add(time.Duration(offset)))
		if v == lanNew || v == lanRefreshed || v == lanDuplicate {
			p, ms, ok := openLANBeacon(b, l.n.appHash, &l.key)
			if ok != lanOK || !bytes.Equal(encodeLANBeacon(&l.key, l.n.appHash, p, ms), b) {
				t.Fatalf("verdict %d for a datagram that is no beacon of ours: % x", v, b)
			}
		}
		if n := l.peers.size(); n > lanMaxPeers || (v != lanNew && n > before) {
			t.Fatalf("table %d -> %d on verdict %d", before, n, v)
		}
		for len(l.n.events.ch) > 0 {
			<-l.n.events.ch
		}
	})
}

// fakePeer is the i-th identity of a flood: a beacon needs no key.
func fakePeer(i int) PeerID {
	var p PeerID
	binary.LittleEndian.PutUint64(p[:], uint64(i)+1)
	p[31] = 0xFF
	return p
}

// TestLANFlood: fake peers with valid MACs (the attacker knows the
// AppID), from one source IP and from tens of thousands of spoofed ones.
// The table and the events stay bounded, everything refused is counted,
// and a peer listed before the flood stays listed throughout.
func TestLANFlood(t *testing.T) {
	l := lanUnit(t, "flood")
	now := lanT0
	friend := newPeerID(t)
	friendAddr := netip.MustParseAddrPort("10.0.0.2:5000")
	if v := l.receive(beaconFrom("flood", friend, now), friendAddr, now); v != lanNew {
		t.Fatalf("friend: %d", v)
	}
	if e := queued(l); e != (LANPeerFound{Peer: friend, Addr: friendAddr}) {
		t.Fatalf("event %#v", e)
	}
	next := 0
	step := func(d time.Duration, src netip.AddrPort, peer PeerID) {
		now = now.Add(d)
		l.receive(beaconFrom("flood", peer, now), src, now)
		if now.Sub(lanT0)%(2*time.Second) < d { // the friend's and the sender's rounds
			l.receive(beaconFrom("flood", friend, now), friendAddr, now)
			l.peers.expire(now)
		}
		if n := l.peers.size(); n > lanMaxPeers {
			t.Fatalf("table holds %d peers, bound %d", n, lanMaxPeers)
		}
	}

	// One source, 1,000 identities in a second: its rate, then its share
	// of the table.
	one := netip.MustParseAddr("10.0.0.66")
	for i := range 1000 {
		step(time.Millisecond, netip.AddrPortFrom(one, uint16(1000+i)), fakePeer(next))
		next++
	}
	if k := l.peers.fromLocked(one); k == 0 || k > lanPeersPerIP {
		t.Fatalf("one source holds %d peers, bound %d", k, lanPeersPerIP)
	}

	// 40,000 identities from as many spoofed sources over 20 s.
	spoofed := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1 + byte(i>>16), byte(i >> 8), byte(i)}), 6000)
	}
	for i := range 40000 {
		step(500*time.Microsecond, spoofed(i), fakePeer(next))
		next++
	}
	found := len(l.n.events.ch)
	// Newcomers are admitted at lanNewPerSecond with a burst of four
	// times that, over the 21 s.
	if maxFound := 4*lanNewPerSecond + 22*lanNewPerSecond; found > maxFound {
		t.Fatalf("%d LANPeerFound events, want at most %d", found, maxFound)
	}

	// 1,000 identities kept alive for 30 s, each beaconing every 2 s from
	// its own spoofed source: the table fills and stays at its bound.
	for i := range 15000 {
		k := i % 1000
		step(2*time.Millisecond, spoofed(50000+k), fakePeer(next+k))
	}
	st := unitStats(l)
	t.Logf("table %d, %d LANPeerFound; heard %d, refused %d", l.peers.size(), len(l.n.events.ch), st.LANHeard, st.LANRefused)
	if l.peers.size() != lanMaxPeers {
		t.Fatalf("table holds %d peers, want it full at %d", l.peers.size(), lanMaxPeers)
	}
	if st.LANRefused < 40000 || st.LANHeard+st.LANRefused+st.LANDropped < 56000 {
		t.Fatalf("heard %d, refused %d, dropped %d of 56,001", st.LANHeard, st.LANRefused, st.LANDropped)
	}
	if !slices.ContainsFunc(l.peers.list(now), func(p LANPeer) bool { return p.Peer == friend }) {
		t.Fatal("the flood pushed a listed peer out")
	}
}

// TestLANExpiry: a peer heard once is listed for lanPeerTTL, then not;
// heard again it is new again (LANPeerFound once more).
func TestLANExpiry(t *testing.T) {
	l := lanUnit(t, "ttl")
	peer := newPeerID(t)
	src := netip.MustParseAddrPort("10.0.0.2:4000")
	l.receive(beaconFrom("ttl", peer, lanT0), src, lanT0)
	if p := l.peers.list(lanT0.Add(lanPeerTTL - time.Millisecond)); len(p) != 1 || !p[0].LastSeen.Equal(lanT0) {
		t.Fatalf("before the TTL: %+v", p)
	}
	if p := l.peers.list(lanT0.Add(lanPeerTTL)); len(p) != 0 {
		t.Fatalf("after the TTL: %+v", p)
	}
	if a := l.peers.addrs(peer, lanT0.Add(lanPeerTTL)); a != nil {
		t.Fatalf("a session would still handshake to %v", a)
	}
	later := lanT0.Add(lanPeerTTL + time.Second)
	if v := l.receive(beaconFrom("ttl", peer, later), src, later); v != lanNew {
		t.Fatalf("back after the TTL: %d", v)
	}
	l.peers.expire(later.Add(lanPeerTTL))
	if l.peers.size() != 0 {
		t.Fatal("expire kept a silent peer")
	}
}

// lanMem gives nodes on m LAN discovery: each node's listening socket is
// a memConn on its host at port, and datagrams to the beacon group or the
// broadcast address reach every one of them, as on a LAN segment. tap, if
// set, sees every datagram sent, and drops those it returns false for.
func lanMem(m *memNet, port uint16, tap func(from, to netip.AddrPort, b []byte) bool) func(host byte) *lanNet {
	m.setFilter(func(from, to netip.AddrPort, b []byte) []byte {
		if tap != nil && !tap(from, to, b) {
			return nil
		}
		if to.Port() != port || (to.Addr() != lanGroup4 && to.Addr() != lanBroadcast4) {
			return b
		}
		m.mu.Lock()
		var dst []netip.AddrPort
		for a := range m.conns {
			if a.Port() == port {
				dst = append(dst, a)
			}
		}
		m.mu.Unlock()
		for _, a := range dst {
			m.send(from, a, b)
		}
		return nil
	})
	return func(host byte) *lanNet {
		return &lanNet{
			port: port,
			listen: func(network, _ string) (net.PacketConn, error) {
				if network != "udp4" {
					return nil, errors.New("memnet is IPv4 only")
				}
				return m.listen(host, port), nil
			},
			interfaces: func() ([]lanIface, error) {
				return []lanIface{{index: 2, flags: net.FlagUp | net.FlagBroadcast | net.FlagMulticast,
					addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, host})}}}, nil
			},
		}
	}
}

func isLANFound(p PeerID) func(Event) bool {
	return func(e Event) bool { f, ok := e.(LANPeerFound); return ok && f.Peer == p }
}

func noTCP(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("no TCP in this test")
}

// TestLANDiscovery: three nodes on one in-memory LAN whose rendezvous
// server does not answer. The two of one AppID find each other
// (LANPeerFound, LANPeers), the third (another AppID) is listed by
// neither, a session opens straight to the beacon's address with the
// usual consent (the receiver accepts), reliable messages go both ways,
// and a node that leaves is forgotten.
func TestLANDiscovery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(time.Millisecond)
		lan := lanMem(m, 7000, nil)
		cfg := func(host byte, app string) Config {
			return Config{AppID: app, LANDiscovery: true, lan: lan(host),
				Rendezvous: "10.0.0.99:3478", DisableDirectTCP: true, Dial: noTCP}
		}
		a := newMemNode(t, m, 1, cfg(1, "lan"))
		b := newMemNode(t, m, 2, cfg(2, "lan"))
		c := newMemNode(t, m, 3, cfg(3, "another game"))

		if e := nextEvent(t, a, 3*time.Second, isLANFound(b.PeerID())).(LANPeerFound); e.Addr != addrOf(b) {
			t.Fatalf("a heard b at %v, want %v", e.Addr, addrOf(b))
		}
		nextEvent(t, b, 3*time.Second, isLANFound(a.PeerID()))
		time.Sleep(3 * time.Second) // a round of c's too
		for _, x := range []struct {
			n    *Node
			want PeerID
		}{{a, b.PeerID()}, {b, a.PeerID()}} {
			got := x.n.LANPeers()
			if len(got) != 1 || got[0].Peer != x.want || len(got[0].Addrs) != 1 {
				t.Fatalf("LANPeers %+v, want only %v", got, x.want)
			}
			if st := x.n.Stats(); st.LANDropped == 0 || st.LANErrors != 0 || st.LANSent == 0 {
				t.Fatalf("stats %+v: want c's beacons dropped, no errors", st)
			}
		}
		if got := c.LANPeers(); len(got) != 0 {
			t.Fatalf("another AppID lists %+v", got)
		}

		// No server answers; the beacon is enough. b still decides.
		if err := a.SendP2PPacket(b.PeerID(), []byte("hello"), SendReliable, 0); err != nil {
			t.Fatal(err)
		}
		nextEvent(t, b, 2*time.Second, isRequest(a.PeerID()))
		if _, ok := b.ReadP2PPacket(0); ok {
			t.Fatal("delivered before b accepted")
		}
		b.AcceptP2PSessionWithUser(a.PeerID())
		if p := recvData(t, b, 0, 2*time.Second); string(p.Data) != "hello" || p.From != a.PeerID() {
			t.Fatalf("b got %q from %v", p.Data, p.From)
		}
		b.SendP2PPacket(a.PeerID(), []byte("welcome"), SendReliable, 0)
		if p := recvData(t, a, 0, 2*time.Second); string(p.Data) != "welcome" {
			t.Fatalf("a got %q", p.Data)
		}
		st, _ := a.GetP2PSessionState(b.PeerID())
		if !st.ConnectionActive || st.RemoteAddr != addrOf(b) || a.Registered() {
			t.Fatalf("state %+v, registered %v", st, a.Registered())
		}

		b.Close()
		time.Sleep(lanPeerTTL + lanInterval)
		if got := a.LANPeers(); len(got) != 0 {
			t.Fatalf("a still lists %+v after b left", got)
		}
	})
}

// lanTestPort returns a port free for UDP on every address, IPv4 and
// IPv6 where there is IPv6, so a test's nodes beacon on a port of their
// own rather than the real one.
func lanTestPort(t *testing.T) uint16 {
	t.Helper()
	for range 20 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		c6, err := net.ListenUDP("udp6", &net.UDPAddr{Port: port})
		if err == nil {
			c6.Close()
			return uint16(port)
		}
		if _, err := net.ListenUDP("udp6", &net.UDPAddr{}); err != nil {
			return uint16(port) // no IPv6 here
		}
	}
	t.Fatal("no free port")
	return 0
}

// deadRendezvous returns an address nobody answers at.
func deadRendezvous(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// loopbackOnly lists this machine's loopback interface alone, so a node
// on every address beacons and joins there only, never on a real network.
func loopbackOnly() ([]lanIface, error) {
	ifs, err := systemLANIfaces()
	return slices.DeleteFunc(ifs, func(f lanIface) bool { return !f.is(net.FlagLoopback) }), err
}

// TestLANDiscoveryLoopback: nodes on this machine's loopback, over real
// sockets (multicast and broadcast on lo, reuseport listeners), with a
// rendezvous server that is not there. One node's socket is bound to
// 127.0.0.1 (its beacons leave from that address); another's listens on
// every address, IPv4 and IPv6, with lo as its only interface (its
// beacons leave lo from 127.0.0.1 by IP_PKTINFO, not by the default
// route). They find each other at 127.0.0.1, a third of another AppID
// stays unlisted, and reliable messages go both ways on a session
// straight to the beacon's address. Nothing is left running.
func TestLANDiscoveryLoopback(t *testing.T) {
	leakcheck.Check(t)
	port := lanTestPort(t)
	server := deadRendezvous(t)
	cfg := func(app string, ifs func() ([]lanIface, error)) Config {
		return Config{AppID: app, LANDiscovery: true, lan: &lanNet{port: port, listen: reuseport.ListenPacket, interfaces: ifs},
			Rendezvous: server, DisableDirectTCP: true, Dial: noTCP}
	}
	a := loopbackNode(t, "127.0.0.1", cfg("lan", systemLANIfaces))
	b := loopbackNode(t, "", cfg("lan", loopbackOnly))
	c := loopbackNode(t, "127.0.0.1", cfg("another game", systemLANIfaces))
	bAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), addrOf(b).Port())

	if e := nextEvent(t, a, 5*time.Second, isLANFound(b.PeerID())).(LANPeerFound); e.Addr != bAddr {
		t.Fatalf("a heard b at %v, want %v", e.Addr, bAddr)
	}
	if e := nextEvent(t, b, 5*time.Second, isLANFound(a.PeerID())).(LANPeerFound); e.Addr != addrOf(a) {
		t.Fatalf("b heard a at %v, want %v", e.Addr, addrOf(a))
	}
	waitFor(t, 5*time.Second, "c's beacons reaching a and dropped", func() bool { return a.Stats().LANDropped > 0 })
	if got := a.LANPeers(); len(got) != 1 || got[0].Peer != b.PeerID() || got[0].Addrs[0] != bAddr {
		t.Fatalf("a lists %+v", got)
	}
	if got := c.LANPeers(); len(got) != 0 {
		t.Fatalf("another AppID lists %+v", got)
	}
	for _, n := range []*Node{a, b, c} {
		st := n.Stats()
		t.Logf("sent %d heard %d dropped %d errors %d", st.LANSent, st.LANHeard, st.LANDropped, st.LANErrors)
		if st.LANSent == 0 || st.LANHeard == 0 && n != c || runtime.GOOS == "linux" && st.LANErrors != 0 {
			t.Fatalf("stats %+v", st)
		}
	}

	a.SendP2PPacket(b.PeerID(), []byte("hello"), SendReliable, 0)
	nextEvent(t, b, 5*time.Second, isRequest(a.PeerID()))
	b.AcceptP2PSessionWithUser(a.PeerID())
	if p := recvData(t, b, 0, 5*time.Second); string(p.Data) != "hello" {
		t.Fatalf("b got %q", p.Data)
	}
	b.SendP2PPacket(a.PeerID(), []byte("welcome"), SendReliable, 0)
	if p := recvData(t, a, 0, 5*time.Second); string(p.Data) != "welcome" {
		t.Fatalf("a got %q", p.Data)
	}
	if st, _ := a.GetP2PSessionState(b.PeerID()); !st.ConnectionActive || st.RemoteAddr != bAddr || a.Registered() {
		t.Fatalf("state %+v", st)
	}
	for _, n := range []*Node{a, b, c} {
		n.Close()
	}
}

// TestLANEitherDestination: beacons go to the multicast group and to the
// broadcast address, so a network that drops either (multicast filtered
// by a switch or an access point, broadcast by a firewall) still carries
// discovery, and sessions with no rendezvous server configured at all.
func TestLANEitherDestination(t *testing.T) {
	for _, blocked := range []netip.Addr{lanGroup4, lanBroadcast4} {
		t.Run(blocked.String()+" dropped", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := newMemNet(time.Millisecond)
				lan := lanMem(m, 7000, func(_, to netip.AddrPort, _ []byte) bool { return to.Addr() != blocked })
				a := newMemNode(t, m, 1, Config{AppID: "lan", LANDiscovery: true, lan: lan(1)})
				b := newMemNode(t, m, 2, Config{AppID: "lan", LANDiscovery: true, lan: lan(2)})
				nextEvent(t, a, 3*time.Second, isLANFound(b.PeerID()))
				nextEvent(t, b, 3*time.Second, isLANFound(a.PeerID()))
				b.SendP2PPacket(a.PeerID(), []byte("hi"), SendReliable, 0)
				nextEvent(t, a, 2*time.Second, isRequest(b.PeerID()))
				a.AcceptP2PSessionWithUser(b.PeerID())
				if p := recvData(t, a, 0, 2*time.Second); string(p.Data) != "hi" {
					t.Fatalf("a got %q", p.Data)
				}
			})
		})
	}
}

// TestLANDestinations: where a round's beacons go. A socket bound to an
// address beacons from it alone; one on every address beacons from each
// interface that can carry them (IPv4 multicast and broadcast from its
// first IPv4 address, IPv6 multicast by zone from a dual-stack socket),
// loopback only when nothing else has IPv4, at most lanMaxIfaces
// interfaces; groups are joined on the same interfaces.
func TestLANDestinations(t *testing.T) {
	l := lanUnit(t, "dest")
	l.net.port = 7000
	const bcmc = net.FlagUp | net.FlagBroadcast | net.FlagMulticast
	addrs := func(s ...string) (out []netip.Addr) {
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	lo := lanIface{index: 1, flags: net.FlagUp | net.FlagLoopback, addrs: addrs("127.0.0.1", "::1")}
	eth := lanIface{index: 2, flags: bcmc, addrs: addrs("fe80::1", "192.168.1.5", "192.168.1.6")}
	wifi := lanIface{index: 3, flags: bcmc, addrs: addrs("10.9.0.7")}
	tun := lanIface{index: 4, flags: net.FlagUp | net.FlagPointToPoint, addrs: addrs("100.64.0.1")}
	g4, b4 := netip.AddrPortFrom(lanGroup4, 7000), netip.AddrPortFrom(lanBroadcast4, 7000)
	g6 := func(i string) netip.AddrPort { return netip.AddrPortFrom(lanGroup6.WithZone(i), 7000) }
	a := netip.MustParseAddr
	cases := []struct {
		local  string
		ifs    []lanIface
		want   []lanDest
		joins4 []int
		joins6 []int
	}{
		{"192.168.1.5", []lanIface{lo, eth, wifi, tun}, []lanDest{{to: g4}, {to: b4}}, []int{2}, nil},
		{"127.0.0.1", []lanIface{lo, eth}, []lanDest{{to: g4}, {to: b4}}, []int{1}, nil},
		{"0.0.0.0", []lanIface{lo, eth, wifi, tun}, []lanDest{
			{to: g4, ifindex: 2, src: a("192.168.1.5")}, {to: b4, ifindex: 2, src: a("192.168.1.5")},
			{to: g4, ifindex: 3, src: a("10.9.0.7")}, {to: b4, ifindex: 3, src: a("10.9.0.7")},
		}, []int{1, 2, 3}, nil},
		{"::", []lanIface{lo, eth, wifi, tun}, []lanDest{
			{to: g4, ifindex: 2, src: a("192.168.1.5")}, {to: b4, ifindex: 2, src: a("192.168.1.5")}, {to: g6("2")},
			{to: g4, ifindex: 3, src: a("10.9.0.7")}, {to: b4, ifindex: 3, src: a("10.9.0.7")},
		}, []int{1, 2, 3}, []int{2}},
		{"fe80::1%2", []lanIface{lo, eth, wifi}, []lanDest{{to: g6("2")}}, nil, []int{2}},
		{"0.0.0.0", []lanIface{lo, tun}, []lanDest{
			{to: g4, ifindex: 1, src: a("127.0.0.1")}, {to: b4, ifindex: 1, src: a("127.0.0.1")},
		}, []int{1}, nil},
	}
	for _, c := range cases {
		l.local = a(c.local)
		if got := l.destinations(c.ifs); !slices.Equal(got, c.want) {
			t.Errorf("%s: destinations\n%+v\nwant\n%+v", c.local, got, c.want)
		}
		for _, v4 := range []bool{true, false} {
			var joins []int
			for _, f := range c.ifs {
				if l.listensOn(f, v4) {
					joins = append(joins, f.index)
				}
			}
			want := c.joins6
			if v4 {
				want = c.joins4
			}
			if !slices.Equal(joins, want) {
				t.Errorf("%s: joins (IPv4 %v) on %v, want %v", c.local, v4, joins, want)
			}
		}
	}

	l.local = a("0.0.0.0")
	var many []lanIface
	for i := range 3 * lanMaxIfaces {
		many = append(many, lanIface{index: 10 + i, flags: bcmc, addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(i), 0, 1})}})
	}
	if got := l.destinations(many); len(got) != 2*lanMaxIfaces {
		t.Errorf("%d interfaces: %d beacons a round, want %d", len(many), len(got), 2*lanMaxIfaces)
	}
}

// TestLANRates: a source IP's beacons past 16 a second (bursts of 32) are
// refused and counted, and do not hold up another source's.
func TestLANRates(t *testing.T) {
	l := lanUnit(t, "rate")
	noisy, quiet := newPeerID(t), newPeerID(t)
	noisyAddr, quietAddr := netip.MustParseAddrPort("10.0.0.2:4000"), netip.MustParseAddrPort("10.0.0.3:4000")
	taken, limited := 0, 0
	for i := range 1000 {
		now := lanT0.Add(time.Duration(i) * time.Millisecond)
		switch l.receive(beaconFrom("rate", noisy, now), noisyAddr, now) {
		case lanNew, lanRefreshed:
			taken++
		case lanLimited:
			limited++
		}
		if i%100 == 0 {
			if v := l.receive(beaconFrom("rate", quiet, now), quietAddr, now); v != lanNew && v != lanRefreshed {
				t.Fatalf("the quiet source's beacon: verdict %d", v)
			}
		}
	}
	if max := 2*lanPerSource + lanPerSource + 1; taken > max || taken < lanPerSource {
		t.Fatalf("%d of 1,000 beacons in a second taken from one source, want %d to %d", taken, lanPerSource, max)
	}
	if st := unitStats(l); limited+taken != 1000 || st.LANRefused != uint64(limited) {
		t.Fatalf("taken %d, limited %d, refused counted %d", taken, limited, st.LANRefused)
	}
}

// TestLANForgedBeacons: a stranger on the LAN who knows the AppID forges
// beacons, from a victim's address, for a hundred PeerIDs. That address's
// share of them is listed, and costs the victim nothing: the node sends
// nothing toward it.
// Only when the application sends to one of those PeerIDs does anything
// go there: the handshake and its retries, backing off (what AddPeerAddr
// would cost), until the attempt times out; after a second without an
// answer the node asks its rendezvous server as well.
func TestLANForgedBeacons(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(time.Millisecond)
		victim := netip.MustParseAddrPort("10.0.0.50:4000")
		var toVictim, bytesToVictim int
		var mu sync.Mutex
		lan := lanMem(m, 7000, func(from, to netip.AddrPort, b []byte) bool {
			if to == victim {
				mu.Lock()
				toVictim++
				bytesToVictim += len(b)
				mu.Unlock()
			}
			return true
		})
		a := newMemNode(t, m, 1, Config{AppID: "lan", LANDiscovery: true, lan: lan(1),
			Rendezvous: "10.0.0.99:3478", DisableDirectTCP: true, Dial: noTCP, ConnectTimeout: 10 * time.Second})
		listener := netip.AddrPortFrom(addrOf(a).Addr(), 7000)
		forged := make([]PeerID, 100)
		for round := range 5 {
			for i := range forged {
				if round == 0 {
					forged[i] = newPeerID(t)
				}
				m.send(victim, listener, beaconFrom("lan", forged[i], time.Now()))
			}
			time.Sleep(2 * time.Second)
		}
		if got := len(a.LANPeers()); got != lanPeersPerIP {
			t.Fatalf("%d peers listed from one address, want its share, %d", got, lanPeersPerIP)
		}
		if toVictim != 0 {
			t.Fatalf("%d datagrams to the forged address before the application asked for anyone", toVictim)
		}

		x := a.LANPeers()[0].Peer
		a.SendP2PPacket(x, []byte("hello?"), SendReliable, 0)
		time.Sleep(1500 * time.Millisecond)
		s := a.lookupSession(x)
		s.mu.Lock()
		asked := s.introducing
		s.unlock()
		if !asked {
			t.Fatal("no answer for 1.5 s, and the node did not ask its server")
		}
		nextEvent(t, a, 10*time.Second, isFail(x, SessionErrorTimeout))
		mu.Lock()
		defer mu.Unlock()
		t.Logf("%d datagrams, %d bytes to the forged address over a 10 s attempt", toVictim, bytesToVictim)
		if toVictim == 0 || toVictim > 10 || bytesToVictim > 10*200 {
			t.Fatalf("%d datagrams (%d bytes) to the forged address: want the handshake and its retries only", toVictim, bytesToVictim)
		}
	})
}
