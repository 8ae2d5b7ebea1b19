package netpacket_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/p2p/netpacket"
)

// TestEveryFlag sends numbered packets with every flag combination on
// every path (host to client, client to host, client to client through the
// host) and checks what each class promises: reliable ones (Reliable|
// Unsequenced included) all arrive in order; sequenced ones arrive (no
// loss on loopback) and never older after newer; unsequenced ones arrive,
// each once. Receivers drain with pollReceive, as a core does between
// frames.
func TestEveryFlag(t *testing.T) {
	leakcheck.Check(t)
	r, c := startRig(t, 3)
	paths := []struct {
		name     string
		from, to *player
		toID     uint16
		fromID   uint16
	}{
		{"host to client", r.host, c[0], 1, 0},
		{"client to host", c[0], r.host, 0, 1},
		{"client to client", c[0], c[1], 2, 1},
	}
	for _, path := range paths {
		for flags := netpacket.Flags(0); flags <= 7; flags++ {
			t.Run(fmt.Sprintf("%s/%v", path.name, flags), func(t *testing.T) {
				n := 40
				if flags&netpacket.Reliable != 0 {
					n = 300
				}
				tag := fmt.Sprintf("%d:", flags)
				for i := range n {
					if err := path.from.rec.send(flags, numbered(tag, i), path.toID); err != nil {
						t.Fatal(err)
					}
				}
				path.from.rec.send(netpacket.FlushHint, nil, path.toID)
				deadline := time.Now().Add(10 * time.Second)
				for len(path.to.rec.withPrefix(tag)) < n {
					if time.Now().After(deadline) {
						t.Fatalf("%d of %d packets arrived", len(path.to.rec.withPrefix(tag)), n)
					}
					r.host.frame() // the host relays client to client
					path.to.rec.pollReceive()
				}
				checkOrder(t, flags, path.to.rec.withPrefix(tag), path.fromID, n)
			})
		}
	}
	if st := r.host.host.Stats(); dropsOf(st) != 0 || st.SentReliably != 0 {
		t.Fatalf("host stats %+v", st)
	}
	if err := c[0].rec.send(8, []byte("x"), 0); !errors.Is(err, netpacket.ErrInvalidFlags) {
		t.Fatalf("flags 8: %v", err)
	}
	if err := r.host.rec.send(netpacket.Reliable|16, []byte("x"), 1); !errors.Is(err, netpacket.ErrInvalidFlags) {
		t.Fatalf("flags 17: %v", err)
	}
}

func numbered(tag string, i int) []byte {
	return binary.BigEndian.AppendUint32([]byte(tag), uint32(i))
}

func number(tag string, data []byte) int {
	return int(binary.BigEndian.Uint32(data[len(tag):]))
}

// checkOrder checks got (all n packets) against the class of flags.
func checkOrder(t *testing.T, flags netpacket.Flags, got []received, from uint16, n int) {
	t.Helper()
	tag := fmt.Sprintf("%d:", flags)
	seen := make(map[int]bool)
	last := -1
	for i, p := range got {
		k := number(tag, p.data)
		switch {
		case p.from != from:
			t.Fatalf("packet %d from %d, want %d", k, p.from, from)
		case seen[k]:
			t.Fatalf("packet %d delivered twice", k)
		case flags&netpacket.Reliable != 0 && k != i:
			t.Fatalf("reliable: packet %d delivered %dth", k, i)
		case flags&(netpacket.Reliable|netpacket.Unsequenced) == 0 && k < last:
			t.Fatalf("sequenced: packet %d delivered after %d", k, last)
		}
		seen[k] = true
		last = k
	}
	if len(got) != n {
		t.Fatalf("%d packets, want %d", len(got), n)
	}
}

// TestSizes: 64 KiB packets pass on every path and class, 64 KiB + 1 is
// refused with ErrTooLarge; unreliable packets up to MaxUnreliableSize go
// unreliably, larger ones reliably (counted).
func TestSizes(t *testing.T) {
	leakcheck.Check(t)
	r, c := startRig(t, 3)
	big := bytes.Repeat([]byte("netpack!"), netpacket.MaxPacketSize/8)
	for _, p := range []*player{r.host, c[0]} {
		if err := p.rec.send(netpacket.Reliable, append(big, 'x'), netpacket.Broadcast); !errors.Is(err, netpacket.ErrTooLarge) {
			t.Fatalf("64 KiB + 1: %v", err)
		}
	}
	send(t, c[0], netpacket.Reliable, string(big), 2)
	send(t, c[0], netpacket.Unreliable, "u"+string(big[1:]), 2)
	send(t, r.host, netpacket.Unsequenced|netpacket.FlushHint, "s"+string(big[1:]), netpacket.Broadcast)
	r.until("the 64 KiB packets", func() bool {
		return c[1].rec.has(1, string(big)) && c[1].rec.has(1, "u"+string(big[1:])) &&
			c[0].rec.has(0, "s"+string(big[1:])) && c[1].rec.has(0, "s"+string(big[1:])) &&
			c[2].rec.has(0, "s"+string(big[1:]))
	})
	if st := c[0].client.Stats(); st.SentReliably != 1 {
		t.Fatalf("client stats %+v", st)
	}
	if st := r.host.host.Stats(); st.SentReliably != 3 {
		t.Fatalf("host stats %+v", st)
	}

	atMax := bytes.Repeat([]byte{'m'}, netpacket.MaxUnreliableSize)
	send(t, c[0], netpacket.Unreliable|netpacket.Unsequenced|netpacket.FlushHint, string(atMax), 0)
	r.until("the largest unreliable packet", func() bool { return r.host.rec.has(1, string(atMax)) })
	if st := c[0].client.Stats(); st.SentReliably != 1 {
		t.Fatalf("%d bytes went reliably: %+v", len(atMax), st)
	}
	over := append(atMax, 'm')
	send(t, c[0], netpacket.Unreliable|netpacket.FlushHint, string(over), 0)
	r.until("one byte more", func() bool { return r.host.rec.has(1, string(over)) })
	if st := c[0].client.Stats(); st.SentReliably != 2 {
		t.Fatalf("%d bytes went unreliably: %+v", len(over), st)
	}
}

