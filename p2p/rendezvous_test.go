package p2p

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/rendezvous"
)

func startRendezvous(t *testing.T) *rendezvous.Server {
	t.Helper()
	srv, err := rendezvous.Listen(rendezvous.ServerConfig{}, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// waitRegistered waits until the server holds n's registration.
func waitRegistered(t *testing.T, srv *rendezvous.Server, nodes ...*Node) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, 10*time.Second, "registration", func() bool { return srv.IsRegistered(rendezvous.Key(n.PeerID())) })
	}
}

// TestRendezvousConnect: two nodes that know only each other's PeerID
// connect through the server.
func TestRendezvousConnect(t *testing.T) {
	leakcheck.Check(t)
	srv := startRendezvous(t)
	pin := PeerID(srv.PublicKey()).String() + "@" + srv.Addr().String()
	a := loopbackNode(t, "127.0.0.1", Config{Rendezvous: pin})
	b := loopbackNode(t, "127.0.0.1", Config{Rendezvous: srv.Addr().String()})
	waitRegistered(t, srv, a, b)
	a.SendP2PPacket(b.PeerID(), []byte("hello"), SendReliable, 0)
	b.SendP2PPacket(a.PeerID(), []byte("hi"), SendReliable, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range []*Node{a, b} {
		if _, err := n.Receive(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := a.GetP2PSessionState(b.PeerID())
	if !st.ConnectionActive || st.RemoteAddr.Port() != addrOf(b).Port() {
		t.Fatalf("state %+v (b at %v)", st, addrOf(b))
	}
	if s := srv.Stats(); s.Introductions == 0 {
		t.Fatalf("connected without an introduction: %+v", s)
	}
	a.Close()
	b.Close()
}

func TestDestinationNotLoggedOn(t *testing.T) {
	leakcheck.Check(t)
	srv := startRendezvous(t)
	a := loopbackNode(t, "127.0.0.1", Config{Rendezvous: srv.Addr().String()})
	waitRegistered(t, srv, a)
	ghost, _ := NewIdentity()
	start := time.Now()
	a.SendP2PPacket(ghost.PeerID(), []byte("anyone?"), SendReliable, 0)
	e := awaitEvent(a, 5*time.Second, func(e Event) bool { _, ok := e.(SessionConnectFail); return ok })
	if f, ok := e.(SessionConnectFail); !ok || f.Peer != ghost.PeerID() || f.Error != SessionErrorDestinationNotLoggedOn {
		t.Fatalf("event %#v", e)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v to learn the peer is unknown", d)
	}
	st, _ := a.GetP2PSessionState(ghost.PeerID())
	if st.SessionError != SessionErrorDestinationNotLoggedOn {
		t.Fatalf("%+v", st)
	}
	a.Close()
}

// TestRegistered: a node reports its registration once the server holds
// it, and never without a server.
func TestRegistered(t *testing.T) {
	leakcheck.Check(t)
	srv := startRendezvous(t)
	a := loopbackNode(t, "127.0.0.1", Config{Rendezvous: srv.Addr().String()})
	lone := loopbackNode(t, "127.0.0.1", Config{})
	waitFor(t, 10*time.Second, "registration", a.Registered)
	if !srv.IsRegistered(rendezvous.Key(a.PeerID())) {
		t.Error("the node says registered; the server does not know it")
	}
	if lone.Registered() {
		t.Error("a node without a server says it is registered")
	}
	a.Close()
	lone.Close()
}

// TestDestinationNotLoggedOnThenOnline: a send to a friend who has not
// registered yet fails with DestinationNotLoggedOn; once the friend is
// online, the next send connects. (The first attempt's introduction used
// to stay marked as under way, so every later attempt waited for an answer
// that never came and timed out.)
func TestDestinationNotLoggedOnThenOnline(t *testing.T) {
	leakcheck.Check(t)
	srv := startRendezvous(t)
	a := loopbackNode(t, "127.0.0.1", Config{Rendezvous: srv.Addr().String(), ConnectTimeout: 5 * time.Second})
	waitRegistered(t, srv, a)
	friend, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	a.SendP2PPacket(friend.PeerID(), []byte("are you there?"), SendReliable, 0)
	if e := awaitEvent(a, 5*time.Second, isFail(friend.PeerID(), SessionErrorDestinationNotLoggedOn)); e == nil {
		t.Fatal("no DestinationNotLoggedOn")
	}
	b := loopbackNode(t, "127.0.0.1", Config{Identity: friend, Rendezvous: srv.Addr().String()})
	waitRegistered(t, srv, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go acceptAll(ctx, b)
	a.SendP2PPacket(friend.PeerID(), []byte("now?"), SendReliable, 0)
	p, err := b.Receive(ctx, 0)
	if err != nil || string(p.Data) != "now?" {
		st, _ := a.GetP2PSessionState(friend.PeerID())
		t.Fatalf("the second send did not connect: %v %q; a's session %+v", err, p.Data, st)
	}
	a.Close()
	b.Close()
}

// TestRendezvousOtherFamily: a node given the server's IPv4 and IPv6
// addresses registers over IPv4 and learns its IPv6 address by STUN; the
// peer it meets is told that address among its candidates.
func TestRendezvousOtherFamily(t *testing.T) {
	leakcheck.Check(t)
	srv, err := rendezvous.Listen(rendezvous.ServerConfig{},
		[]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("[::1]:0")}, nil)
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer srv.Close()
	addrs := srv.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("server addresses %v", addrs)
	}
	rv := PeerID(srv.PublicKey()).String() + "@" + addrs[0].String() + "," + addrs[1].String()
	// Interfaces with IPv4 and a global IPv6 address: IPv6 is the other family.
	ifs := func() ([]netip.Prefix, error) {
		return []netip.Prefix{netip.MustParsePrefix("10.9.0.5/24"), netip.MustParsePrefix("2001:db8::5/64")}, nil
	}
	a, err := New(Config{ListenAddr: "[::]:0", Rendezvous: rv, Interfaces: ifs})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	waitFor(t, 10*time.Second, "the IPv6 address", func() bool { return a.NATType().IPv6Public.IsValid() })
	r := a.NATType()
	port := addrOfConn(a.main.pc).Port()
	if want := netip.AddrPortFrom(netip.IPv6Loopback(), port); r.IPv6Public != want || r.Public.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("NAT report %v: want IPv4 public 127.0.0.1 and IPv6 public %v", r, want)
	}
	if !slices.Contains(a.trav.candidates(), r.IPv6Public) {
		t.Errorf("candidates %v lack the IPv6 address %v", a.trav.candidates(), r.IPv6Public)
	}
	waitRegistered(t, srv, a)
	waitFor(t, 10*time.Second, "a's registration confirmed", func() bool { _, ok := a.trav.rv.Registered(); return ok })
	if c, ok := a.trav.rv.Registered(); !ok || !c.Addr().Is4() {
		t.Errorf("registered at %v, want over IPv4", c)
	}

	// An IPv6-only node registers over IPv6, and meets the dual-stack one
	// there.
	only6 := func() ([]netip.Prefix, error) { return []netip.Prefix{netip.MustParsePrefix("2001:db8::6/64")}, nil }
	b, err := New(Config{ListenAddr: "[::1]:0", Rendezvous: rv, Interfaces: only6}) // an IPv6 socket: no IPv4 at all
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitRegistered(t, srv, b)
	waitFor(t, 10*time.Second, "b's registration confirmed", func() bool { _, ok := b.trav.rv.Registered(); return ok })
	if c, ok := b.trav.rv.Registered(); !ok || !c.Addr().Is6() {
		t.Errorf("IPv6-only node registered at %v, want over IPv6", c)
	}
	b.SendP2PPacket(a.PeerID(), []byte("hello"), SendReliable, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nextEvent(t, a, 10*time.Second, func(e Event) bool { _, ok := e.(SessionRequest); return ok })
	a.AcceptP2PSessionWithUser(b.PeerID())
	if _, err := a.Receive(ctx, 0); err != nil {
		t.Fatalf("IPv6-only to dual-stack: %v", err)
	}
	if st, _ := a.GetP2PSessionState(b.PeerID()); !st.RemoteAddr.Addr().Is6() || st.Path != PathDirect {
		t.Errorf("session via %v (%v), want direct over IPv6", st.RemoteAddr, st.Path)
	}
}
