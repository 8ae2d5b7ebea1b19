package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// tryAllocate allocates from local address ip over tr.
func tryAllocate(t *testing.T, s *testServer, tr Transport, ip string, creds Credentials) (*Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := ClientConfig{Server: s.udp, Transport: tr, Credentials: creds, LocalIP: ip}
	if tr == TCP {
		cfg.Server = s.tcp
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		cfg.Dial = d.DialContext
	}
	c, err := Allocate(ctx, cfg)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// TestQuotaPerIP: two source IPs mint as many users as they like and
// allocate until refused, over UDP one after another and over TCP all at
// once; they get MaxPerIP each, and a client from a third IP still gets
// its allocation.
func TestQuotaPerIP(t *testing.T) {
	leakcheck.Check(t)
	const total, perIP = 40, 8
	s := startServer(t, func(c *ServerConfig) { c.MaxAllocations, c.MaxPerIP = total, perIP })
	now := time.Now()
	got := 0
	for i := range total + 1 { // more than the server holds: the loop ends at the first refusal
		if _, err := tryAllocate(t, s, UDP, "127.0.0.2", NewCredentials(testSecret, fmt.Sprintf("u%d", i), time.Hour, now)); err != nil {
			break
		}
		got++
	}
	if got != perIP {
		t.Errorf("127.0.0.2 got %d allocations over UDP, want %d", got, perIP)
	}
	// Over TCP every connection is its own 5-tuple: total+1 at once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	got = 0
	for i := range total + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := tryAllocate(t, s, TCP, "127.0.0.3", NewCredentials(testSecret, fmt.Sprintf("t%d", i), time.Hour, now)); err == nil {
				mu.Lock()
				got++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if got != perIP {
		t.Errorf("127.0.0.3 got %d allocations over TCP at once, want %d", got, perIP)
	}
	if _, err := tryAllocate(t, s, UDP, "127.0.0.4", NewCredentials(testSecret, "legit", time.Hour, now)); err != nil {
		t.Fatalf("a client from a third IP was refused: %v (stats %+v)", err, s.Stats())
	}
	if st := s.Stats(); st.Live != 2*perIP+1 || st.RefusedIP != 1+total+1-perIP || st.RefusedUser != 0 || st.RefusedFull != 0 ||
		st.QuotaRefused != st.RefusedIP {
		t.Fatalf("stats %+v", st)
	}
	// Many IPs still fill the server, and no more.
	for i := range total {
		ip := fmt.Sprintf("127.0.1.%d", 1+i/perIP)
		if _, err := tryAllocate(t, s, UDP, ip, NewCredentials(testSecret, fmt.Sprintf("m%d", i), time.Hour, now)); err != nil {
			break
		}
	}
	if st := s.Stats(); st.Live != total || st.RefusedFull != 1 {
		t.Fatalf("stats %+v: want %d live and 1 refused as full", st, total)
	}
}

// TestQuotaReleasedOnFailure: an allocation refused after the quota check
// (no relay socket) gives its place back.
func TestQuotaReleasedOnFailure(t *testing.T) {
	leakcheck.Check(t)
	var calls atomic.Int32
	s := startServer(t, func(c *ServerConfig) {
		c.MaxAllocations = 1
		c.ListenPacket = func(network, addr string) (net.PacketConn, error) {
			if calls.Add(1) <= 3 {
				return nil, errors.New("no socket for you")
			}
			return net.ListenPacket(network, addr)
		}
	})
	creds := NewCredentials(testSecret, "x", time.Hour, time.Now())
	for i := range 3 {
		if _, err := tryAllocate(t, s, UDP, "127.0.0.1", creds); err == nil {
			t.Fatalf("allocation %d succeeded without a relay socket", i)
		}
	}
	if _, err := tryAllocate(t, s, UDP, "127.0.0.1", creds); err != nil {
		t.Fatalf("after 3 failed allocations: %v (stats %+v)", err, s.Stats())
	}
}

// TestQuotaPerUserAcrossExpiries: credentials reissued for one user (a
// new expiry at every registration) share the user's quota.
func TestQuotaPerUserAcrossExpiries(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, nil)
	now := time.Now()
	for i := range DefaultMaxPerUser {
		creds := NewCredentials(testSecret, "peer", time.Hour+time.Duration(i)*time.Second, now)
		if _, err := tryAllocate(t, s, UDP, "127.0.0.1", creds); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
	}
	creds := NewCredentials(testSecret, "peer", 2*time.Hour, now)
	if _, err := tryAllocate(t, s, UDP, "127.0.0.1", creds); err == nil {
		t.Fatalf("allocation %d for one user, under another expiry, succeeded", DefaultMaxPerUser+1)
	}
}
