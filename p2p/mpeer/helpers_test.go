package mpeer_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/p2p/mpeer"
)

// waitTimeout bounds every wait for something to arrive over loopback.
const waitTimeout = 15 * time.Second

// player is one game instance: a node on 127.0.0.1, the Peer over it, and
// what the Peer reported, collected by pump.
type player struct {
	t      *testing.T
	node   *p2p.Node
	peer   *mpeer.Peer
	conn   *chaosConn // nil unless the player was made with one
	events []mpeer.Event
	got    []got
}

// got is a packet as GetPacket and its companions reported it.
type got struct {
	from int32
	ch   int
	mode mpeer.TransferMode
	data string
}

func newNode(t *testing.T, pc net.PacketConn) *p2p.Node {
	t.Helper()
	n, err := p2p.New(p2p.Config{AppID: "mpeer-test", ListenAddr: "127.0.0.1:0", PacketConn: pc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// newPlayer makes a node and a Disconnected Peer; with chaos its socket
// is wrapped so the test can drop, reorder or silence its datagrams.
func newPlayer(t *testing.T, chaos bool) *player {
	t.Helper()
	pl := &player{t: t, peer: new(mpeer.Peer)}
	var pc net.PacketConn
	if chaos {
		raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() }) // after the node's Close: the node does not close a given conn
		pl.conn = &chaosConn{PacketConn: raw, rng: rand.New(rand.NewPCG(1, 2))}
		pc = pl.conn
	}
	pl.node = newNode(t, pc)
	t.Cleanup(func() { pl.peer.Close() }) // runs before the node's Close
	return pl
}

func addrOf(n *p2p.Node) netip.AddrPort {
	return n.LocalAddr().(*net.UDPAddr).AddrPort()
}

// introduce tells every node where the others are (no rendezvous).
func introduce(nodes ...*p2p.Node) {
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.AddPeerAddr(b.PeerID(), addrOf(b))
			}
		}
	}
}

// pump polls the Peer and collects its events and packets.
func (pl *player) pump() {
	pl.peer.Poll()
	pl.events = append(pl.events, pl.peer.Events()...)
	for pl.peer.GetAvailablePacketCount() > 0 {
		g := got{from: pl.peer.GetPacketPeer(), ch: pl.peer.GetPacketChannel(), mode: pl.peer.GetPacketMode()}
		data, err := pl.peer.GetPacket()
		if err != nil {
			pl.t.Fatalf("GetPacket with %d available: %v", pl.peer.GetAvailablePacketCount(), err)
		}
		g.data = string(data)
		pl.got = append(pl.got, g)
	}
}

// waitFor pumps the players until cond holds, failing after waitTimeout.
func waitFor(t *testing.T, what string, players []*player, cond func() bool) {
	t.Helper()
	waitUpTo(t, waitTimeout, what, players, cond)
}

