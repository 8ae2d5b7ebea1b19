package p2p

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

// serverOnlyConn is a node's socket that reaches the rendezvous server
// and nothing else: every direct path between two such nodes on loopback
// is blocked, so their sessions go through the TURN relay (whose client
// has a socket of its own).
type serverOnlyConn struct {
	net.PacketConn
	server netip.AddrPort
}

func (c *serverOnlyConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil || addrPortOf(from) == c.server {
			return n, from, err
		}
	}
}

func (c *serverOnlyConn) WriteTo(b []byte, to net.Addr) (int, error) {
	if addrPortOf(to) != c.server {
		return len(b), nil // dropped on the way
	}
	return c.PacketConn.WriteTo(b, to)
}

func addrPortOf(a net.Addr) netip.AddrPort {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// restartableRendezvous is a rendezvous server with the embedded TURN
// relay on one loopback port, over UDP and over TCP (rendezvous and TURN
// share the TCP listener), which can be restarted there with the same key
// and TURN secret: the relay forgets every allocation, the server every
// registration, and every TCP connection to it closes.
type restartableRendezvous struct {
	t    *testing.T
	addr netip.AddrPort
	key  [32]byte
	srv  *rendezvous.Server
}

func startRestartable(t *testing.T) *restartableRendezvous {
	t.Helper()
	r := &restartableRendezvous{t: t}
	rand.Read(r.key[:])
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = addrPortOf(pc.LocalAddr())
	if err := r.start(pc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.srv.Close() })
	return r
}

func (r *restartableRendezvous) start(pc net.PacketConn) error {
	ln, err := net.Listen("tcp4", r.addr.String()) // for nodes whose UDP is blocked
	if err != nil {
		pc.Close()
		return err
	}
	srv, err := rendezvous.NewServer(rendezvous.ServerConfig{PrivateKey: r.key, Conns: []net.PacketConn{pc},
		Listeners: []net.Listener{ln},
		TURN:      &rendezvous.TURNConfig{Secret: "restart", Embed: &relay.ServerConfig{}}})
	if err != nil {
		pc.Close()
		ln.Close()
		return err
	}
	r.srv = srv
	return nil
}

func (r *restartableRendezvous) restart() error {
	r.srv.Close()
	pc, err := net.ListenPacket("udp4", r.addr.String())
	if err != nil {
		return fmt.Errorf("rebinding %v: %w", r.addr, err)
	}
	return r.start(pc)
}

// pin is the server's Config.Rendezvous, its key pinned.
func (r *restartableRendezvous) pin() string {
	return PeerID(r.srv.PublicKey()).String() + "@" + r.addr.String()
}

// relayedNode is a loopback node that can reach only the rendezvous
// server directly, and relays at once.
func relayedNode(t *testing.T, rv *restartableRendezvous) *Node {
	t.Helper()
	return relayedNodeAt(t, rv, "127.0.0.1")
}

// relayedNodeAt is relayedNode on a socket bound to ip.
func relayedNodeAt(t *testing.T, rv *restartableRendezvous, ip string) *Node {
	t.Helper()
	pc, err := net.ListenPacket("udp4", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	n, err := New(Config{Rendezvous: rv.pin(), PacketConn: &serverOnlyConn{PacketConn: pc, server: rv.addr},
		DisableDirectTCP: true, RelayAfter: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func relayState(a, b *Node) string {
	sa, _ := a.GetP2PSessionState(b.PeerID())
	sb, _ := b.GetP2PSessionState(a.PeerID())
	return fmt.Sprintf("a: path %v relay %v active %v err %v remote %v, stats %+v; b: path %v relay %v active %v err %v remote %v, stats %+v",
		sa.Path, sa.UsingRelay, sa.ConnectionActive, sa.SessionError, sa.RemoteAddr, a.Stats(), sb.Path, sb.UsingRelay, sb.ConnectionActive, sb.SessionError, sb.RemoteAddr, b.Stats())
}

// TestRelayServerRestart: two nodes whose direct paths are blocked talk
// through the rendezvous server's embedded TURN relay; the server (and
// with it the relay, which shares its socket) restarts on the same port
// in the middle of a reliable stream. Both nodes find their allocations
// dead, allocate again, re-register with the new relayed addresses and
// install permissions again, inside the session's dead-peer interval: every
// message arrives once and in order, no session fails, and both sessions
// end up relayed again, each side on its second allocation. (The nodes
// used to keep the dead allocations: the session timed out, and every
// retry after it timed out too.)
func TestRelayServerRestart(t *testing.T) {
	leakcheck.Check(t)
	rv := startRestartable(t)
	a, b := relayedNode(t, rv), relayedNode(t, rv)
	waitRegistered(t, rv.srv, a, b)

	a.SendP2PPacket(b.PeerID(), []byte("ping"), SendReliable, 0)
	b.SendP2PPacket(a.PeerID(), []byte("pong"), SendReliable, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, n := range []*Node{a, b} {
		if _, err := n.Receive(ctx, 0); err != nil {
			t.Fatalf("no first message through the relay: %v; %s", err, relayState(a, b))
		}
	}
	relayed := func() bool {
		sa, _ := a.GetP2PSessionState(b.PeerID())
		sb, _ := b.GetP2PSessionState(a.PeerID())
		return sa.Path == PathRelay && sb.Path == PathRelay && sa.ConnectionActive && sb.ConnectionActive
	}
	waitFor(t, 5*time.Second, "both sessions relayed", relayed)
	if st := rv.srv.Relay().Stats(); st.Live != 2 {
		t.Fatalf("%d live allocations before the restart, want 2", st.Live)
	}

	// A reliable stream across the restart: 5 ms apart, 1 s of it before
	// the restart and 9 s after (the dead-peer interval is 10 s).
	var at time.Time
	gap := streamOrdered(t, a, b, 2000, 200, func() error {
		at = time.Now()
		return rv.restart()
	})

	waitFor(t, 5*time.Second, "both sessions relayed after the restart", relayed)
	for _, n := range []*Node{a, b} {
		if s := n.Stats(); s.RelayAllocations < 2 {
			t.Errorf("node stats %+v: want a second allocation", s)
		}
		for {
			select {
			case ev := <-n.Events():
				if f, ok := ev.(SessionConnectFail); ok {
					t.Errorf("SessionConnectFail across the restart: %+v", f)
				}
				continue
			default:
			}
			break
		}
	}
	if st := rv.srv.Relay().Stats(); st.Live != 2 {
		t.Errorf("%d live allocations on the restarted relay, want 2", st.Live)
	}
	t.Logf("stream resumed; longest gap %v; restart %v before the check ended", gap.Round(time.Millisecond), time.Since(at).Round(time.Millisecond))
}
