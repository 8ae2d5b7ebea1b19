package relay

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestAuthorize: Authorize is asked on every authenticated request with
// the client's address; a user it refuses gets no allocation, and a
// revoked one fails its next request, which ends its allocation. A
// refusal for a request from elsewhere leaves the user's allocation be.
func TestAuthorize(t *testing.T) {
	leakcheck.Check(t)
	var mu sync.Mutex
	allowed := map[string]bool{"a": true, "b": true}
	sources := map[netip.Addr]bool{}
	s := startServer(t, func(c *ServerConfig) {
		c.Authorize = func(username string, src net.Addr) bool {
			_, user, _ := strings.Cut(username, ":")
			ip := addrPortOf(src).Addr()
			mu.Lock()
			defer mu.Unlock()
			sources[ip] = true
			return allowed[user] && ip != netip.MustParseAddr("127.0.0.9")
		}
	})
	now := time.Now()
	a, ach := allocate(t, s.udp, UDP, NewCredentials(testSecret, "a", time.Hour, now))
	bCreds := NewCredentials(testSecret, "b", time.Hour, now)
	b, bch := allocate(t, s.udp, UDP, bCreds)
	if err := a.Permit(b.RelayedAddr()); err != nil {
		t.Fatal(err)
	}
	if err := b.Permit(a.RelayedAddr()); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b, bch, []byte("ping"))
	exchange(t, b, a, ach, []byte("pong"))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Allocate(ctx, ClientConfig{Server: s.udp, LocalIP: "127.0.0.1", Credentials: NewCredentials(testSecret, "x", time.Hour, now)}); err == nil {
		t.Fatal("allocation for a user Authorize refuses")
	}
	// b's username from another address, refused there: b keeps its
	// allocation.
	if _, err := Allocate(ctx, ClientConfig{Server: s.udp, LocalIP: "127.0.0.9", Credentials: bCreds}); err == nil {
		t.Fatal("allocation from an address Authorize refuses")
	}
	if err := b.Permit(a.RelayedAddr()); err != nil {
		t.Fatalf("b's permission after a refusal elsewhere: %v", err)
	}
	if st := s.Stats(); st.Live != 2 || st.Unauthorized != 2 || st.AuthFailures < 2 {
		t.Fatalf("stats %+v: want 2 live, 2 unauthorized", st)
	}

	mu.Lock()
	allowed["a"] = false
	mu.Unlock()
	if err := a.Permit(b.RelayedAddr()); err == nil {
		t.Fatal("a revoked user's permission refreshed")
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Live != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the revoked user's allocation is still there: %+v", s.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	if err := b.Permit(a.RelayedAddr()); err != nil {
		t.Fatalf("b's permission after a's revocation: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !sources[netip.MustParseAddr("127.0.0.1")] || !sources[netip.MustParseAddr("127.0.0.9")] || len(sources) != 2 {
		t.Fatalf("Authorize saw sources %v", sources)
	}
}
