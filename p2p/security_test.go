package p2p

import (
	"bytes"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gamewire/gamewire/internal/secure"
)

// TestImpersonation: a node with another key cannot be taken for the peer
// whose PeerID it knows, nor stand in for the peer a node wants to reach.
func TestImpersonation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		alice := newMemNode(t, m, 1, Config{ConnectTimeout: 3 * time.Second})
		bob := newMemNode(t, m, 2, Config{})
		mallory := newMemNode(t, m, 3, Config{})

		// Mallory sends to Bob: Bob sees Mallory's PeerID, never Alice's.
		mallory.AddPeerAddr(bob.PeerID(), addrOf(bob))
		mallory.SendP2PPacket(bob.PeerID(), []byte("I am alice"), SendReliable, 0)
		e := nextEvent(t, bob, time.Second, func(Event) bool { return true })
		if r, ok := e.(SessionRequest); !ok || r.Peer != mallory.PeerID() {
			t.Fatalf("bob saw %#v", e)
		}

		// Alice is told Bob lives at Mallory's address: Mallory cannot answer
		// for Bob's key, and Alice's attempt times out.
		alice.AddPeerAddr(bob.PeerID(), addrOf(mallory))
		alice.SendP2PPacket(bob.PeerID(), []byte("for bob only"), SendReliable, 0)
		nextEvent(t, alice, 5*time.Second, isFail(bob.PeerID(), SessionErrorTimeout))
		if s := mallory.Stats(); s.BadMAC == 0 {
			t.Fatalf("mallory's node accepted an initiation meant for bob: %+v", s)
		}
		select {
		case e := <-mallory.Events():
			if r, ok := e.(SessionRequest); ok && r.Peer == alice.PeerID() {
				t.Fatal("mallory got a session with alice")
			}
		default:
		}
	})
}

// tap records gamewire data packets crossing the memNet.
type tap struct {
	mu   sync.Mutex
	pkts [][]byte
	from []netip.AddrPort
	to   []netip.AddrPort
}

func (tp *tap) filter(mod func(b []byte) []byte) func(from, to netip.AddrPort, b []byte) []byte {
	return func(from, to netip.AddrPort, b []byte) []byte {
		if len(b) > 0 && b[0] == secure.TypeData {
			tp.mu.Lock()
			tp.pkts = append(tp.pkts, append([]byte(nil), b...))
			tp.from, tp.to = append(tp.from, from), append(tp.to, to)
			tp.mu.Unlock()
			if mod != nil {
				return mod(b)
			}
		}
		return b
	}
}

// connected returns two nodes with an accepted session both ways.
func connected(t *testing.T, m *memNet) (*Node, *Node) {
	a, b := newMemNode(t, m, 1, Config{}), newMemNode(t, m, 2, Config{})
	introduce(a, b)
	a.SendP2PPacket(b.PeerID(), []byte("hi"), SendReliable, 0)
	b.SendP2PPacket(a.PeerID(), []byte("hi"), SendReliable, 0)
	recvData(t, a, 0, time.Second)
	recvData(t, b, 0, time.Second)
	return a, b
}

func TestReplayedDatagramsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := connected(t, m)
		var tp tap
		m.setFilter(tp.filter(nil))
		for i := range 20 {
			a.SendP2PPacket(b.PeerID(), []byte{byte(i)}, SendUnreliable, 1)
		}
		for range 20 {
			recvData(t, b, 1, time.Second)
		}
		m.setFilter(nil)
		tp.mu.Lock()
		for i, p := range tp.pkts {
			m.send(tp.from[i], tp.to[i], p) // every packet again
		}
		n := len(tp.pkts)
		tp.mu.Unlock()
		time.Sleep(time.Second)
		if _, ok := b.ReadP2PPacket(1); ok {
			t.Fatal("a replayed datagram was delivered")
		}
		if got := a.Stats().Replayed + b.Stats().Replayed; got != uint64(n) {
			t.Fatalf("%d replays counted of %d sent", got, n)
		}
	})
}

func TestTamperedDatagramsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := connected(t, m)
		var tp tap
		var k atomic.Int32
		m.setFilter(tp.filter(func(p []byte) []byte {
			if k.Add(1)%3 == 0 {
				p[len(p)/2+int(k.Load())%(len(p)/2)] ^= 0x20 // somewhere in ciphertext, tag or header
			}
			return p
		}))
		for i := range 100 {
			a.SendP2PPacket(b.PeerID(), []byte{byte(i), 'x', 'y', 'z'}, SendReliable, 2)
		}
		for i := range 100 {
			if p := recvData(t, b, 2, 10*time.Second); !bytes.Equal(p.Data, []byte{byte(i), 'x', 'y', 'z'}) {
				t.Fatalf("message %d: %q", i, p.Data)
			}
		}
		if b.Stats().AuthFailed == 0 {
			t.Fatal("tampered datagrams were not counted")
		}
	})
}

