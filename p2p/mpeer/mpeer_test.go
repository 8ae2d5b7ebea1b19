package mpeer_test

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/p2p/mpeer"
)

// TestStatusTransitions: a client goes Disconnected → Connecting →
// Connected, cannot send before, gets a valid random id, and ends
// Disconnected when the server goes away; the server is Connected at once.
func TestStatusTransitions(t *testing.T) {
	leakcheck.Check(t)
	srv, cl := newPlayer(t, false), newPlayer(t, false)
	introduce(srv.node, cl.node)
	if s := cl.peer.GetConnectionStatus(); s != mpeer.Disconnected {
		t.Fatalf("zero Peer: %v", s)
	}
	if err := cl.peer.PutPacket([]byte("x")); !errors.Is(err, mpeer.ErrNotConnected) {
		t.Fatalf("PutPacket on a zero Peer: %v", err)
	}
	if err := srv.peer.CreateServer(srv.node, mpeer.Config{}); err != nil {
		t.Fatal(err)
	}
	if !srv.peer.IsServer() || srv.id() != 1 || srv.peer.GetConnectionStatus() != mpeer.Connected {
		t.Fatalf("server: IsServer %v, id %d, %v", srv.peer.IsServer(), srv.id(), srv.peer.GetConnectionStatus())
	}
	if err := cl.peer.CreateClient(cl.node, srv.node.PeerID(), mpeer.Config{}); err != nil {
		t.Fatal(err)
	}
	if err := cl.peer.CreateClient(cl.node, srv.node.PeerID(), mpeer.Config{}); !errors.Is(err, mpeer.ErrAlreadyActive) {
		t.Fatalf("second CreateClient: %v", err)
	}
	if s := cl.peer.GetConnectionStatus(); s != mpeer.Connecting {
		t.Fatalf("after CreateClient: %v", s)
	}
	if id := cl.id(); id < 2 {
		t.Fatalf("client id %d", id)
	}
	if cl.peer.IsServer() || !cl.peer.IsServerRelaySupported() {
		t.Fatal("a client is no server and supports server relay")
	}
	if err := cl.put(1, mpeer.Reliable, 0, "early"); !errors.Is(err, mpeer.ErrNotConnected) {
		t.Fatalf("PutPacket while Connecting: %v", err)
	}
	seen := []mpeer.ConnectionStatus{mpeer.Disconnected, mpeer.Connecting}
	waitFor(t, "the client to connect", []*player{srv, cl}, func() bool {
		if s := cl.peer.GetConnectionStatus(); s != seen[len(seen)-1] {
			seen = append(seen, s)
		}
		return seen[len(seen)-1] == mpeer.Connected
	})
	if want := []mpeer.ConnectionStatus{mpeer.Disconnected, mpeer.Connecting, mpeer.Connected}; !slices.Equal(seen, want) {
		t.Fatalf("statuses %v, want %v", seen, want)
	}
	if !cl.hasEvent(mpeer.PeerConnected, 1) || !srv.hasEvent(mpeer.PeerConnected, cl.id()) {
		t.Fatalf("events: client %v, server %v", cl.events, srv.events)
	}
	cid := cl.id()
	cl.mustPut(1, mpeer.Reliable, 0, "hello")
	waitFor(t, "the server to get the packet", []*player{srv, cl}, func() bool { return len(srv.received("hello")) == 1 })

	srv.node.Close()
	waitFor(t, "the client to lose the server", []*player{srv, cl}, func() bool {
		return cl.peer.GetConnectionStatus() == mpeer.Disconnected && srv.peer.GetConnectionStatus() == mpeer.Disconnected
	})
	if !cl.hasEvent(mpeer.PeerDisconnected, 1) || cl.id() != 0 {
		t.Fatalf("client after the server closed: events %v, id %d", cl.events, cl.id())
	}
	if err := srv.peer.DisconnectReason(); !errors.Is(err, p2p.ErrClosed) {
		t.Fatalf("server whose node closed: reason %v", err)
	}
	if e, ok := srv.event(mpeer.PeerDisconnected, cid); !ok || !errors.Is(e.Err, p2p.ErrClosed) {
		t.Fatalf("server whose node closed: events %v", srv.events)
	}
}

