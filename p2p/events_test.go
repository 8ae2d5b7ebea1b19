package p2p

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestRunCallbacks: callbacks run on the caller's goroutine, may call the
// node, and see each event once.
func TestRunCallbacks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		var requests, fails atomic.Int32
		var b *Node
		a := newMemNode(t, m, 1, Config{ConnectTimeout: 3 * time.Second})
		inCallback := false
		b = newMemNode(t, m, 2, Config{
			OnSessionRequest: func(p PeerID) {
				inCallback = true
				requests.Add(1)
				b.AcceptP2PSessionWithUser(p) // calling the node from a callback
				b.SendP2PPacket(p, []byte("welcome"), SendReliable, 0)
			},
		})
		introduce(a, b)
		a.SendP2PPacket(b.PeerID(), []byte("hi"), SendReliable, 0)
		time.Sleep(100 * time.Millisecond)
		if requests.Load() != 0 {
			t.Fatal("callback ran before RunCallbacks")
		}
		b.RunCallbacks()
		if requests.Load() != 1 || !inCallback {
			t.Fatalf("requests %d", requests.Load())
		}
		if p := recvData(t, a, 0, time.Second); string(p.Data) != "welcome" {
			t.Fatalf("%q", p.Data)
		}
		b.RunCallbacks()
		if requests.Load() != 1 {
			t.Fatal("event delivered twice")
		}

		// Connect failures reach OnSessionConnectFail.
		ghost, _ := NewIdentity()
		c := newMemNode(t, m, 3, Config{ConnectTimeout: time.Second,
			OnSessionConnectFail: func(p PeerID, e SessionError) {
				if p == ghost.PeerID() && e == SessionErrorTimeout {
					fails.Add(1)
				}
			}})
		c.SendP2PPacket(ghost.PeerID(), []byte("?"), SendReliable, 0)
		time.Sleep(2 * time.Second)
		c.RunCallbacks()
		if fails.Load() != 1 {
			t.Fatalf("fails %d", fails.Load())
		}
	})
}

// TestEventQueueBounded: events past the bound are dropped and counted,
// never blocking the node.
func TestEventQueueBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(0)
		a := newMemNode(t, m, 1, Config{EventQueueSize: 3, ConnectTimeout: time.Second})
		for range 10 {
			ghost, _ := NewIdentity()
			a.SendP2PPacket(ghost.PeerID(), []byte("?"), SendReliable, 0)
		}
		time.Sleep(2 * time.Second)
		if len(a.Events()) != 3 {
			t.Fatalf("%d events queued", len(a.Events()))
		}
		if s := a.Stats(); s.EventsDropped != 7 {
			t.Fatalf("dropped %d, want 7", s.EventsDropped)
		}
	})
}

// TestSimultaneousInitiation: both peers send first at the same moment;
// one session results, no data is lost or duplicated, nothing is closed.
func TestSimultaneousInitiation(t *testing.T) {
	for i := range 10 {
		synctest.Test(t, func(t *testing.T) {
			m := newMemNet(time.Duration(i+1) * time.Millisecond)
			a, b := newMemNode(t, m, 1, Config{}), newMemNode(t, m, 2, Config{})
			introduce(a, b)
			for k := range 20 {
				a.SendP2PPacket(b.PeerID(), []byte{byte(k)}, SendReliable, 1)
				b.SendP2PPacket(a.PeerID(), []byte{byte(k)}, SendReliable, 1)
			}
			for _, n := range []*Node{a, b} {
				for k := range 20 {
					if p := recvData(t, n, 1, 2*time.Second); p.Data[0] != byte(k) {
						t.Fatalf("got %d, want %d", p.Data[0], k)
					}
				}
			}
			time.Sleep(2 * time.Second)
			for _, n := range []*Node{a, b} {
				if _, ok := n.ReadP2PPacket(1); ok {
					t.Fatal("duplicate delivery")
				}
				for len(n.Events()) > 0 {
					t.Fatalf("unexpected event %#v", <-n.Events())
				}
			}
			sa, _ := a.GetP2PSessionState(b.PeerID())
			sb, _ := b.GetP2PSessionState(a.PeerID())
			if !sa.ConnectionActive || !sb.ConnectionActive {
				t.Fatalf("not active: %+v %+v", sa, sb)
			}
		})
	}
}

// TestPeerRestart: a peer that restarts (same identity, new process)
// replaces its old session; the old one is reported closed.
func TestPeerRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		idB, _ := NewIdentity()
		a := newMemNode(t, m, 1, Config{})
		pcB := m.listen(2, 5000)
		b, _ := New(Config{Identity: idB, PacketConn: pcB})
		introduce(a, b)
		a.SendP2PPacket(b.PeerID(), []byte("1"), SendReliable, 0)
		b.SendP2PPacket(a.PeerID(), []byte("2"), SendReliable, 0)
		recvData(t, a, 0, time.Second)
		recvData(t, b, 0, time.Second)
		// b dies without a word, then comes back on the same address.
		m.setFilter(func(from, to netip.AddrPort, p []byte) []byte {
			if from == addrOf(b) {
				return nil
			}
			return p
		})
		b.Close()
		pcB.Close()
		m.setFilter(nil)
		pcB2 := m.listen(2, 5000)
		b2, _ := New(Config{Identity: idB, PacketConn: pcB2})
		defer func() { b2.Close(); pcB2.Close() }()
		b2.AddPeerAddr(a.PeerID(), addrOf(a))
		b2.SendP2PPacket(a.PeerID(), []byte("back"), SendReliable, 0)
		nextEvent(t, a, 2*time.Second, func(e Event) bool { c, ok := e.(SessionClosed); return ok && c.Peer == idB.PeerID() })
		// a had accepted b before: the new session needs no new request.
		if p := recvData(t, a, 0, 2*time.Second); string(p.Data) != "back" {
			t.Fatalf("%q", p.Data)
		}
		a.SendP2PPacket(b2.PeerID(), []byte("welcome back"), SendReliable, 0)
		if p := recvData(t, b2, 0, 2*time.Second); string(p.Data) != "welcome back" {
			t.Fatalf("%q", p.Data)
		}
	})
}

// TestEventsClosedOnClose: Close closes the Events channel after the
// events still waiting, so a range loop over it ends, and RunCallbacks
// returns.
func TestEventsClosedOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a := newMemNode(t, m, 1, Config{})
		b := newMemNode(t, m, 2, Config{})
		introduce(a, b)
		a.SendP2PPacket(b.PeerID(), []byte("x"), SendReliable, 0)
		time.Sleep(time.Second) // b holds a SessionRequest
		b.Close()
		var got []Event
		for e := range b.Events() {
			got = append(got, e)
		}
		if len(got) == 0 {
			t.Fatal("the event waiting before Close was lost")
		}
		if _, ok := got[0].(SessionRequest); !ok {
			t.Fatalf("got %#v", got)
		}
		b.RunCallbacks() // returns on a closed queue
	})
}
