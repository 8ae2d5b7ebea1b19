package mpeer_test

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/p2p/mpeer"
)

// The hostile tests speak the wire format (doc.go) by hand from plain
// nodes, as a cheating or broken peer would.

const rawFlags = channels.Reliable | channels.FlushHint

func le32(v int32) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }

func joinMsg(version byte, id int32) []byte { return append([]byte{0x01, version}, le32(id)...) }
func helloMsg(version byte, id int32) []byte {
	return append([]byte{0x07, version}, le32(id)...)
}
func addMsg(id int32) []byte { return append([]byte{0x04}, le32(id)...) }
func delMsg(id int32) []byte { return append([]byte{0x05}, le32(id)...) }

func dataMsg(src, dst int32, payload string) []byte {
	return append(append(le32(src), le32(dst)...), payload...)
}

func rawSend(t *testing.T, from *p2p.Node, to p2p.PeerID, ch int, b []byte) {
	t.Helper()
	if err := from.Send(to, b, rawFlags, ch); err != nil {
		t.Fatal(err)
	}
}

// rawRecv waits, pumping the players, for the next packet on ch at n.
func rawRecv(t *testing.T, n *p2p.Node, ch int, players []*player) []byte {
	t.Helper()
	var data []byte
	waitFor(t, "a message at the raw node", players, func() bool {
		acceptAll(n)
		p, ok := n.ReadP2PPacket(ch)
		data = p.Data
		return ok
	})
	return data
}

// acceptAll accepts every session a raw node is asked for.
func acceptAll(n *p2p.Node) {
	for {
		select {
		case e := <-n.Events():
			if r, ok := e.(p2p.SessionRequest); ok {
				n.AcceptP2PSessionWithUser(r.Peer)
			}
		default:
			return
		}
	}
}

