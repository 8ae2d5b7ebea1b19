package rendezvous

import (
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
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
