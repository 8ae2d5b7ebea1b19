package rendezvous

import (
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestCallbacksRunUnlocked: the node's callbacks that fill a REGISTER run
// with no lock of the client held. A node whose Relay callback takes its
// own lock, while another of its goroutines holds that lock and asks the
// client whether it is registered, used to deadlock: the client called
// Relay under its mutex.
func TestCallbacksRunUnlocked(t *testing.T) {
	var nodeMu sync.Mutex
	inRelay := make(chan struct{})
	var once sync.Once
	c := NewClient(ClientConfig{
		Server: netip.MustParseAddrPort("127.0.0.1:9"),
		Send:   func([]byte, netip.AddrPort) {},
		Relay: func() netip.AddrPort {
			once.Do(func() { close(inRelay) })
			nodeMu.Lock() // the node's lock, held by the goroutine below
			defer nodeMu.Unlock()
			return netip.AddrPort{}
		},
	})
	nodeMu.Lock()
	reregistered := make(chan struct{})
	go func() {
		c.Reregister(time.Now())
		close(reregistered)
	}()
	<-inRelay
	answered := make(chan struct{})
	go func() {
		c.Registered() // the node asks the client while holding its lock
		close(answered)
	}()
	select {
	case <-answered:
	case <-time.After(5 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("Registered blocked while the client was in a callback:\n%s", buf[:runtime.Stack(buf, true)])
	}
	nodeMu.Unlock()
	<-reregistered
}

// TestReregisterAfterServerRestart: a server that restarted forgot its
// clients and drops their INTRODUCEs unanswered. A client waiting for an
// introduction that hears nothing for introSilence registers again at
// once and asks again, instead of waiting for its next refresh (20 s).
func TestReregisterAfterServerRestart(t *testing.T) {
	leakcheck.Check(t)
	priv, _ := newKeypair(t)
	addr := []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(t, "127.0.0.1"))}
	s1, err := Listen(ServerConfig{PrivateKey: priv}, addr, nil)
	if err != nil {
		t.Skipf("cannot listen: %v", err)
	}
	pin := s1.PublicKey()
	a := startClient(t, s1.Addr(), &pin, nil)
	_, target := newKeypair(t)
	registerAll(t, a)
	s1.Close()
	s2, err := Listen(ServerConfig{PrivateKey: priv}, addr, nil)
	if err != nil {
		t.Skipf("cannot listen again at %s: %v", addr, err)
	}
	defer s2.Close()
	a.Introduce(target, time.Now())
	a.barrier(t, s2.Addr()) // the INTRODUCE reached the new server, which dropped it
	if st := s2.Stats(); st.Registered != 0 {
		t.Fatalf("the new server holds %d registrations before any REGISTER", st.Registered)
	}
	a.Tick(time.Now().Add(introSilence)) // introSilence of silence
	run(t, 3*time.Second, func() bool {
		_, unknowns, _ := a.snapshot()
		return s2.Stats().Registered == 1 && len(unknowns) == 1 && unknowns[0] == target
	}) // not ticking: only the silence may have sent the REGISTER
	if _, ok := a.Registered(); !ok {
		t.Fatal("not registered")
	}
	// Silence again within the refresh interval (a target slow to
	// consent) costs the server no further registration.
	a.mu.Lock()
	before := a.sent[typeRegister]
	a.mu.Unlock()
	_, other := newKeypair(t)
	a.Client.mu.Lock()
	a.Client.intros[other] = &pendingIntro{next: time.Now().Add(time.Hour), interval: time.Hour}
	a.Client.mu.Unlock()
	a.Tick(time.Now().Add(2 * introSilence))
	a.mu.Lock()
	after := a.sent[typeRegister]
	a.mu.Unlock()
	if after != before {
		t.Fatalf("%d more REGISTERs for a second silence within the refresh interval", after-before)
	}
}
