package relay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// Short checks for the tests: a refresh every 100 ms, dead after 500 ms
// without an answer.
const (
	testCheckInterval = 100 * time.Millisecond
	testCheckTimeout  = 500 * time.Millisecond
	deadWithin        = 5 * time.Second // far above interval + timeout
)

// restartServer closes s and starts a new server on the same UDP and TCP
// addresses: a TURN server that restarted, knowing no allocation.
func restartServer(t *testing.T, s *testServer) *testServer {
	t.Helper()
	s.Close()
	var pc net.PacketConn
	var l net.Listener
	var err error
	// The old server's sockets are closed; binding their ports again can
	// only fail if someone else took them meanwhile.
	if pc, err = net.ListenPacket("udp4", s.udp.String()); err != nil {
		t.Fatalf("rebinding %v: %v", s.udp, err)
	}
	if l, err = net.Listen("tcp4", s.tcp.String()); err != nil {
		pc.Close()
		t.Fatalf("rebinding %v: %v", s.tcp, err)
	}
	srv, err := NewServer(ServerConfig{Secret: testSecret, PacketConns: []net.PacketConn{pc}, Listeners: []net.Listener{l},
		RelayIP: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &testServer{Server: srv, udp: s.udp, tcp: s.tcp}
}

func allocateChecked(t *testing.T, srv netip.AddrPort, tr Transport) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Allocate(ctx, ClientConfig{Server: srv, Transport: tr, LocalIP: "127.0.0.1",
		Credentials:   NewCredentials(testSecret, "x", time.Hour, time.Now()),
		CheckInterval: testCheckInterval, CheckTimeout: testCheckTimeout})
	if err != nil {
		t.Fatalf("allocate over %v: %v", tr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitChecks waits until c has had n more checks answered, and fails if
// it died meanwhile.
func waitChecks(t *testing.T, c *Client, n uint64) {
	t.Helper()
	want := c.Stats().Checks + n
	deadline := time.Now().Add(deadWithin)
	for c.Stats().Checks < want {
		select {
		case <-c.Dead():
			t.Fatalf("a live allocation counted dead: %v", c.Err())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d checks answered within %v, want %d", c.Stats().Checks, deadWithin, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClientDeadAfterServerRestart: a TURN server that restarts on the
// same addresses has forgotten the allocation (and answers nothing about
// it); the client's refresh goes unanswered and it reports the allocation
// dead within CheckInterval + CheckTimeout. Over TCP the connection's end
// says so at once. A new allocation on the new server lives.
func TestClientDeadAfterServerRestart(t *testing.T) {
	leakcheck.Check(t)
	for _, tr := range []Transport{UDP, TCP} {
		t.Run(tr.String(), func(t *testing.T) {
			s := startServer(t, nil)
			addr := s.udp
			if tr == TCP {
				addr = s.tcp
			}
			c := allocateChecked(t, addr, tr)
			waitChecks(t, c, 3) // checks pass while the server lives
			if c.Err() != nil {
				t.Fatalf("Err %v on a live allocation", c.Err())
			}
			start := time.Now()
			s = restartServer(t, s)
			select {
			case <-c.Dead():
			case <-time.After(deadWithin):
				t.Fatalf("no Dead within %v of the server's restart (%d live allocations on it)", deadWithin, s.Stats().Live)
			}
			took := time.Since(start)
			if !errors.Is(c.Err(), ErrDead) {
				t.Fatalf("Err %v, want ErrDead", c.Err())
			}
			if err := c.WriteTo([]byte("x"), netip.MustParseAddrPort("127.0.0.1:9")); !errors.Is(err, ErrDead) {
				t.Errorf("WriteTo on a dead allocation: %v, want ErrDead", err)
			}
			t.Logf("dead after %v: %v", took.Round(time.Millisecond), c.Err())

			again := allocateChecked(t, addr, tr)
			waitChecks(t, again, 2)
			if st := s.Stats(); st.Live != 1 {
				t.Errorf("new server: %d live allocations, want 1", st.Live)
			}
		})
	}
}

// TestClientCloseIsNotDeath: closing a client does not report its
// allocation dead.
func TestClientCloseIsNotDeath(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, nil)
	c := allocateChecked(t, s.tcp, TCP)
	c.Close()
	select {
	case <-c.Dead():
		t.Fatalf("Dead after Close: %v", c.Err())
	default:
	}
	if c.Err() != nil {
		t.Fatalf("Err %v after Close", c.Err())
	}
}

// refusingServer answers every STUN request on pc as a TURN server that
// lost the allocation and says so (coturn): 401 with a nonce to a request
// without credentials, code to the others.
func refusingServer(t *testing.T, pc net.PacketConn, code stun.ErrorCode) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil || req.Type.Class != stun.ClassRequest {
				continue
			}
			answer := code
			if !req.Contains(stun.AttrMessageIntegrity) {
				answer = stun.CodeUnauthorized
			}
			res, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID),
				stun.NewType(req.Type.Method, stun.ClassErrorResponse),
				stun.ErrorCodeAttribute{Code: answer}, stun.NewNonce("fresh"), stun.NewRealm("gamewire"), stun.Fingerprint)
			if err != nil {
				continue
			}
			pc.WriteTo(res.Raw, from)
		}
	}()
}

// TestClientDeadOnRefusal: a server that answers 437 (Allocation
// Mismatch) or 403 to the client's refresh, or 437 to a CreatePermission,
// has the allocation counted dead at once.
func TestClientDeadOnRefusal(t *testing.T) {
	leakcheck.Check(t)
	for _, tc := range []struct {
		name   string
		code   stun.ErrorCode
		permit bool
	}{
		{"refresh-437", stun.CodeAllocMismatch, false},
		{"refresh-403", stun.CodeForbidden, false},
		{"permit-437", stun.CodeAllocMismatch, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// No periodic check within the test: only Check or Permit
			// learns of the refusal.
			c, err := Allocate(ctx, ClientConfig{Server: s.udp, LocalIP: "127.0.0.1",
				Credentials: NewCredentials(testSecret, "x", time.Hour, time.Now()), CheckInterval: time.Hour, CheckTimeout: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s.Close()
			pc, err := net.ListenPacket("udp4", s.udp.String())
			if err != nil {
				t.Fatalf("rebinding %v: %v", s.udp, err)
			}
			refusingServer(t, pc, tc.code)
			if tc.permit {
				if err := c.Permit(netip.MustParseAddrPort("127.0.0.1:9")); err == nil {
					t.Fatal("Permit succeeded")
				}
			} else {
				c.Check()
			}
			select {
			case <-c.Dead():
			case <-time.After(deadWithin):
				t.Fatalf("no Dead within %v of a %d answer", deadWithin, tc.code)
			}
			if err := c.Err(); !errors.Is(err, ErrDead) || !strings.Contains(err.Error(), strconv.Itoa(int(tc.code))) {
				t.Fatalf("Err %v, want ErrDead for a %d answer", err, tc.code)
			}
		})
	}
}

// TestClientPermitRefusedNotDeath: a peer the server's policy denies is
// refused (a 403 or a bare error), and the allocation lives on.
func TestClientPermitRefusedNotDeath(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, nil)
	c := allocateChecked(t, s.udp, UDP)
	if err := c.Permit(netip.MustParseAddrPort("10.0.0.1:9")); err == nil {
		t.Fatal("a permission for a private address was granted")
	}
	waitChecks(t, c, 2)
}

// TestPionFailureFormats: the log lines pion v4 writes when one of its
// refresh timers fails make the client check at once. The formats are
// pion's: the test reads pion's source, so an upgrade that rewords them
// fails here.
func TestPionFailureFormats(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/pion/turn/v4").Output()
	if err != nil {
		t.Skipf("no go list: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	var src strings.Builder
	for _, f := range []string{"allocation.go", "udp_conn.go"} {
		b, err := os.ReadFile(filepath.Join(dir, "internal", "client", f))
		if err != nil {
			t.Skipf("pion's source: %v", err)
		}
		src.Write(b)
	}
	for format := range pionFailures {
		if !strings.Contains(src.String(), strconv.Quote(format)) {
			t.Errorf("pion no longer logs %q", format)
		}
	}
	calls := 0
	l := pionLogs{log: quiet(nil), failed: func() { calls++ }}.NewLogger("turnc")
	l.Warnf("Failed to bind channel %d: %s", 16384, "all retransmissions failed")
	l.Errorf("Fail to refresh permissions: %s", "all retransmissions failed")
	l.Warnf("Receive buffer full")
	l.Debugf("Failed to refresh allocation: %s", "not at debug level")
	if calls != 2 {
		t.Errorf("%d checks asked for, want 2", calls)
	}
}
