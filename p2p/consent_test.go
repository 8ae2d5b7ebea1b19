package p2p

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

// startTURNRendezvous starts a rendezvous server with the embedded TURN
// relay on 127.0.0.1.
func startTURNRendezvous(t *testing.T) *rendezvous.Server {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := rendezvous.NewServer(rendezvous.ServerConfig{Conns: []net.PacketConn{pc},
		TURN: &rendezvous.TURNConfig{Secret: "consent", Embed: &relay.ServerConfig{}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// sink counts what reaches the addresses an attacker declares: UDP and
// TCP listeners on one port each.
type sink struct {
	udp      []net.PacketConn
	tcp      []net.Listener
	bytes    atomic.Int64
	accepted atomic.Int64
}

func newSink(t *testing.T, ips ...string) *sink {
	t.Helper()
	s := &sink{}
	for _, ip := range ips {
		pc, err := net.ListenPacket("udp4", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		s.udp = append(s.udp, pc)
		go func() {
			buf := make([]byte, 2048)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				s.bytes.Add(int64(n))
			}
		}()
		if l, err := net.Listen("tcp4", pc.LocalAddr().String()); err == nil {
			s.tcp = append(s.tcp, l)
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					s.accepted.Add(1)
					c.Close()
				}
			}()
		}
	}
	t.Cleanup(s.close)
	return s
}

func (s *sink) addrs() []netip.AddrPort {
	var out []netip.AddrPort
	for _, pc := range s.udp {
		out = append(out, addrOfConn(pc))
	}
	return out
}

func (s *sink) close() {
	for _, pc := range s.udp {
		pc.Close()
	}
	for _, l := range s.tcp {
		l.Close()
	}
}

// stranger is an attacker's rendezvous client on its own socket: a fresh
// identity that declares whatever candidates it likes.
type stranger struct {
	id    PeerID
	pc    net.PacketConn
	rv    *rendezvous.Client
	peers chan *rendezvous.Peer
	in    atomic.Int64 // bytes from anyone but the server
	out   atomic.Int64 // bytes sent
}

func newStranger(t *testing.T, srv *rendezvous.Server, ip string, cands []netip.AddrPort, relayAddr netip.AddrPort) *stranger {
	t.Helper()
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp4", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stranger{id: id.PeerID(), pc: pc, peers: make(chan *rendezvous.Peer, 16)}
	key := srv.PublicKey()
	s.rv = rendezvous.NewClient(rendezvous.ClientConfig{
		Server: srv.Addr(), ServerKey: &key, Private: id.private, Public: rendezvous.Key(id.public),
		Send: func(b []byte, to netip.AddrPort) {
			if n, err := pc.WriteTo(b, net.UDPAddrFromAddrPort(to)); err == nil {
				s.out.Add(int64(n))
			}
		},
		Candidates:   func() []netip.AddrPort { return cands },
		Mapping:      func() rendezvous.Mapping { return rendezvous.MappingEndpointDependent },
		RelayAllowed: func() bool { return true },
		Relay:        func() netip.AddrPort { return relayAddr },
		OnPeer:       func(p *rendezvous.Peer) { s.peers <- p },
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			src := addrOfAddr(from)
			if src != srv.Addr() {
				s.in.Add(int64(n))
			}
			s.rv.Handle(buf[:n], src)
		}
	}()
	stop := make(chan struct{})
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tk.C:
				s.rv.Tick(now)
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-ticked
		s.rv.Close()
		pc.Close()
		<-done
	})
	waitFor(t, 5*time.Second, "the stranger's registration", func() bool { return srv.IsRegistered(rendezvous.Key(id.public)) })
	return s
}

