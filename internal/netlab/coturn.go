package netlab

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// StartCoturn runs Debian's coturn (turnserver, from the coturn package)
// on host h, listening and relaying at at (relay ports 50000–50200) with
// use-auth-secret and secret, UDP only; it waits until the server answers
// a STUN Binding request, and ends it (its PID only) when the test ends.
// The test fails if turnserver is not installed.
func StartCoturn(tb testing.TB, h *Host, at netip.AddrPort, secret string) {
	tb.Helper()
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		tb.Fatalf("turnserver not found (apt-get install coturn): %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := h.Command(ctx, bin, "-n",
		"--listening-ip="+at.Addr().String(), "--relay-ip="+at.Addr().String(),
		"--listening-port="+strconv.Itoa(int(at.Port())), "--min-port=50000", "--max-port=50200",
		"--use-auth-secret", "--static-auth-secret="+secret, "--realm=gamewire",
		"--fingerprint", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp-relay",
		"--pidfile="+filepath.Join(tb.TempDir(), "turnserver.pid"), "--log-file=stdout", "--simple-log")
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cancel() // kills our turnserver (its PID only)
		cmd.Wait()
		if tb.Failed() {
			tb.Logf("turnserver log:\n%s", log.String())
		}
	})
	pc, err := h.ListenPacket("udp4", ":0")
	if err != nil {
		tb.Fatal(err)
	}
	defer pc.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	buf := make([]byte, 1500)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if time.Now().After(deadline) {
			tb.Fatal("turnserver did not answer within 10 s")
		}
		pc.WriteTo(req.Raw, net.UDPAddrFromAddrPort(at))
		pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, _, err := pc.ReadFrom(buf); err == nil && stun.IsMessage(buf[:n]) {
			return
		}
	}
}

// lockedBuffer is a bytes.Buffer a process's two output pipes can share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
