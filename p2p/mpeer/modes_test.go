package mpeer_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/p2p/mpeer"
)

var modes = []mpeer.TransferMode{mpeer.Unreliable, mpeer.UnreliableOrdered, mpeer.Reliable}

// topologies builds the two kinds of four-player games; the first player
// returned sends, the others receive, and with chaos the sender's socket
// is wrapped.
var topologies = []struct {
	name  string
	start func(t *testing.T, chaos bool) (sender *player, receivers []*player)
}{
	{"client-server", func(t *testing.T, chaos bool) (*player, []*player) {
		srv, cls := startServerGame(t, 3, chaos)
		return cls[0], append([]*player{srv}, cls[1:]...) // the others get it relayed
	}},
	{"mesh", func(t *testing.T, chaos bool) (*player, []*player) {
		ms := startMesh(t, []int32{2, 4, 6, 8}, chaos)
		return ms[0], ms[1:]
	}},
}

// TestChannelsAndModesArriveApart: one packet on every mode of channels
// 0, 1, 2, 254 and 255, each reported with the channel and mode it was
// sent on: no (channel, mode) pair shares a node channel with another.
func TestChannelsAndModesArriveApart(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			leakcheck.Check(t)
			a, rcv := topo.start(t, false)
			all := append([]*player{a}, rcv...)
			var sent []got
			for _, ch := range []int{0, 1, 2, 254, 255} {
				for _, m := range modes {
					g := got{from: a.id(), ch: ch, mode: m, data: fmt.Sprintf("ch%d-%v", ch, m)}
					a.mustPut(0, m, ch, g.data)
					sent = append(sent, g)
				}
			}
			waitFor(t, "every packet everywhere", all, func() bool {
				for _, g := range sent {
					for _, pl := range rcv {
						if len(pl.received(g.data)) == 0 {
							return false // loopback loses nothing in practice; a loss fails by timeout
						}
					}
				}
				return true
			})
			for _, pl := range rcv {
				for _, g := range sent {
					if rx := pl.received(g.data); len(rx) != 1 || rx[0] != g {
						t.Errorf("player %d: got %+v, want %+v", pl.id(), rx, g)
					}
				}
			}
		})
	}
}

// TestTransferModes sends numbered packets in every mode from a player
// whose socket drops 10% of datagrams both ways and holds back 20% of its
// outgoing ones past the next (reordering), to three others: in
// client/server mode the server and, relayed, two clients; in mesh mode
// three members directly. Reliable packets all arrive in order, on two
// channels independently; unreliable ordered ones never arrive after a
// newer one; unreliable ones may arrive in any order, and the test keeps
// sending until they did, so the link demonstrably reorders and the
// ordered check means something.
func TestTransferModes(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			leakcheck.Check(t)
			a, rcv := topo.start(t, true)
			a.conn.lossy.Store(true)
			sent := sendUntilReordered(t, a, rcv)
			for _, pl := range rcv {
				checkModes(t, pl, sent)
			}
		})
	}
}

// sendUntilReordered broadcasts rounds of numbered packets in every mode
// on channel 3, and reliable ones on channel 4, until unreliable ones
// arrived out of order somewhere; it returns how many of each it sent.
func sendUntilReordered(t *testing.T, a *player, rcv []*player) int {
	t.Helper()
	all := append([]*player{a}, rcv...)
	const perRound, maxRounds = 300, 20 // paced datagrams carry many messages: swaps that reorder them are rarer
	sent := 0
	for round := 1; round <= maxRounds; round++ {
		for range perRound {
			for _, m := range modes {
				a.mustPut(0, m, 3, fmt.Sprintf("%d:%d", m, sent))
			}
			a.mustPut(0, mpeer.Reliable, 4, fmt.Sprintf("%d:%d", mpeer.Reliable, sent))
			sent++
		}
		waitFor(t, "every reliable packet", all, func() bool {
			for _, pl := range rcv {
				if len(seqs(pl, 3, mpeer.Reliable)) != sent || len(seqs(pl, 4, mpeer.Reliable)) != sent {
					return false
				}
			}
			return true
		})
		for _, pl := range rcv {
			if !increasing(seqs(pl, 3, mpeer.Unreliable)) {
				return sent // the link reordered
			}
		}
	}
	t.Fatalf("%d unreliable packets never arrived out of order: the link does not reorder", sent)
	return 0
}

