package rendezvous

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestInteropNATDiscovery runs coturn's turnutils_natdiscovery (RFC 5780
// mapping and filtering discovery) against an RFC 5780 server on
// 127.0.0.1 and 127.0.0.2. Without -P the requests are bare (20 or 28
// bytes), and the tests run only if the answer, kept within 44 bytes, has
// OTHER-ADDRESS; with -P every request carries 1500 bytes of PADDING (1524
// in all), which must be read whole and answered with every attribute. On
// loopback there is no NAT: both tests must conclude endpoint-independent.
func TestInteropNATDiscovery(t *testing.T) {
	leakcheck.Check(t)
	tool := coturnTool(t, "turnutils_natdiscovery")
	s := startServer(t, true)
	port := strconv.Itoa(int(s.Addr().Port()))
	for _, tc := range []struct {
		name  string
		flags []string
	}{{"bare", nil}, {"padded", []string{"-P"}}} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// -L binds the local address, so the tool also sees no NAT.
			args := append([]string{"-m", "-f", "-L", "127.0.0.1", "-p", port}, tc.flags...)
			out, err := exec.CommandContext(ctx, tool, append(args, "127.0.0.1")...).CombinedOutput()
			text := string(out)
			if err != nil {
				t.Fatalf("turnutils_natdiscovery %v: %v\n%s", args, err, text)
			}
			for _, want := range []string{
				"Other addr: : " + s.addrs[1].String(),
				"NAT with Endpoint Independent Mapping!",
				"NAT with Endpoint Independent Filtering!",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("turnutils_natdiscovery %v: no %q in\n%s", args, want, text)
				}
			}
			after := s.Stats()
			if after.Oversized != before.Oversized || after.STUNDropped != before.STUNDropped {
				t.Errorf("oversized %d→%d, STUN dropped %d→%d", before.Oversized, after.Oversized, before.STUNDropped, after.STUNDropped)
			}
		})
	}
}

// TestInteropStunClient runs Debian's stun client (package stun-client,
// the RFC 3489 client of the Vovida code: no magic cookie) against an RFC
// 5780 server on 127.0.0.1 and 127.0.0.2. It needs MAPPED-ADDRESS and
// CHANGED-ADDRESS in the first answer, and the answers to its
// CHANGE-REQUESTs from the other IP and port: on loopback, with every test
// answered and no NAT, it reports "Open".
func TestInteropStunClient(t *testing.T) {
	leakcheck.Check(t)
	tool := debianTool(t, "stun", "stun-client")
	s := startServer(t, true)
	before := s.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Its exit status is the NAT type it found, not success: read the
	// report instead.
	out, _ := exec.CommandContext(ctx, tool, s.Addr().String()).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("stun did not finish: %s", out)
	}
	if !strings.Contains(string(out), "Primary: Open") {
		t.Fatalf("stun %v: want \"Primary: Open\", got\n%s", s.Addr(), out)
	}
	if after := s.Stats(); after.STUNDropped != before.STUNDropped || after.STUNAnswered == before.STUNAnswered {
		t.Errorf("answered %d→%d, dropped %d→%d", before.STUNAnswered, after.STUNAnswered, before.STUNDropped, after.STUNDropped)
	}
}