// TestServerRelay: a server and four clients, whose nodes know only the
// server's address. Broadcasts, "all but" targets and unicasts from
// clients reach exactly the peers the target names, through the server,
// with the original sender's id, channel and mode.
func TestServerRelay(t *testing.T) {
	leakcheck.Check(t)
	srv, cls := startServerGame(t, 4)
	a, b, c, d := cls[0], cls[1], cls[2], cls[3]
	for _, cl := range cls {
		want := append(ids(without(cls, cl)), 1)
		slices.Sort(want)
		if got := cl.connected(); !slices.Equal(got, want) {
			t.Fatalf("client %d knows %v, want %v", cl.id(), got, want)
		}
	}
	if got := srv.connected(); !slices.Equal(got, ids(cls)) {
		t.Fatalf("server knows %v, want %v", got, ids(cls))
	}

	cases := []struct {
		name     string
		from     *player
		target   int32
		wantAt   []*player
		wantNone []*player
	}{
		{"client broadcast", a, 0, []*player{srv, b, c, d}, []*player{a}},
		{"server broadcast", srv, 0, []*player{a, b, c, d}, []*player{srv}},
		{"client all but a client", a, -b.id(), []*player{srv, c, d}, []*player{a, b}},
		{"client all but the server", a, -1, []*player{b, c, d}, []*player{a, srv}},
		{"client to client", a, c.id(), []*player{c}, []*player{a, b, d, srv}},
		{"client to server", b, 1, []*player{srv}, []*player{a, b, c, d}},
		{"server all but a client", srv, -d.id(), []*player{a, b, c}, []*player{d, srv}},
		{"server to client", srv, d.id(), []*player{d}, []*player{a, b, c, srv}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := label(tc.name, i)
			tc.from.mustPut(tc.target, mpeer.Reliable, 7, msg)
			fence(t, srv, cls, tc.from, 7, msg)
			want := got{from: tc.from.id(), ch: 7, mode: mpeer.Reliable, data: msg}
			for _, pl := range tc.wantAt {
				if rx := pl.received(msg); len(rx) != 1 || rx[0] != want {
					t.Errorf("player %d got %+v, want one %+v", pl.id(), rx, want)
				}
			}
			for _, pl := range tc.wantNone {
				if rx := pl.received(msg); len(rx) != 0 {
					t.Errorf("player %d got %+v, want nothing", pl.id(), rx)
				}
			}
		})
	}
	for _, target := range []int32{999, -999, a.id(), -a.id(), math.MinInt32} {
		if err := a.put(target, mpeer.Reliable, 0, "x"); !errors.Is(err, mpeer.ErrInvalidTarget) {
			t.Errorf("client target %d: %v", target, err)
		}
	}
	if err := srv.put(1, mpeer.Reliable, 0, "x"); !errors.Is(err, mpeer.ErrInvalidTarget) {
		t.Errorf("server to itself: %v", err)
	}
	if st := srv.peer.Stats(); st.PacketsRelayed == 0 || dropped(st) != 0 {
		t.Errorf("server stats %+v", st)
	}
	// Clients drop what a target excludes them from, so a server that
	// relayed too much would show here.
	for _, c := range cls {
		if st := c.peer.Stats(); dropped(st) != 0 {
			t.Errorf("client %d stats %+v", c.id(), st)
		}
	}
}

func dropped(st mpeer.Stats) uint64 {
	return st.DroppedMalformed + st.DroppedUnexpected + st.DroppedSpoofed + st.DroppedNotJoined +
		st.DroppedMisrouted + st.DroppedUnknownSender + st.DroppedBadID
}

// fence makes sure every packet sender put before it has reached everyone
// it was meant for. Packets of one sender on one (channel, mode) arrive in
// order, so: the sender sends a marker to the server (a client) or to
// every client (the server); once the server has it, it has relayed what
// came before, and it sends a marker to every client, which, once there,
// comes after anything the server sent or relayed to them before.
func fence(t *testing.T, srv *player, cls []*player, sender *player, ch int, tag string) {
	t.Helper()
	all := append([]*player{srv}, cls...)
	mark := "fence-" + tag
	if sender != srv {
		sender.mustPut(1, mpeer.Reliable, ch, mark)
		waitFor(t, "the fence at the server", all, func() bool { return len(srv.received(mark)) > 0 })
	}
	back := mark + "-back"
	for _, c := range cls {
		srv.mustPut(c.id(), mpeer.Reliable, ch, back)
	}
	waitFor(t, "the fence at every client", all, func() bool {
		for _, c := range cls {
			if len(c.received(back)) == 0 {
				return false
			}
		}
		return true
	})
}

