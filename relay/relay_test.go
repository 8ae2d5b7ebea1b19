package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/testcert"
)

const testSecret = "s3cret"

type testServer struct {
	*Server
	udp, tcp netip.AddrPort
}

func startServer(t *testing.T, mutate func(*ServerConfig)) *testServer {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{Secret: testSecret, PacketConns: []net.PacketConn{pc}, Listeners: []net.Listener{l},
		RelayIP: netip.MustParseAddr("127.0.0.1")}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testServer{Server: s, udp: addrPortOf(pc.LocalAddr()), tcp: addrPortOf(l.Addr())}
}

type received struct {
	data []byte
	from netip.AddrPort
}

func allocate(t *testing.T, srv netip.AddrPort, tr Transport, creds Credentials) (*Client, chan received) {
	t.Helper()
	ch := make(chan received, 64)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	local := "127.0.0.1"
	if srv.Addr().Is6() {
		local = "::1"
	}
	c, err := Allocate(ctx, ClientConfig{Server: srv, Transport: tr, Credentials: creds, LocalIP: local,
		Receive: func(b []byte, from netip.AddrPort) {
			select {
			case ch <- received{append([]byte(nil), b...), from}:
			default:
			}
		}})
	if err != nil {
		t.Fatalf("allocate over %v: %v", tr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c, ch
}

// exchange sends from a to b's relayed address until b hears it (the first
// datagrams may beat b's permission), and checks the source b sees.
func exchange(t *testing.T, a, b *Client, bch chan received, msg []byte) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := a.WriteTo(msg, b.RelayedAddr()); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-bch:
			if !bytes.Equal(r.data, msg) {
				t.Fatalf("got %q, want %q", r.data, msg)
			}
			if r.from != a.RelayedAddr() {
				t.Fatalf("from %v, want the sender's relayed address %v", r.from, a.RelayedAddr())
			}
			return
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%q never arrived", msg)
		}
	}
}

func TestRelayToRelay(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, nil)
	for _, tc := range []struct {
		name   string
		ta, tb Transport
	}{{"udp-udp", UDP, UDP}, {"tcp-udp", TCP, UDP}, {"tcp-tcp", TCP, TCP}} {
		t.Run(tc.name, func(t *testing.T) {
			addr := func(tr Transport) netip.AddrPort {
				if tr == UDP {
					return s.udp
				}
				return s.tcp
			}
			now := time.Now()
			a, ach := allocate(t, addr(tc.ta), tc.ta, NewCredentials(testSecret, "a", time.Hour, now))
			b, bch := allocate(t, addr(tc.tb), tc.tb, NewCredentials(testSecret, "b", time.Hour, now))
			if err := b.Permit(a.RelayedAddr()); err != nil {
				t.Fatal(err)
			}
			exchange(t, a, b, bch, []byte("ping"))
			exchange(t, b, a, ach, []byte("pong"))
			// The writer counts a datagram after its write returns, which
			// can be after the peer has it: wait for the count.
			deadline := time.Now().Add(5 * time.Second)
			for st := a.Stats(); st.Sent == 0 || st.Received == 0; st = a.Stats() {
				if time.Now().After(deadline) {
					t.Fatalf("stats %+v", st)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	if st := s.Stats(); st.Allocations != 6 || st.BytesRelayed == 0 {
		t.Fatalf("server stats %+v: want 6 allocations and bytes relayed", st)
	}
}

func TestAllocationsEndOnClose(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, nil)
	c, _ := allocate(t, s.udp, UDP, NewCredentials(testSecret, "x", time.Hour, time.Now()))
	if s.Stats().Live != 1 {
		t.Fatalf("live %d", s.Stats().Live)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Live != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("allocation still live after Close: %+v", s.Stats())
		}
		time.Sleep(10 * time.Millisecond) // bounded poll for the server's deallocation
	}
	if err := c.WriteTo([]byte("x"), s.udp); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Close: %v, want net.ErrClosed", err)
	}
}

func TestBadCredentialsRefused(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, nil)
	now := time.Now()
	for name, creds := range map[string]Credentials{
		"other secret": NewCredentials("wrong", "x", time.Hour, now),
		"expired":      NewCredentials(testSecret, "x", -time.Minute, now),
		"not a time":   {Username: "x:y", Password: password(testSecret, "x:y")},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := Allocate(ctx, ClientConfig{Server: s.udp, Credentials: creds, LocalIP: "127.0.0.1"})
		cancel()
		if err == nil {
			t.Fatalf("%s: allocation succeeded", name)
		}
	}
	if st := s.Stats(); st.Allocations != 0 || st.AuthFailures < 3 {
		t.Fatalf("stats %+v: want no allocation and 3 failures", st)
	}
	if _, err := Allocate(context.Background(), ClientConfig{Server: s.udp}); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("no credentials: %v", err)
	}
}

func TestQuotaPerUser(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, func(c *ServerConfig) { c.MaxPerUser = 2 })
	creds := NewCredentials(testSecret, "greedy", time.Hour, time.Now())
	allocate(t, s.udp, UDP, creds)
	allocate(t, s.udp, UDP, creds)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Allocate(ctx, ClientConfig{Server: s.udp, Credentials: creds, LocalIP: "127.0.0.1"}); err == nil {
		t.Fatal("third allocation for one user succeeded")
	}
	if st := s.Stats(); st.QuotaRefused != 1 || st.RefusedUser != 1 || st.Live != 2 {
		t.Fatalf("stats %+v", st)
	}
	allocate(t, s.udp, UDP, NewCredentials(testSecret, "other", time.Hour, time.Now()))
}

