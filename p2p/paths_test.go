package p2p

import (
	"net/netip"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/secure"
	"github.com/gamewire/gamewire/p2p/internal/path"
)

// keypairFor runs a handshake between two throwaway identities and
// returns the initiator's keys: what establishLocked needs.
func keypairFor(t *testing.T) *secure.Keypair {
	t.Helper()
	a, b := mustIdentity(t), mustIdentity(t)
	ha, hb := secure.NewHandshaker(secure.PrivateKey(a.private)), secure.NewHandshaker(secure.PrivateKey(b.private))
	in, err := ha.Initiate(secure.PublicKey(b.public), 1, make([]byte, secure.InitiationPayloadLen))
	if err != nil {
		t.Fatal(err)
	}
	inc, err := hb.ConsumeInitiation(in.Message())
	if err != nil {
		t.Fatal(err)
	}
	resp, _, err := inc.Respond(2, make([]byte, secure.ResponsePayloadLen))
	if err != nil {
		t.Fatal(err)
	}
	kp, _, err := in.ConsumeResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// TestEstablishedRouteBeforeThePathLayer: a session sends on the route
// it was established on from the first datagram, before the path layer's
// owner has taken that route in. (It used to send on the handshake's
// route of the attempt until then: the first speculative candidate, so
// the first data and the address proof were lost and the connect p95
// doubled.) The owner is held busy with another peer's move while the
// session is established.
func TestEstablishedRouteBeforeThePathLayer(t *testing.T) {
	leakcheck.Check(t)
	n, err := New(Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	speculative := netip.MustParseAddrPort("198.51.100.1:4000") // the handshake's first candidate
	answered := netip.MustParseAddrPort("198.51.100.2:4000")    // where the response came from
	kp := keypairFor(t)
	n.mu.Lock()
	s := n.newSessionLocked(mustIdentity(t).PeerID(), time.Now())
	other := n.newSessionLocked(mustIdentity(t).PeerID(), time.Now())
	n.mu.Unlock()

	s.mu.Lock()
	s.accepted = true
	s.handshakeOnLocked(speculative, nil)
	s.unlock()
	n.paths.Sync() // the owner has the handshake's route

	// Hold the owner: a move of the other peer's route makes it call the
	// reporter, which takes that session's lock, held here.
	other.live.Store(true)
	n.paths.Establish(other.paths, path.Route{Remote: netip.MustParseAddrPort("198.51.100.9:1"), Sock: n.main, Gen: other.gen.Load()}, 0)
	n.paths.Sync()
	other.mu.Lock()
	n.paths.Offer(other.paths, path.Offer{Route: path.Route{Remote: netip.MustParseAddrPort("10.0.0.9:1"), Sock: n.main, Gen: other.gen.Load()}})
	deadline := time.Now().Add(5 * time.Second)
	for other.paths.Route().Remote.Addr() != netip.MustParseAddr("10.0.0.9") {
		if time.Now().After(deadline) {
			other.mu.Unlock()
			t.Fatal("the owner never took the other peer's move")
		}
		time.Sleep(time.Millisecond)
	}

	s.mu.Lock()
	if err := s.establishLocked(kp, answered, nil, 1, true); err != nil {
		s.unlock()
		other.mu.Unlock()
		t.Fatal(err)
	}
	got := s.current()
	s.unlock()
	other.mu.Unlock()
	if got == nil || got.Remote != answered {
		t.Fatalf("the session sends to %v right after it was established on %v", got, answered)
	}
	n.paths.Sync()
	if r := s.current(); r.Remote != answered {
		t.Fatalf("after the path layer took it in: %v", r.Remote)
	}

	// The path layer moves the session (a better class); once closed, its
	// notice and a tombstone's replies go where the session was last.
	lan := netip.MustParseAddrPort("10.0.0.2:4000")
	s.offer(path.Offer{Route: path.Route{Remote: lan}}, fromTCP, time.Now())
	n.paths.Sync()
	if r := s.current(); r.Remote != lan {
		t.Fatalf("not moved to %v: on %v", lan, r.Remote)
	}
	s.closeByApp(false)
	if r := s.current(); r.Remote != lan {
		t.Fatalf("a closed session answers on %v, not where it was last (%v)", r.Remote, lan)
	}
}