// TestMesh: four mesh members, each with direct sessions to the others:
// broadcasts, "all but" and unicasts reach exactly the peers named, with
// the sender's id; DisconnectPeer and a node's Close raise
// PeerDisconnected on both sides.
func TestMesh(t *testing.T) {
	leakcheck.Check(t)
	idList := []int32{3, 5, 7, 9}
	ms := startMesh(t, idList)
	a, b, c, d := ms[0], ms[1], ms[2], ms[3]
	for _, m := range ms {
		if got, want := m.connected(), ids(without(ms, m)); !slices.Equal(got, want) {
			t.Fatalf("member %d knows %v, want %v", m.id(), got, want)
		}
		if m.peer.IsServer() || m.peer.IsServerRelaySupported() {
			t.Fatal("a mesh member is no server and has no relay")
		}
	}
	cases := []struct {
		name     string
		from     *player
		target   int32
		wantAt   []*player
		wantNone []*player
	}{
		{"broadcast", a, 0, []*player{b, c, d}, []*player{a}},
		{"all but one", a, -b.id(), []*player{c, d}, []*player{a, b}},
		{"unicast", c, d.id(), []*player{d}, []*player{a, b, c}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := label(tc.name, i)
			tc.from.mustPut(tc.target, mpeer.Reliable, 1, msg)
			mark := msg + "-fence"
			tc.from.mustPut(0, mpeer.Reliable, 1, mark)
			waitFor(t, "the fence", ms, func() bool {
				for _, m := range without(ms, tc.from) {
					if len(m.received(mark)) == 0 {
						return false
					}
				}
				return true
			})
			for _, m := range tc.wantAt {
				if got := m.received(msg); len(got) != 1 || got[0].from != tc.from.id() || got[0].ch != 1 {
					t.Errorf("member %d got %+v, want one from %d", m.id(), got, tc.from.id())
				}
			}
			for _, m := range tc.wantNone {
				if got := m.received(msg); len(got) != 0 {
					t.Errorf("member %d got %+v, want nothing", m.id(), got)
				}
			}
		})
	}
	if err := a.peer.AddMeshPeer(b.id(), d.node.PeerID()); !errors.Is(err, mpeer.ErrIDInUse) {
		t.Errorf("AddMeshPeer with an id in use: %v", err)
	}
	if err := a.peer.AddMeshPeer(42, b.node.PeerID()); !errors.Is(err, mpeer.ErrDuplicatePeer) {
		t.Errorf("AddMeshPeer with a node already added: %v", err)
	}

	if err := a.peer.DisconnectPeer(b.id(), false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a and b to see each other leave", ms, func() bool {
		return a.hasEvent(mpeer.PeerDisconnected, b.id()) && b.hasEvent(mpeer.PeerDisconnected, a.id())
	})
	cid := c.id()
	c.node.Close()
	waitFor(t, "the others to see c's node close", ms, func() bool {
		return a.hasEvent(mpeer.PeerDisconnected, cid) && b.hasEvent(mpeer.PeerDisconnected, cid) &&
			d.hasEvent(mpeer.PeerDisconnected, cid)
	})
	if got, want := a.connected(), []int32{d.id()}; !slices.Equal(got, want) {
		t.Errorf("a knows %v, want %v", got, want)
	}
	if got, want := b.connected(), []int32{d.id()}; !slices.Equal(got, want) {
		t.Errorf("b knows %v, want %v", got, want)
	}
}

