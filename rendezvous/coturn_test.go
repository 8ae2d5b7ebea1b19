package rendezvous

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/netlab"
)

// coturnTool finds one of coturn's programs (Debian package coturn). It
// skips without it, and fails where GAMEWIRE_REQUIRE_LAB=1 (CI installs
// it).
func coturnTool(t *testing.T, name string) string {
	t.Helper()
	return debianTool(t, name, "coturn")
}

// debianTool finds the program name of Debian package pkg on PATH (or in
// /usr/sbin, which a user's PATH often lacks). It skips the test without
// it, and fails it where GAMEWIRE_REQUIRE_LAB=1 (CI installs it).
func debianTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if _, serr := os.Stat("/usr/sbin/" + name); serr == nil {
		return "/usr/sbin/" + name
	}
	if os.Getenv(netlab.RequireEnv) == "1" {
		t.Fatalf("%s not found (apt-get install %s; %s=1: these tests are mandatory here): %v", name, pkg, netlab.RequireEnv, err)
	}
	t.Skipf("%s not found (apt-get install %s)", name, pkg)
	return ""
}

// TestCoturnClientsAgainstEmbeddedTURN runs coturn's own clients against
// the rendezvous server's embedded TURN: turnutils_stunclient for a
// Binding, and turnutils_uclient in client-to-client mode (two allocations
// relaying to each other) over UDP and over TCP, authenticated with
// use-auth-secret credentials it derives from the shared secret itself.
func TestCoturnClientsAgainstEmbeddedTURN(t *testing.T) {
	stunclient := coturnTool(t, "turnutils_stunclient")
	uclient := coturnTool(t, "turnutils_uclient")
	s := turnServer(t)
	// The embedded relay takes the credentials of registered peers only:
	// uclient makes "expiry:USER" from the secret, so USER is one's.
	_, user, _ := strings.Cut(turnCreds(t, s).Credentials.Username, ":")
	port := strconv.Itoa(int(s.Addr().Port()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	out, err := exec.CommandContext(ctx, stunclient, "-p", port, "127.0.0.1").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "127.0.0.1") {
		t.Fatalf("turnutils_stunclient: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name  string
		flags []string
	}{{"udp", nil}, {"tcp", []string{"-t"}}} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Relay().Stats().Allocations
			args := append([]string{"-y", "-c", "-W", "sekrit", "-u", user, "-n", "20", "-m", "1", "-l", "200", "-z", "5", "-p", port}, tc.flags...)
			args = append(args, "127.0.0.1")
			out, err := exec.CommandContext(ctx, uclient, args...).CombinedOutput()
			text := string(out)
			if err != nil {
				t.Fatalf("turnutils_uclient %v: %v\n%s", args, err, text)
			}
			if !strings.Contains(text, "Total lost packets 0 (0.000000%)") {
				t.Fatalf("turnutils_uclient lost packets or did not finish:\n%s", text)
			}
			if n := s.Relay().Stats().Allocations - before; n < 2 {
				t.Fatalf("%d allocations on the embedded server, want at least 2\n%s", n, text)
			}
			t.Logf("turnutils_uclient: %s", lastLines(text, 4))
		})
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}
