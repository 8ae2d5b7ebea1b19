package main

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/netlab"
)

// TestLabPeers (root): "p2pdemo server" on the lab's public segment,
// "peer --echo" and "peer --ping" behind real NATs. With relay allowed,
// port-restricted pairs and symmetric pairs connect (exit 0) and the
// summary names the path; with --no-relay the symmetric pair exits
// non-zero naming Timeout, within the connect timeout.
func TestLabPeers(t *testing.T) {
	netlab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lab := netlab.NewForTest(t, netlab.Options{Name: "demo"})
	srv, err := startLabServer(ctx, lab, bin)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	host := func(name string, kind netlab.NATKind) *netlab.Host {
		s, err := lab.AddSite(name, netlab.SiteConfig{NAT: kind})
		if err != nil {
			t.Fatal(err)
		}
		return s.Hosts[0]
	}
	pa, pb := host("pr-a", netlab.NATPortRestricted), host("pr-b", netlab.NATPortRestricted)
	sa, sb := host("sym-a", netlab.NATSymmetric), host("sym-b", netlab.NATSymmetric)
	const timeout = 5 * time.Second
	for _, tc := range []struct {
		name   string
		a, b   string
		relay  bool
		path   string // wanted path ("any": the birthday approach or the relay, whichever wins)
		exitOK bool
	}{
		{"port-restricted", "pr-a", "pr-b", true, "direct", true},
		{"port-restricted/symmetric", "pr-a", "sym-b", true, "any", true},
		{"symmetric", "sym-a", "sym-b", true, "relay", true},
		{"symmetric/no-relay", "sym-a", "sym-b", false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := map[string]*netlab.Host{"pr-a": pa, "pr-b": pb, "sym-a": sa, "sym-b": sb}
			start := time.Now()
			r := labPair(ctx, bin, srv.addr, hosts[tc.a], hosts[tc.b], tc.relay, 5, timeout)
			took := time.Since(start)
			if r.err != nil {
				t.Fatal(r.err)
			}
			t.Logf("%s: %s (%v)", tc.name, r.row(), took.Round(time.Millisecond))
			if tc.exitOK {
				pathOK := r.res.Path == tc.path || tc.path == "any" && (r.res.Path == "direct" || r.res.Path == "relay")
				if r.exit != 0 || !r.res.OK || !pathOK {
					t.Errorf("exit %d, summary %+v; want exit 0 on path %s", r.exit, r.res, tc.path)
				}
				return
			}
			if r.exit == 0 || r.res.Error != "Timeout" || r.res.Connected {
				t.Errorf("exit %d, summary %+v; want a non-zero exit naming Timeout", r.exit, r.res)
			}
			// Registration, then the connect timeout, then the exit: the
			// peer's start and the echo peer's count too.
			if took > timeout+5*time.Second {
				t.Errorf("took %v, connect timeout %v", took, timeout)
			}
		})
	}
}

// TestLabCommand (root): "p2pdemo lab" builds its NATs, runs every pair
// and prints the table; it exits 0 when every pair behaved as expected.
func TestLabCommand(t *testing.T) {
	netlab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "lab", "--count", "3").CombinedOutput()
	if err != nil {
		t.Fatalf("lab: %v\n%s", err, out)
	}
	for _, want := range []string{
		"| port-restricted ↔ port-restricted | allowed | connected (exit 0) | direct |",
		"| symmetric ↔ symmetric | allowed | connected (exit 0) | relay |",
		"| symmetric ↔ symmetric | forbidden | Timeout (exit 1) |",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// TestLabExternalTURN (root): "p2pdemo server --external-turn" hands
// peers credentials for Debian's coturn (use-auth-secret, the same
// secret) instead of running its own relay; a symmetric pair, which needs
// a relay, connects through coturn.
func TestLabExternalTURN(t *testing.T) {
	netlab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lab := netlab.NewForTest(t, netlab.Options{Name: "demoturn"})
	const secret = "demo-coturn-secret"
	at := netip.AddrPortFrom(lab.ServerAddrs()[1], 3490)
	netlab.StartCoturn(t, lab.Server(), at, secret)
	srv, err := startLabServer(ctx, lab, bin, "--external-turn", "turn:"+at.String(), "--turn-secret", secret)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	var hosts []*netlab.Host
	for _, name := range []string{"sym-a", "sym-b"} {
		s, err := lab.AddSite(name, netlab.SiteConfig{NAT: netlab.NATSymmetric})
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, s.Hosts[0])
	}
	r := labPair(ctx, bin, srv.addr, hosts[0], hosts[1], true, 5, 10*time.Second)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.exit != 0 || !r.res.OK || r.res.Path != "relay" {
		t.Fatalf("exit %d, summary %+v; want exit 0 relayed through coturn", r.exit, r.res)
	}
	t.Logf("relayed through coturn: %s", r.row())
}