func addrOfAddr(a net.Addr) netip.AddrPort {
	ap := a.(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// TestAttackStrangerIntroduction: a fresh identity registers eight
// candidates at addresses it wants flooded (a victim's UDP and TCP ports),
// says its NAT maps per destination and that it allows relay, and asks for
// an introduction to a node that has no session with it. The node sends
// nothing toward it or its candidates, dials nothing, allocates nothing:
// its application hears a SessionRequest, delivered through the server.
// Only when the application accepts does the stranger learn where the node
// is. (A node used to spray ~4,000 times the introduction's bytes at the
// declared addresses, dial TCP there and take a TURN allocation.)
func TestAttackStrangerIntroduction(t *testing.T) {
	leakcheck.Check(t)
	srv := startTURNRendezvous(t)
	node := loopbackNode(t, "127.0.0.1", Config{Rendezvous: srv.Addr().String(), RelayAfter: -1})
	waitRegistered(t, srv, node)
	sink := newSink(t, "127.0.0.60", "127.0.0.61", "127.0.0.62", "127.0.0.63", "127.0.0.64", "127.0.0.65", "127.0.0.66", "127.0.0.67", "127.0.0.68")
	cands := sink.addrs()
	atk := newStranger(t, srv, "127.0.0.2", cands[:8], cands[8])

	before := atk.out.Load()
	atk.rv.Introduce(rendezvous.Key(node.PeerID()), time.Now())
	e := awaitEvent(node, 3*time.Second, isRequest(atk.id))
	if e == nil {
		t.Fatalf("no SessionRequest for the stranger: %+v", node.Stats())
	}
	time.Sleep(3 * time.Second) // what a sprayer would have sent by now: thousands of probes
	sent := atk.out.Load() - before
	if got := sink.bytes.Load() + atk.in.Load(); got > 3*sent {
		t.Fatalf("the stranger's %d bytes of requests drew %d bytes toward its addresses", sent, got)
	}
	if sink.accepted.Load() != 0 {
		t.Fatalf("the node dialled TCP %d times toward declared addresses", sink.accepted.Load())
	}
	if st := node.Stats(); st.RelayAllocations != 0 || srv.Relay().Stats().Allocations != 0 {
		t.Fatalf("TURN allocated for a stranger: node %+v, relay %+v", st, srv.Relay().Stats())
	}
	select {
	case p := <-atk.peers:
		t.Fatalf("the stranger learnt the node's addresses without consent: %+v", p)
	default:
	}
	t.Logf("stranger sent %d bytes in requests; %d bytes reached its addresses; node %d asks", sent, sink.bytes.Load()+atk.in.Load(), node.Stats().Asks)

	// The application accepts: now the stranger is introduced.
	if !node.AcceptP2PSessionWithUser(atk.id) {
		t.Fatal("the ask was not there to accept")
	}
	select {
	case p := <-atk.peers:
		if p.About != rendezvous.Key(node.PeerID()) || p.Observed.Port() != addrOf(node).Port() {
			t.Fatalf("introduced to %+v", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("accepting did not introduce the peer")
	}
	node.Close()
}

// TestAllowIntroductionRefuses: a node whose AllowIntroduction says no
// spends nothing on the asker and raises no SessionRequest; the asker's
// attempt fails with Timeout, as an unanswered one does in Steam. A peer
// it allows connects.
func TestAllowIntroductionRefuses(t *testing.T) {
	leakcheck.Check(t)
	srv := startRendezvous(t)
	friend := loopbackNode(t, "127.0.0.1", Config{Rendezvous: srv.Addr().String()})
	bob := loopbackNode(t, "127.0.0.1", Config{Rendezvous: srv.Addr().String(),
		AllowIntroduction: func(p PeerID) bool { return p == friend.PeerID() }})
	eve := loopbackNode(t, "127.0.0.1", Config{Rendezvous: srv.Addr().String(), ConnectTimeout: 2 * time.Second})
	waitRegistered(t, srv, friend, bob, eve)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go acceptAll(ctx, bob)

	eve.SendP2PPacket(bob.PeerID(), []byte("let me in"), SendReliable, 0)
	if e := awaitEvent(eve, 5*time.Second, isFail(bob.PeerID(), SessionErrorTimeout)); e == nil {
		t.Fatal("eve's attempt did not end with Timeout")
	}
	if st := bob.Stats(); st.IntroductionsRefused == 0 || st.Handshakes != 0 {
		t.Fatalf("bob did not refuse at no cost: %+v", st)
	}
	if st := eve.Stats(); st.Handshakes != 0 || st.PacketsIn > 20 {
		t.Fatalf("bob answered eve: %+v", st)
	}

	friend.SendP2PPacket(bob.PeerID(), []byte("hi"), SendReliable, 0)
	p, err := bob.Receive(ctx, 0)
	if err != nil || p.From != friend.PeerID() {
		t.Fatalf("the friend did not get in: %v %+v", err, p)
	}
	for _, n := range []*Node{friend, bob, eve} {
		n.Close()
	}
}