// TestFlushHint: with the sender's Nagle delay at a minute, a reliable
// packet sent without FlushHint stays in the node (nothing leaves: the
// session's PacketsSent does not move), and FlushHint with no data sends
// it at once. The bound on its arrival, 500 ms, is below the 1 s
// keepalive (a keepalive would carry the held packet too), far below the
// minute.
func TestFlushHint(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		leakcheck.Check(t)
		r := newRig(t, p2p.Config{}, netpacket.Config{})
		p := r.join(p2p.Config{NagleDelay: time.Minute}, "v1")
		r.until("start", func() bool { return p.rec.starts == 1 })
		flushTest(t, r, p, []*player{r.host}, 0)
	})
	t.Run("host", func(t *testing.T) {
		leakcheck.Check(t)
		r := newRig(t, p2p.Config{NagleDelay: time.Minute}, netpacket.Config{})
		c := []*player{r.joinStarted(), r.joinStarted(), r.joinStarted()}
		flushTest(t, r, r.host, c, netpacket.Broadcast)
	})
	// The host flushes what it relays, so a flushed packet from one client
	// to another does not wait on the host's Nagle delay either.
	t.Run("relay", func(t *testing.T) {
		leakcheck.Check(t)
		r := newRig(t, p2p.Config{NagleDelay: time.Minute}, netpacket.Config{})
		a, b := r.joinStarted(), r.joinStarted()
		for i := range 2 { // the first warms the sessions up
			msg := fmt.Sprintf("relayed %d", i)
			start := time.Now()
			send(t, a, netpacket.Reliable|netpacket.FlushHint, msg, b.rec.id)
			r.until("the relayed packet", func() bool { return b.rec.has(a.rec.id, msg) })
			if d := time.Since(start); i > 0 && d > 500*time.Millisecond {
				t.Fatalf("the relayed packet took %v", d)
			}
		}
	})
}

func flushTest(t *testing.T, r *rig, from *player, to []*player, toID uint16) {
	t.Helper()
	for attempt := range 5 {
		// A flushed packet first, so the session is warm and the next
		// keepalive is about a second away.
		warm := fmt.Sprintf("warm %d", attempt)
		send(t, from, netpacket.Reliable|netpacket.FlushHint, warm, toID)
		r.until("the warm-up", func() bool { return allHave(to, from.rec.id, warm) })
		held := fmt.Sprintf("held %d", attempt)
		before := packetsSent(t, from, to)
		send(t, from, netpacket.Reliable, held, toID)
		if packetsSent(t, from, to) != before {
			t.Logf("attempt %d: a datagram left meanwhile (ack or keepalive); again", attempt)
			continue
		}
		start := time.Now()
		if err := from.rec.send(netpacket.FlushHint, nil, toID); err != nil {
			t.Fatal(err)
		}
		r.until("the flushed packet", func() bool { return allHave(to, from.rec.id, held) })
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("the flushed packet took %v", d)
		}
		return
	}
	t.Fatal("no quiet moment to test in")
}

func allHave(ps []*player, from uint16, data string) bool {
	for _, p := range ps {
		if !p.rec.has(from, data) {
			return false
		}
	}
	return true
}

// packetsSent sums the datagrams from's node sent to each of to.
func packetsSent(t *testing.T, from *player, to []*player) uint64 {
	t.Helper()
	var sum uint64
	for _, p := range to {
		st, ok := from.node.GetP2PSessionState(p.node.PeerID())
		if !ok {
			t.Fatal("no session")
		}
		sum += st.PacketsSent
	}
	return sum
}

// TestEmptyData: empty data without FlushHint sends nothing.
func TestEmptyData(t *testing.T) {
	leakcheck.Check(t)
	r, c := startRig(t, 1)
	before := c[0].client.Stats().Sent
	for _, f := range []netpacket.Flags{netpacket.Reliable, netpacket.Unreliable, netpacket.FlushHint} {
		if err := c[0].rec.send(f, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	send(t, c[0], netpacket.Reliable|netpacket.FlushHint, "after", 0)
	r.until("after", func() bool { return r.host.rec.has(1, "after") })
	if len(r.host.rec.got) != 1 || c[0].client.Stats().Sent != before+1 {
		t.Fatalf("host got %v", r.host.rec.got)
	}
}