// TestRefuseNewConnections: a refusing server keeps a new client out (its
// status ends Disconnected with ErrRefused) without disturbing the
// clients it has, and lets it in once it stops refusing.
func TestRefuseNewConnections(t *testing.T) {
	leakcheck.Check(t)
	srv, cls := startServerGame(t, 3)
	srv.peer.RefuseNewConnections(true)
	if !srv.peer.IsRefusingNewConnections() {
		t.Fatal("not refusing")
	}
	late := newPlayer(t, false)
	introduce(srv.node, late.node)
	if err := late.peer.CreateClient(late.node, srv.node.PeerID(), mpeer.Config{}); err != nil {
		t.Fatal(err)
	}
	all := append([]*player{srv, late}, cls...)
	waitFor(t, "the late client to be refused", all, func() bool {
		return late.peer.GetConnectionStatus() == mpeer.Disconnected
	})
	if err := late.peer.DisconnectReason(); !errors.Is(err, mpeer.ErrRefused) {
		t.Fatalf("reason %v", err)
	}
	if e, ok := late.event(mpeer.ConnectionFailed, 1); !ok || !errors.Is(e.Err, mpeer.ErrRefused) {
		t.Fatalf("late client events %v", late.events)
	}
	if got := srv.connected(); !slices.Equal(got, ids(cls)) {
		t.Fatalf("server knows %v, want %v", got, ids(cls))
	}
	// Refusing before the session: the node refuses it, ENet-style.
	if st := srv.peer.Stats(); st.SessionsRefused != 1 || st.JoinsRejected != 0 {
		t.Fatalf("stats %+v", st)
	}

	// A session accepted before the server started refusing: its JOIN is
	// rejected with the reason.
	raw := newNode(t, nil)
	introduce(srv.node, raw)
	srv.peer.RefuseNewConnections(false)
	rawSend(t, raw, srv.node.PeerID(), 5, []byte("hello")) // opens a session the server accepts
	waitFor(t, "the raw session accepted", all, func() bool {
		st, ok := raw.GetP2PSessionState(srv.node.PeerID())
		return ok && st.ConnectionActive
	})
	srv.peer.RefuseNewConnections(true)
	rawSend(t, raw, srv.node.PeerID(), mpeer.ControlChannel, joinMsg(1, 4000))
	if m := rawRecv(t, raw, mpeer.ControlChannel, all); !slices.Equal(m, []byte{0x03, 3}) {
		t.Fatalf("JOIN while refusing: answer % x, want REJECT 3", m)
	}

	srv.peer.RefuseNewConnections(false)
	if err := late.peer.CreateClient(late.node, srv.node.PeerID(), mpeer.Config{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the late client to get in", all, func() bool {
		return late.peer.GetConnectionStatus() == mpeer.Connected && len(late.connected()) == 4 &&
			srv.hasEvent(mpeer.PeerConnected, late.id())
	})
}

// TestJoinRejections: the server rejects an id in use and a join past
// MaxClients, and the client learns which.
func TestJoinRejections(t *testing.T) {
	leakcheck.Check(t)
	srv := newPlayer(t, false)
	if err := srv.peer.CreateServer(srv.node, mpeer.Config{MaxClients: 2}); err != nil {
		t.Fatal(err)
	}
	join := func(id int32) *player {
		cl := newPlayer(t, false)
		introduce(srv.node, cl.node)
		if err := cl.peer.CreateClient(cl.node, srv.node.PeerID(), mpeer.Config{ClientID: id}); err != nil {
			t.Fatal(err)
		}
		return cl
	}
	first := join(777)
	waitFor(t, "the first client in", []*player{srv, first}, func() bool {
		return first.peer.GetConnectionStatus() == mpeer.Connected
	})
	dup := join(777)
	all := []*player{srv, first, dup}
	waitFor(t, "the duplicate refused", all, func() bool { return dup.peer.GetConnectionStatus() == mpeer.Disconnected })
	if err := dup.peer.DisconnectReason(); !errors.Is(err, mpeer.ErrIDInUse) {
		t.Fatalf("duplicate id: reason %v", err)
	}
	if e, ok := dup.event(mpeer.ConnectionFailed, 1); !ok || !errors.Is(e.Err, mpeer.ErrIDInUse) {
		t.Fatalf("duplicate id: events %v", dup.events)
	}
	second := join(778)
	all = append(all, second)
	waitFor(t, "the second client in", all, func() bool { return second.peer.GetConnectionStatus() == mpeer.Connected })
	third := join(779)
	all = append(all, third)
	waitFor(t, "the third refused", all, func() bool { return third.peer.GetConnectionStatus() == mpeer.Disconnected })
	if err := third.peer.DisconnectReason(); !errors.Is(err, mpeer.ErrServerFull) {
		t.Fatalf("full server: reason %v", err)
	}
	if got := srv.connected(); !slices.Equal(got, []int32{777, 778}) {
		t.Fatalf("server knows %v", got)
	}
	if st := srv.peer.Stats(); st.JoinsRejected != 2 {
		t.Fatalf("JoinsRejected %d, want 2", st.JoinsRejected)
	}
	var p mpeer.Peer
	if err := p.CreateClient(third.node, srv.node.PeerID(), mpeer.Config{ClientID: 1}); !errors.Is(err, mpeer.ErrInvalidID) {
		t.Fatalf("ClientID 1: %v", err)
	}
}