// TestHostileClients: a server facing nodes that send junk before
// joining, join with bad ids, spoof another client's id, send short
// headers and impossible targets counts and drops each, answers bad joins
// with the reason, and keeps relaying for honest clients.
func TestHostileClients(t *testing.T) {
	leakcheck.Check(t)
	srv, cls := startServerGame(t, 1)
	honest := cls[0]
	all := []*player{srv, honest}
	h := newNode(t, nil)
	introduce(srv.node, h)
	sp := srv.node.PeerID()
	dataCh := mpeer.DataChannel(0, mpeer.Reliable)

	rawSend(t, h, sp, dataCh, dataMsg(4242, 0, "before joining"))
	rawSend(t, h, sp, mpeer.ControlChannel, []byte{0xEE})
	rawSend(t, h, sp, mpeer.ControlChannel, []byte{0x01, 1}) // truncated JOIN
	rawSend(t, h, sp, mpeer.ControlChannel, []byte{})
	rawSend(t, h, sp, mpeer.ControlChannel, addMsg(5))
	waitFor(t, "the junk counted", all, func() bool {
		st := srv.peer.Stats()
		return st.DroppedNotJoined == 1 && st.DroppedMalformed == 3 && st.DroppedUnexpected == 1
	})

	rawSend(t, h, sp, mpeer.ControlChannel, joinMsg(1, 4242))
	if m := rawRecv(t, h, mpeer.ControlChannel, all); !slices.Equal(m, []byte{0x02, 1}) {
		t.Fatalf("answer to a good JOIN: % x", m)
	}
	if m := rawRecv(t, h, mpeer.ControlChannel, all); !slices.Equal(m, addMsg(honest.id())) {
		t.Fatalf("after ACCEPT: % x, want ADD of the honest client", m)
	}
	waitFor(t, "the honest client told", all, func() bool { return honest.hasEvent(mpeer.PeerConnected, 4242) })

	before := srv.peer.Stats()
	for _, b := range [][]byte{
		dataMsg(honest.id(), 0, "spoofed"), // another client's id
		{1, 2, 3},                          // shorter than the header
		dataMsg(4242, math.MinInt32, "no such target"),
		dataMsg(4242, 999, "unknown target"),
		dataMsg(4242, 4242, "to itself"),
		dataMsg(4242, 0, "ok"),
	} {
		rawSend(t, h, sp, dataCh, b)
	}
	waitFor(t, "the honest packet relayed", all, func() bool {
		return len(honest.received("ok")) == 1 && len(srv.received("ok")) == 1
	})
	st := srv.peer.Stats()
	if st.DroppedSpoofed-before.DroppedSpoofed != 1 || st.DroppedMalformed-before.DroppedMalformed != 2 ||
		st.DroppedMisrouted-before.DroppedMisrouted != 2 {
		t.Errorf("stats before %+v, after %+v", before, st)
	}
	if g := honest.received("ok")[0]; g.from != 4242 {
		t.Errorf("relayed from %d, want 4242", g.from)
	}
	for _, pl := range all {
		if len(pl.received("spoofed")) != 0 || len(pl.received("to itself")) != 0 {
			t.Errorf("player %d got a dropped packet: %+v", pl.id(), pl.got)
		}
	}

	// Bad joins, each from its own node, learn why.
	for _, tc := range []struct {
		join   []byte
		reason byte
	}{
		{joinMsg(1, 1), 1},                        // the server's id
		{joinMsg(1, 0), 1},                        // the broadcast id
		{joinMsg(1, -5), 1},                       // negative
		{joinMsg(1, honest.id()), 2},              // in use
		{joinMsg(9, 5000), 5},                     // another protocol version
		{append(joinMsg(1, 6000), 0xAA, 0xBB), 0}, // trailing bytes are ignored: accepted
	} {
		bad := newNode(t, nil)
		introduce(srv.node, bad)
		rawSend(t, bad, sp, mpeer.ControlChannel, tc.join)
		m := rawRecv(t, bad, mpeer.ControlChannel, all)
		want := []byte{0x03, tc.reason}
		if tc.reason == 0 {
			want = []byte{0x02, 1}
		}
		if !slices.Equal(m, want) {
			t.Errorf("JOIN % x: answer % x, want % x", tc.join, m, want)
		}
	}
	if st := srv.peer.Stats(); st.JoinsRejected != 5 {
		t.Errorf("JoinsRejected %d, want 5", st.JoinsRejected)
	}
	if got, want := srv.connected(), []int32{honest.id(), 4242, 6000}; !slices.Equal(got, sorted(want)) {
		t.Errorf("server knows %v, want %v", got, sorted(want))
	}
}

func sorted(s []int32) []int32 { slices.Sort(s); return s }

// waiting reports whether a packet waits on node channel ch.
func waiting(n *p2p.Node, ch int) bool {
	_, ok := n.IsP2PPacketAvailable(ch)
	return ok
}

