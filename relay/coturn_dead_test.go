package relay

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/netlab"
)

// syncBuffer is a bytes.Buffer a process's two output pipes can share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// coturn runs Debian's turnserver on 127.0.0.1 with use-auth-secret
// (testSecret); stop kills it. It skips without coturn, and fails where
// GAMEWIRE_REQUIRE_LAB=1 (CI installs it).
type coturn struct {
	t      *testing.T
	bin    string
	port   int
	cancel context.CancelFunc
	done   chan struct{}
	log    *syncBuffer
}

func startCoturn(t *testing.T, port int) *coturn {
	t.Helper()
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		if os.Getenv(netlab.RequireEnv) == "1" {
			t.Fatalf("turnserver not found (apt-get install coturn): %v", err)
		}
		t.Skipf("turnserver not found (apt-get install coturn)")
	}
	c := &coturn{t: t, bin: bin, port: port}
	c.start()
	t.Cleanup(c.stop)
	return c
}

func (c *coturn) start() {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, c.bin, "-n",
		"--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--listening-port="+strconv.Itoa(c.port),
		"--min-port=50300", "--max-port=50400",
		"--use-auth-secret", "--static-auth-secret="+testSecret, "--realm=gamewire",
		"--fingerprint", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp", "--no-tcp-relay",
		"--pidfile="+filepath.Join(c.t.TempDir(), "turnserver.pid"), "--log-file=stdout", "--simple-log")
	c.log = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = c.log, c.log
	if err := cmd.Start(); err != nil {
		cancel()
		c.t.Fatal(err)
	}
	c.cancel, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		cmd.Wait()
	}()
	// Wait for its first Binding answer.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	defer pc.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.port}
	buf := make([]byte, 1500)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if time.Now().After(deadline) {
			c.t.Fatalf("turnserver did not answer within 10 s:\n%s", c.log.String())
		}
		select {
		case <-c.done:
			c.t.Fatalf("turnserver exited:\n%s", c.log.String())
		default:
		}
		pc.WriteTo(req.Raw, to)
		pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, _, err := pc.ReadFrom(buf); err == nil && stun.IsMessage(buf[:n]) {
			return
		}
	}
}

// stop kills our turnserver (its PID only) and waits for it.
func (c *coturn) stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	<-c.done
	c.cancel = nil
	if c.t.Failed() {
		c.t.Logf("turnserver log:\n%s", c.log.String())
	}
}

// freeUDPPort finds a loopback UDP port nobody holds now.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// TestClientDeadAfterCoturnRestart: the client's own refreshes pass on
// coturn (its nonces, its integrity), and a coturn restarted on the same
// port answers them 437 Allocation Mismatch: dead at the next check.
func TestClientDeadAfterCoturnRestart(t *testing.T) {
	leakcheck.Check(t)
	ct := startCoturn(t, freeUDPPort(t))
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ct.port))
	c := allocateChecked(t, addr, UDP)
	waitChecks(t, c, 3)
	ct.stop()
	ct.start()
	select {
	case <-c.Dead():
	case <-time.After(deadWithin):
		t.Fatalf("no Dead within %v of coturn's restart", deadWithin)
	}
	err := c.Err()
	if !errors.Is(err, ErrDead) {
		t.Fatalf("Err %v, want ErrDead", err)
	}
	if code, ok := turnCode(err); !ok || code != stun.CodeAllocMismatch {
		// Between the kill and the restart a check may go unanswered.
		if !strings.Contains(err.Error(), "unanswered") {
			t.Fatalf("Err %v, want 437 Allocation Mismatch (or no answer)", err)
		}
	}
	t.Logf("dead: %v", err)
	again := allocateChecked(t, addr, UDP)
	waitChecks(t, again, 2)
}
