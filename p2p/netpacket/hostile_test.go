package netpacket_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/p2p/netpacket"
)

const (
	chControl     = netpacket.ChannelBase
	chReliable    = netpacket.ChannelBase + 1
	chSequenced   = netpacket.ChannelBase + 2
	chUnsequenced = netpacket.ChannelBase + 3
)

// rawPeer is a bare p2p.Node that speaks the wire format by hand, as a
// hostile or broken peer would.
type rawPeer struct {
	t    *testing.T
	node *p2p.Node
	to   p2p.PeerID
}

func newRawPeer(t *testing.T, to *p2p.Node) *rawPeer {
	n := newNode(t, p2p.Config{})
	n.AddPeerAddr(to.PeerID(), addrOf(to))
	return &rawPeer{t: t, node: n, to: to.PeerID()}
}

func (p *rawPeer) send(ch int, data []byte) {
	p.t.Helper()
	if err := p.node.Send(p.to, data, channels.Reliable|channels.FlushHint, ch); err != nil {
		p.t.Fatal(err)
	}
}

// read waits for a message on ch.
func (p *rawPeer) read(r *rig, ch int) []byte {
	p.t.Helper()
	var got []byte
	r.until("a message to the raw peer", func() bool {
		pkt, ok := p.node.ReadP2PPacket(ch)
		got = pkt.Data
		return ok
	})
	return got
}

// step sends one hostile message and frames until the counter it should
// raise has moved, then checks that no other counter did.
type step struct {
	name string
	ch   int
	data []byte
	want func(*netpacket.Stats) *uint64
}

func runSteps(t *testing.T, r *rig, p *rawPeer, stats func() netpacket.Stats, steps []step) {
	t.Helper()
	for _, s := range steps {
		before := stats()
		p.send(s.ch, s.data)
		r.until(s.name, func() bool {
			now := stats()
			return *s.want(&now) == *s.want(&before)+1
		})
		want := before
		*s.want(&want)++
		if got := stats(); got != want {
			t.Fatalf("%s: stats %+v, want %+v", s.name, got, want)
		}
	}
}

func malformed(s *netpacket.Stats) *uint64  { return &s.Malformed }
func notJoined(s *netpacket.Stats) *uint64  { return &s.NotJoined }
func badID(s *netpacket.Stats) *uint64      { return &s.BadID }
func badControl(s *netpacket.Stats) *uint64 { return &s.BadControl }
func receivedN(s *netpacket.Stats) *uint64  { return &s.Received }
func relayedN(s *netpacket.Stats) *uint64   { return &s.Relayed }

// TestHostileToHost: a peer speaking the wire format by hand sends the
// host everything a broken or hostile client could. Each message is
// dropped and counted in its counter and nothing else moves; once joined,
// its packets carry the id the host gave it, whatever it writes.
func TestHostileToHost(t *testing.T) {
	leakcheck.Check(t)
	r, c := startRig(t, 1)
	host := r.host
	atk := newRawPeer(t, host.node)
	runSteps(t, r, atk, host.host.Stats, []step{
		{"data before joining", chReliable, []byte{0, 0, 'x'}, notJoined},
		{"empty control", chControl, nil, malformed},
		{"unknown control type", chControl, []byte{0x7F, 1, 2}, badControl},
		{"a welcome sent to the host", chControl, []byte{0x02, 0, 1, 0, 31}, badControl},
		{"an unused reserved channel", netpacket.ChannelBase + 7, []byte{1, 2, 3}, malformed},
	})

	atk.send(chControl, []byte{0x01, 0x01, 'v', '1'})
	if w := atk.read(r, chControl); !bytes.Equal(w, []byte{0x02, 0, 2, 0, 31}) {
		t.Fatalf("welcome % x", w)
	}
	if !slices.Equal(host.host.Clients(), []uint16{1, 2}) {
		t.Fatalf("clients %v", host.host.Clients())
	}
	runSteps(t, r, atk, host.host.Stats, []step{
		{"a 1-byte data message", chReliable, []byte{0}, malformed},
		{"a header without a packet", chSequenced, []byte{0, 0}, malformed},
		{"a packet over 64 KiB", chReliable, append([]byte{0, 0}, make([]byte, netpacket.MaxPacketSize+1)...), malformed},
		{"recipient out of range", chReliable, []byte{0, 200, 'x'}, badID},
		{"recipient is the sender", chUnsequenced, []byte{0, 2, 'x'}, badID},
		{"recipient held by no one", chReliable, []byte{0, 30, 'x'}, badID},
		{"a second join", chControl, []byte{0x01, 0x01, 'v', '1'}, badControl},
		{"to the host", chSequenced, []byte{0, 0, 'h', 'i'}, receivedN},
		{"to client 1", chReliable, []byte{0, 1, 'y', 'o'}, relayedN},
	})
	r.until("the relayed packet", func() bool { return c[0].rec.has(2, "yo") })
	if !host.rec.has(2, "hi") || len(host.rec.got) != 1 || len(c[0].rec.got) != 1 {
		t.Fatalf("host got %v, client got %v", host.rec.got, c[0].rec.got)
	}

	// A join of another wire version is refused as malformed.
	other := newRawPeer(t, host.node)
	other.send(chControl, []byte{0x01, 0x09, 'v', '1'})
	if m := other.read(r, chControl); !bytes.Equal(m, []byte{0x03, byte(netpacket.ReasonProtocol)}) {
		t.Fatalf("refusal % x", m)
	}

	// Garbage on every reserved channel: counted, never a panic, and the
	// real client still gets through.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		atk.send(netpacket.ChannelBase+rng.IntN(netpacket.ChannelCount), b)
	}
	send(t, c[0], netpacket.Reliable|netpacket.FlushHint, "still here", 0)
	r.until("the real client", func() bool { return host.rec.has(1, "still here") })
	t.Logf("host stats %+v", host.host.Stats())
}