// checkModes checks what pl received of sent packets of each mode.
func checkModes(t *testing.T, pl *player, sent int) {
	t.Helper()
	for _, ch := range []int{3, 4} {
		if s := seqs(pl, ch, mpeer.Reliable); !isRange(s, sent) {
			t.Errorf("player %d channel %d: reliable packets %d, not 0..%d in order", pl.id(), ch, len(s), sent-1)
		}
	}
	ord := seqs(pl, 3, mpeer.UnreliableOrdered)
	if !increasing(ord) {
		t.Errorf("player %d: unreliable ordered packets out of order: %v", pl.id(), ord)
	}
	unrel := seqs(pl, 3, mpeer.Unreliable)
	if len(unrel) == 0 || len(ord) == 0 {
		t.Errorf("player %d: %d unreliable, %d ordered packets arrived", pl.id(), len(unrel), len(ord))
	}
	if dup := duplicate(unrel); dup >= 0 {
		t.Errorf("player %d: unreliable packet %d arrived twice", pl.id(), dup)
	}
	t.Logf("player %d: of %d each, %d unreliable and %d unreliable ordered arrived", pl.id(), sent, len(unrel), len(ord))
}

// seqs returns the sequence numbers pl received on channel ch in mode m,
// checking that each packet was reported with the mode it was sent in.
func seqs(pl *player, ch int, m mpeer.TransferMode) []int {
	var out []int
	for _, g := range pl.got {
		var mode, seq int
		if g.ch != ch || g.mode != m {
			continue
		}
		if _, err := fmt.Sscanf(g.data, "%d:%d", &mode, &seq); err != nil || mpeer.TransferMode(mode) != m {
			pl.t.Fatalf("packet %q reported as mode %v", g.data, g.mode)
		}
		out = append(out, seq)
	}
	return out
}

func increasing(s []int) bool {
	for i := 1; i < len(s); i++ {
		if s[i] <= s[i-1] {
			return false
		}
	}
	return true
}

func isRange(s []int, n int) bool {
	if len(s) != n {
		return false
	}
	for i, v := range s {
		if v != i {
			return false
		}
	}
	return true
}

func duplicate(s []int) int {
	seen := map[int]bool{}
	for _, v := range s {
		if seen[v] {
			return v
		}
		seen[v] = true
	}
	return -1
}

// TestPacketSizeLimits: the largest packet of each mode goes through
// (relayed, intact); one byte more fails with ErrTooLarge and sends
// nothing.
func TestPacketSizeLimits(t *testing.T) {
	leakcheck.Check(t)
	srv, cls := startServerGame(t, 2)
	a, b := cls[0], cls[1]
	for _, m := range modes {
		if err := a.peer.SetTransferMode(m); err != nil {
			t.Fatal(err)
		}
		want := mpeer.MaxUnreliablePacketSize
		if m == mpeer.Reliable {
			want = mpeer.MaxReliablePacketSize
		}
		if got := a.peer.GetMaxPacketSize(); got != want {
			t.Fatalf("%v: GetMaxPacketSize %d, want %d", m, got, want)
		}
		over := bytes.Repeat([]byte{'x'}, want+1)
		if err := a.put(0, m, 9, string(over)); !errors.Is(err, mpeer.ErrTooLarge) {
			t.Fatalf("%v: %d bytes: %v", m, len(over), err)
		}
		full := bytes.Repeat([]byte{byte('a' + m)}, want)
		a.mustPut(0, m, 9, string(full))
	}
	fence(t, srv, []*player{a, b}, a, 9, "sizes")
	for _, pl := range []*player{srv, b} {
		var sizes []int
		for _, g := range pl.got {
			if g.ch == 9 && g.from == a.id() && !strings.HasPrefix(g.data, "fence") {
				sizes = append(sizes, len(g.data))
				if g.data != string(bytes.Repeat([]byte{byte('a' + g.mode)}, len(g.data))) {
					t.Errorf("player %d: %v packet corrupted", pl.id(), g.mode)
				}
			}
		}
		// The unreliable ones may in principle be lost; none may be oversize.
		for _, n := range sizes {
			if n != mpeer.MaxUnreliablePacketSize && n != mpeer.MaxReliablePacketSize {
				t.Errorf("player %d got a %d-byte packet", pl.id(), n)
			}
		}
		if len(pl.received(string(bytes.Repeat([]byte{'c'}, mpeer.MaxReliablePacketSize)))) != 1 {
			t.Errorf("player %d: the largest reliable packet did not arrive intact (sizes %v)", pl.id(), sizes)
		}
	}
	if st := a.peer.Stats(); st.PacketsSent != 3+1 {
		t.Errorf("PacketsSent %d, want 4 (three full-size packets and the fence)", st.PacketsSent)
	}
}