func waitUpTo(t *testing.T, d time.Duration, what string, players []*player, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, pl := range players {
			pl.pump()
		}
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// connected returns the peers the events say are connected now.
func (pl *player) connected() []int32 {
	set := map[int32]bool{}
	for _, e := range pl.events {
		switch e.Kind {
		case mpeer.PeerConnected:
			set[e.Peer] = true
		case mpeer.PeerDisconnected:
			delete(set, e.Peer)
		}
	}
	ids := make([]int32, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// event returns the first event of kind about peer.
func (pl *player) event(k mpeer.EventKind, peer int32) (mpeer.Event, bool) {
	for _, e := range pl.events {
		if e.Kind == k && e.Peer == peer {
			return e, true
		}
	}
	return mpeer.Event{}, false
}

func (pl *player) hasEvent(k mpeer.EventKind, peer int32) bool {
	_, ok := pl.event(k, peer)
	return ok
}

// received returns the packets with this payload.
func (pl *player) received(data string) []got {
	var out []got
	for _, g := range pl.got {
		if g.data == data {
			out = append(out, g)
		}
	}
	return out
}

func (pl *player) id() int32 { return pl.peer.GetUniqueID() }

// put sends data with the given target, mode and channel.
func (pl *player) put(target int32, mode mpeer.TransferMode, ch int, data string) error {
	pl.peer.SetTargetPeer(target)
	if err := pl.peer.SetTransferMode(mode); err != nil {
		return err
	}
	if err := pl.peer.SetTransferChannel(ch); err != nil {
		return err
	}
	return pl.peer.PutPacket([]byte(data))
}

func (pl *player) mustPut(target int32, mode mpeer.TransferMode, ch int, data string) {
	pl.t.Helper()
	if err := pl.put(target, mode, ch, data); err != nil {
		pl.t.Fatalf("player %d: put %q to %d: %v", pl.id(), data, target, err)
	}
}

func ids(players []*player) []int32 {
	out := make([]int32, len(players))
	for i, pl := range players {
		out[i] = pl.id()
	}
	slices.Sort(out)
	return out
}

// without returns the players but skip.
func without(players []*player, skip ...*player) []*player {
	var out []*player
	for _, pl := range players {
		if !slices.Contains(skip, pl) {
			out = append(out, pl)
		}
	}
	return out
}

// startServerGame starts a server and n clients, each with its own node
// that knows only the server's address, and waits until every client is
// Connected and knows every other one.
func startServerGame(t *testing.T, n int, chaos ...bool) (srv *player, clients []*player) {
	t.Helper()
	srv = newPlayer(t, false)
	if err := srv.peer.CreateServer(srv.node, mpeer.Config{}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		c := newPlayer(t, i < len(chaos) && chaos[i])
		introduce(srv.node, c.node)
		if err := c.peer.CreateClient(c.node, srv.node.PeerID(), mpeer.Config{}); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	all := append([]*player{srv}, clients...)
	waitFor(t, "every client connected and told of the others", all, func() bool {
		for _, c := range clients {
			if c.peer.GetConnectionStatus() != mpeer.Connected || len(c.connected()) != n {
				return false
			}
		}
		return len(srv.connected()) == n
	})
	return srv, clients
}

// startMesh starts n mesh members with ids, each added to every other.
func startMesh(t *testing.T, idList []int32, chaos ...bool) []*player {
	t.Helper()
	var members []*player
	var nodes []*p2p.Node
	for i, id := range idList {
		m := newPlayer(t, i < len(chaos) && chaos[i])
		if err := m.peer.CreateMesh(m.node, id, mpeer.Config{}); err != nil {
			t.Fatal(err)
		}
		members, nodes = append(members, m), append(nodes, m.node)
	}
	introduce(nodes...)
	for i, a := range members {
		for j, b := range members {
			if i != j {
				if err := a.peer.AddMeshPeer(idList[j], b.node.PeerID()); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	waitFor(t, "every mesh member connected to the others", members, func() bool {
		for _, m := range members {
			if len(m.connected()) != len(members)-1 {
				return false
			}
		}
		return true
	})
	return members
}

// chaosConn wraps a node's socket. Vanish drops everything both ways, as
// a peer whose network died. Lossy drops and reorders: outgoing
// datagrams are dropped with probability dropPct% or held back and sent
// after the next one with holdPct%; incoming ones are dropped with
// dropPct%. The random source is seeded, so the pattern is repeatable.
type chaosConn struct {
	net.PacketConn
	vanish atomic.Bool
	lossy  atomic.Bool

	mu       sync.Mutex // serializes writes so a held datagram goes right after the next one
	rng      *rand.Rand
	held     []byte
	heldAddr net.Addr
}

const (
	dropPct = 10
	holdPct = 20
)

func (c *chaosConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.vanish.Load() {
		return len(b), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lossy.Load() {
		switch r := c.rng.IntN(100); {
		case r < dropPct:
			return len(b), nil
		case r < dropPct+holdPct && c.held == nil:
			c.held, c.heldAddr = append([]byte(nil), b...), addr
			return len(b), nil
		}
	}
	n, err := c.PacketConn.WriteTo(b, addr)
	if c.held != nil {
		c.PacketConn.WriteTo(c.held, c.heldAddr)
		c.held = nil
	}
	return n, err
}

func (c *chaosConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.dropIncoming() {
			return n, addr, err
		}
	}
}

func (c *chaosConn) dropIncoming() bool {
	if c.vanish.Load() {
		return true
	}
	if !c.lossy.Load() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rng.IntN(100) < dropPct
}

func label(prefix string, i int) string { return fmt.Sprintf("%s-%d", prefix, i) }
