package mpeer

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/p2p"
)

// TestDataChannelMapping: every (channel, mode) has its own node channel,
// inside 0xFD00–0xFFFF, apart from the control channel, and maps back.
func TestDataChannelMapping(t *testing.T) {
	seen := map[int]bool{ControlChannel: true}
	for ch := 0; ch <= MaxTransferChannel; ch++ {
		for m := Unreliable; m <= Reliable; m++ {
			n := DataChannel(ch, m)
			if n < DataChannelBase || n > 0xFFFF || seen[n] {
				t.Fatalf("(%d, %v) → node channel %#x: out of range or taken", ch, m, n)
			}
			seen[n] = true
			if c, mm := splitDataChannel(n - DataChannelBase); c != ch || mm != m {
				t.Fatalf("node channel %#x maps back to (%d, %v)", n, c, mm)
			}
		}
	}
	if len(seen) != numDataChannels+1 || DataChannel(MaxTransferChannel, Reliable) != 0xFFFF {
		t.Fatalf("%d node channels used", len(seen))
	}
}

// TestModeFlags: the flags of docs/ARCHITECTURE.md ("Send types") and the package table.
func TestModeFlags(t *testing.T) {
	for m, want := range map[TransferMode]channels.Flags{Unreliable: 6, UnreliableOrdered: 4, Reliable: 5} {
		if got := m.Flags(); got != want || got.Validate() != nil {
			t.Errorf("%v: flags %d, want %d", m, got, want)
		}
	}
}

// TestWireGolden: the byte layouts documented in doc.go.
func TestWireGolden(t *testing.T) {
	for _, tc := range []struct {
		c    control
		want []byte
	}{
		{control{typ: msgJoin, version: 1, id: 0x01020304}, []byte{0x01, 1, 4, 3, 2, 1}},
		{control{typ: msgAccept, version: 1}, []byte{0x02, 1}},
		{control{typ: msgReject, reason: reasonIDInUse}, []byte{0x03, 2}},
		{control{typ: msgAdd, id: 7}, []byte{0x04, 7, 0, 0, 0}},
		{control{typ: msgDel, id: -2}, []byte{0x05, 0xFE, 0xFF, 0xFF, 0xFF}},
		{control{typ: msgBye}, []byte{0x06}},
		{control{typ: msgHello, version: 1, id: 9}, []byte{0x07, 1, 9, 0, 0, 0}},
	} {
		b := tc.c.append(nil)
		if !bytes.Equal(b, tc.want) {
			t.Errorf("%+v: % x, want % x", tc.c, b, tc.want)
		}
		if c, err := parseControl(b); err != nil || c != tc.c {
			t.Errorf("% x parses as %+v, %v", b, c, err)
		}
		if _, err := parseControl(b[:len(b)-1]); err == nil {
			t.Errorf("% x: truncated, parsed", b[:len(b)-1])
		}
	}
	h := appendHeader(nil, 7, 0)
	if want := []byte{7, 0, 0, 0, 0, 0, 0, 0}; !bytes.Equal(h, want) {
		t.Errorf("header % x, want % x", h, want)
	}
	if src, dst, payload, ok := parseHeader(append(appendHeader(nil, 2, -3), "hi"...)); !ok || src != 2 || dst != -3 || string(payload) != "hi" {
		t.Errorf("header parsed as %d %d %q %v", src, dst, payload, ok)
	}
	if _, _, _, ok := parseHeader(make([]byte, HeaderSize-1)); ok {
		t.Error("a 7-byte packet parsed")
	}
	for r, want := range reasonErrs {
		if reasonErr(r) != want {
			t.Errorf("reason %d", r)
		}
	}
	if reasonErr(200) != ErrRejected {
		t.Error("unknown reason")
	}
}

func FuzzParseControl(f *testing.F) {
	f.Add([]byte{0x01, 1, 4, 3, 2, 1})
	f.Add([]byte{0x03, 2})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseControl(b)
		if err != nil {
			return
		}
		again, err := parseControl(c.append(nil))
		if err != nil || again != c {
			t.Fatalf("% x → %+v → %+v, %v", b, c, again, err)
		}
	})
}