// TestInjectedDatagramsDropped: packets for a live session index, from a
// party without the keys, are dropped and counted.
func TestInjectedDatagramsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := connected(t, m)
		var tp tap
		m.setFilter(tp.filter(nil))
		a.SendP2PPacket(b.PeerID(), []byte("real"), SendReliable, 3)
		recvData(t, b, 3, time.Second)
		m.setFilter(nil)
		tp.mu.Lock()
		real := tp.pkts[0]
		tp.mu.Unlock()
		attacker := m.listen(9, 0)
		defer attacker.Close()
		// Same header (type, index, a later counter), made-up ciphertext.
		for i := range 50 {
			forged := append([]byte(nil), real...)
			forged[8] += byte(100 + i) // counter
			for j := 16; j < len(forged); j++ {
				forged[j] = byte(i * j)
			}
			attacker.WriteTo(forged, b.LocalAddr())
		}
		time.Sleep(time.Second)
		if _, ok := b.ReadP2PPacket(3); ok {
			t.Fatal("forged datagram delivered")
		}
		if got := b.Stats().AuthFailed; got != 50 {
			t.Fatalf("AuthFailed %d, want 50", got)
		}
		// The session is unharmed and still follows its real address.
		a.SendP2PPacket(b.PeerID(), []byte("still here"), SendReliable, 3)
		if p := recvData(t, b, 3, time.Second); string(p.Data) != "still here" {
			t.Fatalf("%q", p.Data)
		}
		if st, _ := b.GetP2PSessionState(a.PeerID()); st.RemoteAddr != addrOf(a) {
			t.Fatalf("forged packets moved the session to %v", st.RemoteAddr)
		}
	})
}

func FuzzHandlePacket(f *testing.F) {
	f.Add([]byte{secure.TypeData, 0, 0, 0, 1, 2, 3, 4})
	f.Add([]byte{secure.TypeInitiation})
	f.Add(make([]byte, secure.InitiationLen))
	f.Add(append([]byte{secure.TypeResponse}, make([]byte, secure.ResponseLen-1)...))
	f.Add([]byte{0x00, 0x01, 0x00, 0x00})
	f.Add([]byte{0x40, 0, 0, 4, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		synctest.Test(t, func(t *testing.T) {
			m := newMemNet(0)
			n := newMemNode(t, m, 1, Config{})
			other, _ := NewIdentity()
			n.AddPeerAddr(other.PeerID(), netip.MustParseAddrPort("10.0.0.2:1"))
			n.SendP2PPacket(other.PeerID(), []byte("x"), SendReliable, 0) // a pending handshake to aim at
			src := netip.MustParseAddrPort("10.0.0.2:1")
			n.handlePacket(b, src, n.main)
			if len(b) > 8 {
				// Aim at the pending handshake's index too.
				n.tabMu.RLock()
				for idx := range n.byIndex {
					c := append([]byte(nil), b...)
					c[4], c[5], c[6], c[7] = byte(idx), byte(idx>>8), byte(idx>>16), byte(idx>>24)
					n.tabMu.RUnlock()
					n.handlePacket(c, src, n.main)
					n.tabMu.RLock()
				}
				n.tabMu.RUnlock()
			}
			synctest.Wait()
		})
	})
}

// TestVersionMismatch: an initiation of another protocol version is
// answered, authenticated, with NotRunningApp, and opens no session.
func TestVersionMismatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		bob := newMemNode(t, m, 2, Config{AppID: "g"})
		raw := m.listen(7, 0)
		defer raw.Close()
		key, _ := secure.GenerateKey()
		payload := initPayload{version: protocolVersion + 1, app: appHash("g"), timestamp: 1, epoch: 1}
		in, err := secure.NewHandshaker(key).Initiate(secure.PublicKey(bob.PeerID()), 42, payload.encode())
		if err != nil {
			t.Fatal(err)
		}
		raw.WriteTo(in.Message(), bob.LocalAddr())
		buf := make([]byte, 2048)
		raw.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := raw.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		_, respBytes, err := in.ConsumeResponse(buf[:n])
		if err != nil {
			t.Fatalf("response does not authenticate: %v", err)
		}
		resp, err := decodeRespPayload(respBytes)
		if err != nil || resp.status != statusNotRunningApp {
			t.Fatalf("response %+v %v", resp, err)
		}
		if _, ok := bob.GetP2PSessionState(PeerID(key.Public())); ok {
			t.Fatal("a session was opened for another protocol version")
		}
	})
}

// TestReplayedInitiationIgnored: a captured initiation sent again later
// (after its session was closed) opens nothing and disturbs nothing.
func TestReplayedInitiationIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := newMemNode(t, m, 1, Config{}), newMemNode(t, m, 2, Config{})
		introduce(a, b)
		var captured []byte
		var mu sync.Mutex
		m.setFilter(func(from, to netip.AddrPort, p []byte) []byte {
			mu.Lock()
			if len(p) > 0 && p[0] == secure.TypeInitiation && captured == nil {
				captured = append([]byte(nil), p...)
			}
			mu.Unlock()
			return p
		})
		a.SendP2PPacket(b.PeerID(), []byte("x"), SendReliable, 0)
		b.SendP2PPacket(a.PeerID(), []byte("y"), SendReliable, 0)
		recvData(t, b, 0, time.Second)
		m.setFilter(nil)
		// Replayed while the session lives: ignored, the session stays.
		m.send(addrOf(a), addrOf(b), captured)
		time.Sleep(100 * time.Millisecond)
		a.SendP2PPacket(b.PeerID(), []byte("still"), SendReliable, 0)
		if p := recvData(t, b, 0, time.Second); string(p.Data) != "still" {
			t.Fatalf("%q", p.Data)
		}
		// Replayed after the session closed: no new session.
		b.CloseP2PSessionWithUser(a.PeerID())
		time.Sleep(time.Second)
		before := b.Stats().ReplayedInit
		m.send(addrOf(a), addrOf(b), captured)
		time.Sleep(time.Second)
		if st, ok := b.GetP2PSessionState(a.PeerID()); ok {
			t.Fatalf("replay opened a session: %+v", st)
		}
		if b.Stats().ReplayedInit != before+1 {
			t.Fatalf("replay not counted: %+v", b.Stats())
		}
	})
}