func TestPortRange(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, func(c *ServerConfig) { c.MinPort, c.MaxPort = 41000, 41010 })
	c, _ := allocate(t, s.udp, UDP, NewCredentials(testSecret, "x", time.Hour, time.Now()))
	if p := c.RelayedAddr().Port(); p < 41000 || p > 41010 {
		t.Fatalf("relayed port %d outside 41000-41010", p)
	}
}

func TestAllocateHonoursContext(t *testing.T) {
	leakcheck.Check(t)
	dead, err := net.ListenPacket("udp4", "127.0.0.1:0") // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Allocate(ctx, ClientConfig{Server: addrPortOf(dead.LocalAddr()), LocalIP: "127.0.0.1",
		Credentials: NewCredentials(testSecret, "x", time.Hour, time.Now())})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the context's", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v after the context ended", d)
	}
}

func TestQueueBounded(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, nil)
	c, _ := allocate(t, s.udp, UDP, NewCredentials(testSecret, "x", time.Hour, time.Now()))
	if err := c.WriteTo(make([]byte, MaxDatagram+1), s.udp); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	// Far more than the queue holds, at once: some are dropped and
	// counted, none blocks.
	full := 0
	for range 20 * DefaultQueueLen {
		if err := c.WriteTo(make([]byte, 1000), netip.MustParseAddrPort("127.0.0.1:9")); errors.Is(err, ErrQueueFull) {
			full++
		}
	}
	if full == 0 || c.Stats().Dropped != uint64(full) {
		t.Fatalf("%d refused, stats %+v", full, c.Stats())
	}
}

// TestCredentialsMatchCoturnScheme checks the format against pion's TURN
// REST implementation, which coturn's use-auth-secret shares.
func TestCredentialsMatchCoturnScheme(t *testing.T) {
	user, pass, err := turn.GenerateLongTermTURNRESTCredentials(testSecret, "peer", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := password(testSecret, user); got != pass {
		t.Fatalf("password %q, pion says %q", got, pass)
	}
	now := time.Unix(1_700_000_000, 0)
	c := NewCredentials(testSecret, "peer", time.Hour, now)
	if c.Username != "1700003600:peer" {
		t.Fatalf("username %q", c.Username)
	}
	if !c.Valid(testSecret, now) || c.Valid(testSecret, now.Add(2*time.Hour)) || c.Valid("other", now) {
		t.Fatal("Valid disagrees")
	}
	forged := c
	forged.Username = "1900000000:peer"
	if forged.Valid(testSecret, now) {
		t.Fatal("a username with a later expiry kept the old password and passed")
	}
}

// TestCloseEndsTCPClients: Close ends the TCP connections the server
// accepted, which pion's own Close leaves open until their clients go.
func TestCloseEndsTCPClients(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, nil)
	c, _ := allocate(t, s.tcp, TCP, NewCredentials(testSecret, "x", time.Hour, time.Now()))
	s.Close()
	select {
	case <-c.baseDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the client's TCP connection is still open after the server closed")
	}
}

// TestRelayOverTLS: a client allocates over TLS (turns:) and relays to a
// UDP client; a client that does not trust the server's certificate gets
// no allocation.
func TestRelayOverTLS(t *testing.T) {
	leakcheck.Check(t)
	cert, pool, err := testcert.New("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, func(cfg *ServerConfig) { cfg.Listeners = append(cfg.Listeners, ln) })
	at := addrPortOf(ln.Addr())
	now := time.Now()
	allocateTLS := func(roots *x509.CertPool, ch chan received) (*Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return Allocate(ctx, ClientConfig{Server: at, Transport: TLS, LocalIP: "127.0.0.1",
			TLSConfig:   &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"},
			Credentials: NewCredentials(testSecret, "a", time.Hour, now),
			Receive: func(b []byte, from netip.AddrPort) {
				ch <- received{append([]byte(nil), b...), from}
			}})
	}
	ach := make(chan received, 64)
	a, err := allocateTLS(pool, ach)
	if err != nil {
		t.Fatalf("allocate over TLS: %v", err)
	}
	defer a.Close()
	if _, tr := a.Server(); tr != TLS {
		t.Errorf("transport %v", tr)
	}
	b, bch := allocate(t, s.udp, UDP, NewCredentials(testSecret, "b", time.Hour, now))
	if err := b.Permit(a.RelayedAddr()); err != nil {
		t.Fatal(err)
	}
	if err := a.Permit(b.RelayedAddr()); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b, bch, []byte("over tls"))
	exchange(t, b, a, ach, []byte("back"))
	if c, err := allocateTLS(x509.NewCertPool(), make(chan received, 1)); err == nil {
		c.Close()
		t.Fatal("allocated through a server whose certificate the client does not trust")
	}
	if st := s.Stats(); st.Allocations != 2 {
		t.Errorf("server stats %+v: want 2 allocations", st)
	}
}