// TestHostileServer: a client facing a fake server that announces bad
// ids, sends control messages out of place, relays packets with forged
// sources or targets that exclude the client, counts and drops each; a
// packet from a client not yet announced is held until its ADD arrives.
func TestHostileServer(t *testing.T) {
	leakcheck.Check(t)
	fake := newNode(t, nil)
	cl := newPlayer(t, false)
	introduce(fake, cl.node)
	all := []*player{cl}
	if err := cl.peer.CreateClient(cl.node, fake.PeerID(), mpeer.Config{ClientID: 600}); err != nil {
		t.Fatal(err)
	}
	if m := rawRecv(t, fake, mpeer.ControlChannel, all); !slices.Equal(m, joinMsg(1, 600)) {
		t.Fatalf("JOIN on the wire: % x", m)
	}
	cp := cl.node.PeerID()
	dataCh := mpeer.DataChannel(2, mpeer.UnreliableOrdered)
	rawSend(t, fake, cp, dataCh, dataMsg(1, 0, "before ACCEPT"))
	rawSend(t, fake, cp, mpeer.ControlChannel, []byte{0x02, 1})
	waitFor(t, "the client connected", all, func() bool {
		return cl.peer.GetConnectionStatus() == mpeer.Connected && len(cl.received("before ACCEPT")) == 1
	})

	for _, m := range [][]byte{
		addMsg(1), addMsg(600), addMsg(-4), // bad ids: the server, ourselves, negative
		delMsg(777),    // not announced
		{0x02, 1},      // a second ACCEPT
		{0x03, 2},      // REJECT once in
		joinMsg(1, 9),  // JOIN to a client
		helloMsg(1, 9), // HELLO to a client
		{0xEE}, {0x04}, // unknown type, truncated ADD
		addMsg(700), addMsg(700), // the second is a duplicate
	} {
		rawSend(t, fake, cp, mpeer.ControlChannel, m)
	}
	waitFor(t, "the control junk counted", all, func() bool {
		st := cl.peer.Stats()
		return st.DroppedBadID == 3 && st.DroppedUnexpected == 6 && st.DroppedMalformed == 2 &&
			cl.hasEvent(mpeer.PeerConnected, 700)
	})

	for _, d := range [][]byte{
		dataMsg(600, 0, "from myself"), dataMsg(0, 0, "from 0"), dataMsg(-3, 0, "from -3"),
		dataMsg(700, 601, "for another"), dataMsg(700, -600, "all but me"), dataMsg(700, 1, "for the server"),
		{9, 9},
		dataMsg(55, 0, "early"), // 55 is not announced yet: held
		dataMsg(700, 600, "to me"),
	} {
		rawSend(t, fake, cp, dataCh, d)
	}
	waitFor(t, "the last good packet", all, func() bool { return len(cl.received("to me")) == 1 })
	if st := cl.peer.Stats(); st.DroppedSpoofed != 3 || st.DroppedMisrouted != 3 || st.DroppedMalformed != 3 {
		t.Errorf("stats %+v", st)
	}
	if len(cl.received("early")) != 0 {
		t.Fatal("a packet from an unannounced client was delivered")
	}
	rawSend(t, fake, cp, mpeer.ControlChannel, addMsg(55))
	waitFor(t, "the held packet, once 55 is announced", all, func() bool { return len(cl.received("early")) == 1 })
	if g := cl.received("early")[0]; g.from != 55 || g.ch != 2 || g.mode != mpeer.UnreliableOrdered {
		t.Errorf("held packet reported as %+v", g)
	}
	if i, j := slices.IndexFunc(cl.events, func(e mpeer.Event) bool { return e.Peer == 55 }), len(cl.events); i < 0 || i >= j {
		t.Errorf("no PeerConnected for 55: %v", cl.events)
	}
	for _, bad := range []string{"from myself", "from 0", "from -3", "for another", "all but me", "for the server"} {
		if len(cl.received(bad)) != 0 {
			t.Errorf("delivered %q", bad)
		}
	}
	rawSend(t, fake, cp, mpeer.ControlChannel, delMsg(700))
	rawSend(t, fake, cp, mpeer.ControlChannel, []byte{0x06}) // BYE: kicked
	waitFor(t, "the client kicked", all, func() bool { return cl.peer.GetConnectionStatus() == mpeer.Disconnected })
	if !cl.hasEvent(mpeer.PeerDisconnected, 700) || !errors.Is(cl.peer.DisconnectReason(), mpeer.ErrKicked) {
		t.Errorf("events %v, reason %v", cl.events, cl.peer.DisconnectReason())
	}
}