// TestHostileToClient: a fake host speaking the wire format by hand sends
// a client malformed and out-of-place messages. Each is dropped and
// counted; sessions from strangers are refused.
func TestHostileToClient(t *testing.T) {
	leakcheck.Check(t)
	fake := newNode(t, p2p.Config{})
	r := &rig{t: t}
	p := &player{node: newNode(t, p2p.Config{}), rec: &recorder{}}
	p.node.AddPeerAddr(fake.PeerID(), addrOf(fake))
	cl, err := netpacket.Join(p.node, fake.PeerID(), p.rec.callbacks("v1"), netpacket.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	p.client = cl
	r.players = []*player{p}
	host := &rawPeer{t: t, node: fake, to: p.node.PeerID()}

	r.until("the join request", func() bool {
		select {
		case e := <-fake.Events():
			fake.AcceptP2PSessionWithUser(e.(p2p.SessionRequest).Peer)
		default:
		}
		_, ok := fake.IsP2PPacketAvailable(chControl)
		return ok
	})
	if j := host.read(r, chControl); !bytes.Equal(j, []byte{0x01, 0x01, 'v', '1'}) {
		t.Fatalf("join % x", j)
	}
	runSteps(t, r, host, cl.Stats, []step{
		{"unknown control type", chControl, []byte{0x7F}, badControl},
		{"welcome with id 0", chControl, []byte{0x02, 0, 0, 0, 4}, malformed},
		{"welcome with id over max", chControl, []byte{0x02, 0, 5, 0, 4}, malformed},
		{"welcome with max 0xFFFF", chControl, []byte{0x02, 0, 1, 0xFF, 0xFF}, malformed},
		{"short welcome", chControl, []byte{0x02, 0, 1}, malformed},
		{"empty control", chControl, nil, malformed},
	})
	if p.rec.starts != 0 || cl.Frame() != nil {
		t.Fatal("started on a bad welcome")
	}
	// Data sent before the welcome waits in the node, then arrives.
	host.send(chReliable, []byte{0, 0, 'e', 'a', 'r', 'l', 'y'})
	host.send(chControl, []byte{0x02, 0, 2, 0, 4})
	r.until("start and the early packet", func() bool { return p.rec.starts == 1 && p.rec.has(0, "early") })
	if p.rec.id != 2 {
		t.Fatalf("id %d", p.rec.id)
	}
	runSteps(t, r, host, cl.Stats, []step{
		{"a second welcome", chControl, []byte{0x02, 0, 3, 0, 4}, badControl},
		{"a refusal after the welcome", chControl, []byte{0x03, 2}, badControl},
		{"a 1-byte data message", chReliable, []byte{0}, malformed},
		{"sender is this client", chReliable, []byte{0, 2, 'x'}, badID},
		{"sender is Broadcast", chSequenced, []byte{0xFF, 0xFF, 'x'}, badID},
		{"sender over max", chUnsequenced, []byte{0, 5, 'x'}, badID},
		{"a relayed packet", chReliable, []byte{0, 3, 'o', 'k'}, receivedN},
	})
	if !p.rec.has(3, "ok") || p.err != nil {
		t.Fatalf("got %v, err %v", p.rec.got, p.err)
	}

	// A stranger's session is refused; its packet never arrives.
	stranger := newRawPeer(t, p.node)
	stranger.send(chReliable, []byte{0, 0, 's'})
	r.until("the stranger refused", func() bool { return cl.Stats().Rejected == 1 })
	if p.rec.has(0, "s") {
		t.Fatal("the stranger's packet arrived")
	}

	if err := p.rec.send(netpacket.Reliable, []byte("x"), 5); !errors.Is(err, netpacket.ErrUnknownClient) {
		t.Fatalf("send to 5 (max 4): %v", err)
	}
	send(t, p, netpacket.Reliable|netpacket.FlushHint, "to four", 4)
	if m := host.read(r, chReliable); !bytes.Equal(m, []byte("\x00\x04to four")) {
		t.Fatalf("client's data message % x", m)
	}
}

// TestJoinTimeout: a peer whose session the host accepted but that never
// joins is closed after Config.JoinTimeout.
func TestJoinTimeout(t *testing.T) {
	leakcheck.Check(t)
	r := newRig(t, p2p.Config{}, netpacket.Config{JoinTimeout: 200 * time.Millisecond})
	atk := newRawPeer(t, r.host.node)
	atk.send(chSequenced, []byte{0, 0, 'x'})
	r.until("the session closed", func() bool {
		select {
		case e := <-atk.node.Events():
			return e == p2p.SessionClosed{Peer: r.host.node.PeerID()}
		default:
			return false
		}
	})
	if st := r.host.host.Stats(); st.Rejected != 1 || st.NotJoined != 1 {
		t.Fatalf("stats %+v", st)
	}
}