// TestDisconnectOnClose: when a client's node closes, the server and the
// other clients get PeerDisconnected for it; when the server's node
// closes, every client loses the server and the others.
func TestDisconnectOnClose(t *testing.T) {
	leakcheck.Check(t)
	srv, cls := startServerGame(t, 3)
	all := append([]*player{srv}, cls...)
	a, b, c := cls[0], cls[1], cls[2]
	cid := c.id()
	c.node.Close()
	waitFor(t, "c's departure everywhere", all, func() bool {
		return srv.hasEvent(mpeer.PeerDisconnected, cid) && a.hasEvent(mpeer.PeerDisconnected, cid) &&
			b.hasEvent(mpeer.PeerDisconnected, cid)
	})
	if e, _ := srv.event(mpeer.PeerDisconnected, cid); e.Err != nil {
		t.Errorf("a closed node's departure: %v", e.Err)
	}
	srv.node.Close()
	waitFor(t, "the clients to lose the server", all, func() bool {
		return a.peer.GetConnectionStatus() == mpeer.Disconnected && b.peer.GetConnectionStatus() == mpeer.Disconnected
	})
	for _, cl := range []*player{a, b} {
		if !cl.hasEvent(mpeer.PeerDisconnected, 1) || len(cl.connected()) != 0 {
			t.Errorf("client events %v", cl.events)
		}
	}
	if err := a.put(0, mpeer.Reliable, 0, "x"); !errors.Is(err, mpeer.ErrNotConnected) {
		t.Errorf("PutPacket after the server left: %v", err)
	}
}

// TestDisconnectOnVanish: a client and a mesh member whose networks go
// silent (every datagram dropped both ways) are disconnected after the
// node's 10 s silence timeout, with ErrTimeout, everywhere.
func TestDisconnectOnVanish(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 10 s silence timeout")
	}
	leakcheck.Check(t)
	srv, cls := startServerGame(t, 3, false, false, true)
	ms := startMesh(t, []int32{11, 12, 13, 14}, false, false, false, true)
	gone, goneM := cls[2], ms[3]
	gid, gmid := gone.id(), goneM.id()
	gone.conn.vanish.Store(true)
	goneM.conn.vanish.Store(true)
	all := append(append([]*player{srv}, cls...), ms...)
	waitUpTo(t, 30*time.Second, "the silent peers to be dropped", all, func() bool {
		for _, pl := range append([]*player{srv}, cls[:2]...) {
			if !pl.hasEvent(mpeer.PeerDisconnected, gid) {
				return false
			}
		}
		for _, m := range ms[:3] {
			if !m.hasEvent(mpeer.PeerDisconnected, gmid) {
				return false
			}
		}
		return gone.peer.GetConnectionStatus() == mpeer.Disconnected
	})
	if e, _ := srv.event(mpeer.PeerDisconnected, gid); !errors.Is(e.Err, mpeer.ErrTimeout) {
		t.Errorf("server: vanished client's event %+v", e)
	}
	if e, _ := ms[0].event(mpeer.PeerDisconnected, gmid); !errors.Is(e.Err, mpeer.ErrTimeout) {
		t.Errorf("mesh: vanished member's event %+v", e)
	}
	if err := gone.peer.DisconnectReason(); !errors.Is(err, mpeer.ErrTimeout) {
		t.Errorf("vanished client: reason %v", err)
	}
	if got, want := srv.connected(), ids(cls[:2]); !slices.Equal(got, want) {
		t.Errorf("server knows %v, want %v", got, want)
	}
}