// TestHostileMeshPeers: a mesh member facing a node that introduces
// itself with another id, or another protocol version, fails that
// connection; data a member sends before its introduction is held, and
// one with a forged source is dropped.
func TestHostileMeshPeers(t *testing.T) {
	leakcheck.Check(t)
	m := newPlayer(t, false)
	if err := m.peer.CreateMesh(m.node, 1, mpeer.Config{}); err != nil {
		t.Fatal(err)
	}
	liar, old, late := newNode(t, nil), newNode(t, nil), newNode(t, nil)
	introduce(m.node, liar, old, late)
	all := []*player{m}
	mp := m.node.PeerID()
	for id, n := range map[int32]*p2p.Node{50: liar, 51: old, 52: late} {
		if err := m.peer.AddMeshPeer(id, n.PeerID()); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*p2p.Node{liar, old, late} {
		if msg := rawRecv(t, n, mpeer.ControlChannel, all); !slices.Equal(msg, helloMsg(1, 1)) {
			t.Fatalf("HELLO on the wire: % x", msg)
		}
	}
	rawSend(t, liar, mp, mpeer.ControlChannel, helloMsg(1, 60))
	rawSend(t, old, mp, mpeer.ControlChannel, helloMsg(7, 51))
	dataCh := mpeer.DataChannel(0, mpeer.Reliable)
	rawSend(t, late, mp, dataCh, dataMsg(52, 0, "early"))
	rawSend(t, late, mp, dataCh, dataMsg(53, 0, "forged"))
	waitFor(t, "the liar and the old one refused, the forgery counted", all, func() bool {
		return m.hasEvent(mpeer.ConnectionFailed, 50) && m.hasEvent(mpeer.ConnectionFailed, 51) &&
			m.peer.Stats().DroppedSpoofed == 2 && !waiting(m.node, dataCh)
	})
	if e, _ := m.event(mpeer.ConnectionFailed, 50); !errors.Is(e.Err, mpeer.ErrIDMismatch) {
		t.Errorf("liar: %+v", e)
	}
	if e, _ := m.event(mpeer.ConnectionFailed, 51); !errors.Is(e.Err, mpeer.ErrVersionMismatch) {
		t.Errorf("old version: %+v", e)
	}
	if len(m.received("early")) != 0 {
		t.Fatal("data delivered before the introduction")
	}
	rawSend(t, late, mp, mpeer.ControlChannel, helloMsg(1, 52))
	waitFor(t, "the late member and its held packet", all, func() bool {
		return m.hasEvent(mpeer.PeerConnected, 52) && len(m.received("early")) == 1
	})
	if got := m.connected(); !slices.Equal(got, []int32{52}) {
		t.Errorf("connected %v", got)
	}
	if len(m.received("forged")) != 0 {
		t.Error("forged packet delivered")
	}
}

// TestJoinTimeouts: a client whose server never answers fails with
// ErrTimeout; a server closes a session that never sends its JOIN.
func TestJoinTimeouts(t *testing.T) {
	leakcheck.Check(t)
	const timeout = 300 * time.Millisecond
	mute := newNode(t, nil)
	cl := newPlayer(t, false)
	introduce(mute, cl.node)
	if err := cl.peer.CreateClient(cl.node, mute.PeerID(), mpeer.Config{JoinTimeout: timeout}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the join to time out", []*player{cl}, func() bool {
		acceptAll(mute)
		return cl.peer.GetConnectionStatus() == mpeer.Disconnected
	})
	if e, ok := cl.event(mpeer.ConnectionFailed, 1); !ok || !errors.Is(e.Err, mpeer.ErrTimeout) {
		t.Errorf("events %v", cl.events)
	}

	srv := newPlayer(t, false)
	if err := srv.peer.CreateServer(srv.node, mpeer.Config{JoinTimeout: timeout}); err != nil {
		t.Fatal(err)
	}
	silent := newNode(t, nil)
	introduce(srv.node, silent)
	rawSend(t, silent, srv.node.PeerID(), 5, []byte("not a join")) // a channel of its own: opens a session
	closed := false
	waitFor(t, "the silent session closed", []*player{srv}, func() bool {
		for {
			select {
			case e := <-silent.Events():
				switch e.(type) {
				case p2p.SessionClosed, p2p.SessionConnectFail:
					closed = true
				}
				continue
			default:
			}
			break
		}
		return closed && srv.peer.Stats().JoinTimeouts == 1
	})
}