// testNode is a node that talks to no one: sends to the made-up peers
// below only queue.
func testNode(t testing.TB) *p2p.Node {
	n, err := p2p.New(p2p.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

var (
	nodeA = p2p.PeerID{1}
	nodeB = p2p.PeerID{2}
)

// fuzzPeers returns a server with clients 5 (nodeA) and 6 (nodeB), a
// client of server nodeA that knows client 6, and a mesh member with
// members 5 (nodeA, connected) and 6 (nodeB, pending).
func fuzzPeers(t testing.TB) []*Peer {
	n := testNode(t)
	srv := &Peer{}
	srv.CreateServer(n, Config{})
	srv.byNode[nodeA] = &remote{node: nodeA, id: 5, state: joined, member: true}
	srv.byNode[nodeB] = &remote{node: nodeB, id: 6, state: joined, member: true}
	srv.byID[5], srv.byID[6] = srv.byNode[nodeA], srv.byNode[nodeB]

	cl := &Peer{}
	cl.start(n, Config{}, roleClient, 9)
	cl.server, cl.status = nodeA, Connected
	cl.byNode[nodeA] = &remote{node: nodeA, id: 1, state: joined, member: true}
	cl.byID[1] = cl.byNode[nodeA]
	cl.byID[6] = &remote{id: 6, state: joined, member: true, relayed: true}

	mesh := &Peer{}
	mesh.CreateMesh(n, 9, Config{})
	mesh.byNode[nodeA] = &remote{node: nodeA, id: 5, state: joined, member: true}
	mesh.byID[5] = mesh.byNode[nodeA]
	mesh.byNode[nodeB] = &remote{node: nodeB, id: 6}
	return []*Peer{srv, cl, mesh}
}

// FuzzPeerInput feeds arbitrary control and data messages, from a member
// and a pending node, to a server, a client and a mesh member: nothing
// panics and every packet delivered names a sender the peer knows.
func FuzzPeerInput(f *testing.F) {
	f.Add([]byte{0x01, 1, 7, 0, 0, 0}, []byte{5, 0, 0, 0, 0, 0, 0, 0, 'x'}, uint16(0), false)
	f.Add([]byte{0x04, 6, 0, 0, 0}, []byte{6, 0, 0, 0, 9, 0, 0, 0}, uint16(767), true)
	f.Add([]byte{0x06}, []byte{1, 0, 0, 0, 0xFB, 0xFF, 0xFF, 0xFF}, uint16(2), false)
	f.Add([]byte{0x07, 1, 6, 0, 0, 0}, []byte{0, 0, 0, 0x80, 0, 0, 0, 0x80}, uint16(5), true)
	f.Fuzz(func(t *testing.T, ctl, data []byte, idx uint16, fromB bool) {
		from := nodeA
		if fromB {
			from = nodeB
		}
		now := time.Now()
		for _, p := range fuzzPeers(t) {
			p.handleData(from, int(idx)%numDataChannels, data, now)
			p.handleControl(from, ctl, now)
			p.handleData(from, int(idx)%numDataChannels, data, now)
			p.releaseHeld(now.Add(holdTime + time.Second))
			for _, pk := range p.in[p.inHead:] {
				if pk.from < 1 || pk.from == p.id || pk.from == math.MinInt32 {
					t.Fatalf("delivered a packet from %d to %d", pk.from, p.id)
				}
			}
			p.checkDeadlines(now.Add(time.Hour))
		}
	})
}

// TestHeldPacketsExpire: a packet from a sender that never becomes known
// is dropped after holdTime and counted; the hold is bounded.
func TestHeldPacketsExpire(t *testing.T) {
	p := fuzzPeers(t)[1] // the client
	now := time.Now()
	idx := DataChannel(0, Reliable) - DataChannelBase
	p.handleData(nodeA, idx, append(appendHeader(nil, 77, 0), "early"...), now)
	p.releaseHeld(now.Add(holdTime / 2))
	if len(p.held) != 1 || p.GetAvailablePacketCount() != 0 {
		t.Fatalf("held %d, available %d", len(p.held), p.GetAvailablePacketCount())
	}
	p.releaseHeld(now.Add(holdTime + time.Millisecond))
	if len(p.held) != 0 || p.heldBytes != 0 || p.stats.DroppedUnknownSender != 1 {
		t.Fatalf("after holdTime: held %d (%d bytes), stats %+v", len(p.held), p.heldBytes, p.stats)
	}
	for range maxHeld + 10 {
		p.handleData(nodeA, idx, appendHeader(nil, 77, 0), now)
	}
	if len(p.held) != maxHeld || p.stats.DroppedUnknownSender != 11 {
		t.Fatalf("held %d, dropped %d", len(p.held), p.stats.DroppedUnknownSender)
	}
	p.clientControl(p.byNode[nodeA], control{typ: msgAdd, id: 77})
	p.releaseHeld(now)
	if p.GetAvailablePacketCount() != maxHeld || p.GetPacketPeer() != 77 {
		t.Fatalf("after ADD: %d available from %d", p.GetAvailablePacketCount(), p.GetPacketPeer())
	}
}