// TestDisconnectPeer: a server kicks a client gracefully (the client
// learns ErrKicked; everyone gets the event) and by force (no local
// event, the others are told); a client leaves gracefully.
func TestDisconnectPeer(t *testing.T) {
	leakcheck.Check(t)
	srv, cls := startServerGame(t, 3)
	all := append([]*player{srv}, cls...)
	a, b, c := cls[0], cls[1], cls[2]
	aid, bid, cid := a.id(), b.id(), c.id()
	if err := srv.peer.DisconnectPeer(999, false); !errors.Is(err, mpeer.ErrInvalidTarget) {
		t.Fatalf("unknown peer: %v", err)
	}
	if err := srv.peer.DisconnectPeer(aid, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a kicked", all, func() bool {
		return a.peer.GetConnectionStatus() == mpeer.Disconnected && srv.hasEvent(mpeer.PeerDisconnected, aid) &&
			b.hasEvent(mpeer.PeerDisconnected, aid) && c.hasEvent(mpeer.PeerDisconnected, aid)
	})
	if e, _ := a.event(mpeer.PeerDisconnected, 1); !errors.Is(e.Err, mpeer.ErrKicked) {
		t.Errorf("kicked client's event %+v", e)
	}
	if err := a.peer.DisconnectReason(); !errors.Is(err, mpeer.ErrKicked) {
		t.Errorf("kicked client's reason %v", err)
	}

	if err := srv.peer.DisconnectPeer(bid, true); err != nil {
		t.Fatal(err)
	}
	if srv.pump(); srv.hasEvent(mpeer.PeerDisconnected, bid) {
		t.Error("forced disconnect raised an event on the server")
	}
	waitFor(t, "b dropped", all, func() bool {
		return b.peer.GetConnectionStatus() == mpeer.Disconnected && c.hasEvent(mpeer.PeerDisconnected, bid)
	})
	if err := c.peer.DisconnectPeer(bid, false); !errors.Is(err, mpeer.ErrInvalidTarget) {
		t.Errorf("a client disconnecting another client: %v", err)
	}
	if err := c.peer.DisconnectPeer(1, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "c gone", all, func() bool {
		return c.peer.GetConnectionStatus() == mpeer.Disconnected && srv.hasEvent(mpeer.PeerDisconnected, cid)
	})
	if e, _ := c.event(mpeer.PeerDisconnected, 1); e.Err != nil {
		t.Errorf("leaving client's event %+v", e)
	}
	// A forced disconnect raises no event, so the event log still lists b;
	// the server has forgotten it all the same.
	if got := srv.connected(); !slices.Equal(got, []int32{bid}) {
		t.Errorf("server's events list %v, want only the forced-out %d", got, bid)
	}
	if err := srv.put(bid, mpeer.Reliable, 0, "x"); !errors.Is(err, mpeer.ErrInvalidTarget) {
		t.Errorf("sending to a client disconnected by force: %v", err)
	}
}

// TestRelayBackpressure: a client that stops reading fills its receive
// window, then the server's send queue to it. The server holds the
// reliable forwards it cannot queue and reads no more reliable data, so
// the sender waits (PutPacket fails and is retried) instead of the server
// dropping anything; once the slow client reads again every packet
// arrives, in order, and none was lost at the server.
func TestRelayBackpressure(t *testing.T) {
	leakcheck.Check(t)
	srv, cs := startServerGame(t, 2)
	a, slow := cs[0], cs[1]
	a.peer.SetTargetPeer(slow.peer.GetUniqueID())
	a.peer.SetTransferMode(mpeer.Reliable)
	const total = 40 // 1 MiB each: well past the window and the server's queue
	msg := make([]byte, mpeer.MaxReliablePacketSize)
	sent, deadline := 0, time.Now().Add(60*time.Second)
	send := func() {
		binary.BigEndian.PutUint32(msg, uint32(sent))
		if a.peer.PutPacket(msg) == nil {
			sent++
		}
	}
	for sent < total && srv.peer.Stats().RelaysHeld == 0 && time.Now().Before(deadline) {
		send()
		srv.pump()
		a.pump() // the slow client does not poll: it reads nothing
		time.Sleep(time.Millisecond)
	}
	if srv.peer.Stats().RelaysHeld == 0 {
		t.Fatalf("the server never had to hold a forward after %d packets", sent)
	}
	all := []*player{srv, a, slow}
	for sent < total && time.Now().Before(deadline) {
		send()
		for _, pl := range all {
			pl.pump()
		}
		time.Sleep(time.Millisecond)
	}
	waitUpTo(t, 60*time.Second, "every packet at the slow client", all, func() bool { return len(slow.got) >= total })
	for i, g := range slow.got {
		if g.from != a.peer.GetUniqueID() || len(g.data) != len(msg) || binary.BigEndian.Uint32([]byte(g.data)) != uint32(i) {
			t.Fatalf("packet %d: from %d, %d bytes, number %d", i, g.from, len(g.data), binary.BigEndian.Uint32([]byte(g.data)))
		}
	}
	if len(slow.got) != total {
		t.Errorf("%d packets, want %d", len(slow.got), total)
	}
	if st := srv.peer.Stats(); st.RelayErrors != 0 || st.PacketsRelayed != total {
		t.Errorf("server stats %+v: want %d relayed, no errors", st, total)
	}
	t.Logf("server held a forward %d times", srv.peer.Stats().RelaysHeld)
}
