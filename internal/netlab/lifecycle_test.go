package netlab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

var lifetimes = regexp.MustCompile(`(valid|preferred)_lft \S+|expires \S+`)

// rootSnapshot records the root namespace's links, nftables ruleset and
// sysctls, read only.
func rootSnapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"ip", "-o", "link"}, {"ip", "-o", "addr"}, {"ip", "route"}, {"nft", "list", "ruleset"}} {
		path, err := tool(args[0])
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(path, args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		// Address lifetimes count down on their own (DHCP, SLAAC).
		out = lifetimes.ReplaceAll(out, nil)
		fmt.Fprintf(&b, "$ %s\n%s\n", strings.Join(args, " "), out)
	}
	b.WriteString(readRootSysctls(t))
	return b.String()
}

// linkNames lists the interface names in namespace ns.
func linkNames(t *testing.T, ns string) []string {
	t.Helper()
	ip, err := tool("ip")
	if err != nil {
		t.Fatal(err)
	}
	// Standard output only: ip writes notes to standard error, and they are
	// not links (one printed while another package's lab was being torn
	// down was once read as a link named "Peer").
	out, err := exec.Command(ip, "-n", ns, "-o", "link").Output()
	if err != nil {
		t.Fatalf("ip -n %s link: %v", ns, err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// Link lines start "N: name:".
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasSuffix(f[0], ":") || !strings.HasSuffix(f[1], ":") {
			continue
		}
		if _, err := strconv.Atoi(strings.TrimSuffix(f[0], ":")); err != nil {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		names = append(names, name)
	}
	return names
}

// TestCleanup: a lab names everything with its prefix, and after Close no
// namespace of it is left while the root namespace's links, addresses,
// routes, nftables ruleset and sysctls are as before.
func TestCleanup(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	requireAvailable(t)
	before := rootSnapshot(t)

	l, err := New(Options{Name: "clean"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	prefix := l.Prefix()
	if len(prefix) != 7 || !strings.HasPrefix(prefix, "gw") {
		t.Errorf("prefix %q", prefix)
	}
	srv := openServer(t, l)
	for _, tc := range []siteCase{
		{"pr", SiteConfig{NAT: NATPortRestricted}},
		{"dbl", SiteConfig{NAT: NATSymmetric, Outer: NATPortRestricted, Hairpin: true, Hosts: 2, UDPTimeout: 5 * time.Second}},
		{"none", SiteConfig{NAT: NATNone, Hosts: 2}},
		{"fc", SiteConfig{NAT: NATFullCone, LossPermille: 50}},
	} {
		s := addSite(t, l, tc.name, tc.cfg)
		c := udp(t, s.Hosts[0], ":0")
		mapped(t, c, srv.A1, srv.a1)
	}
	nss := namespacesWith(t, prefix)
	if len(nss) != 2+2+4+2+2 { // pub, srv; pr: nat, h1; dbl: cgn, nat, h1, h2; none: h1, h2; fc: nat, h1
		t.Errorf("%d namespaces with prefix %s: %v", len(nss), prefix, nss)
	}
	for _, ns := range nss {
		if !strings.HasPrefix(ns, prefix) {
			t.Errorf("namespace %s lacks the prefix", ns)
		}
		for _, name := range linkNames(t, ns) {
			if name != "lo" && !strings.HasPrefix(name, prefix) {
				t.Errorf("link %s in %s lacks the prefix %s", name, ns, prefix)
			}
		}
	}
	if mid := rootSnapshot(t); mid != before {
		t.Errorf("root namespace changed while the lab runs:\nbefore:\n%s\nnow:\n%s", before, mid)
	}

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if left := namespacesWith(t, prefix); len(left) != 0 {
		t.Errorf("namespaces left after Close: %v", left)
	}
	ip, _ := tool("ip")
	if out, err := exec.Command(ip, "netns", "list").CombinedOutput(); err != nil || strings.Contains(string(out), prefix) {
		t.Errorf("ip netns list after Close: %v\n%s", err, out)
	}
	if after := rootSnapshot(t); after != before {
		t.Errorf("root namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := l.AddSite("late", SiteConfig{}); !errors.Is(err, errClosed) {
		t.Errorf("AddSite after Close: %v, want errClosed", err)
	}
}

// failHook fails the first command containing every one of its armed
// substrings; it records the lab prefix from the first namespace made.
type failHook struct {
	mu     sync.Mutex
	armed  []string
	prefix string
	hit    string
}

func (h *failHook) arm(subs ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed, h.hit = subs, ""
}

func (h *failHook) hook(cmd string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.prefix == "" && strings.HasPrefix(cmd, "ip netns add ") {
		h.prefix = strings.TrimPrefix(cmd, "ip netns add ")[:7]
	}
	if len(h.armed) == 0 {
		return nil
	}
	for _, s := range h.armed {
		if !strings.Contains(cmd, s) {
			return nil
		}
	}
	h.armed, h.hit = nil, cmd
	return errors.New("injected failure")
}

// TestNewFailure: New failing half way leaves no namespace behind.
func TestNewFailure(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	requireAvailable(t)
	for _, at := range [][]string{
		{"link add", "type bridge"},   // public namespace made
		{"sysctl", "-srv "},           // server namespace made
		{"peer name", "srv netns"},    // server veth
		{"-srv", "route add default"}, // the last step
	} {
		h := &failHook{}
		h.arm(at...)
		l, err := New(Options{Name: "failnew", hook: h.hook})
		if err == nil {
			l.Close()
			t.Fatalf("New succeeded despite a failure at %q", at)
		}
		if h.hit == "" || h.prefix == "" {
			t.Fatalf("failure at %q not injected (err %v)", at, err)
		}
		if left := namespacesWith(t, h.prefix); len(left) != 0 {
			t.Errorf("failure at %q: namespaces left: %v", h.hit, left)
		}
	}
}

// TestAddSiteFailure: AddSite failing half way removes what it made for
// the site (namespaces, public bridge ports), the lab keeps working, a
// site of the same name can be added afterwards, and Close removes all.
func TestAddSiteFailure(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	requireAvailable(t)
	h := &failHook{}
	l, err := New(Options{Name: "failsite", hook: h.hook})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	prefix := l.Prefix()
	srv := openServer(t, l)
	a := addSite(t, l, "a", SiteConfig{NAT: NATPortRestricted})
	ca := udp(t, a.Hosts[0], ":0")

	for _, tc := range []struct {
		cfg SiteConfig
		at  []string
	}{
		{SiteConfig{NAT: NATPortRestricted}, []string{"netns add", "-b-h1"}},
		{SiteConfig{NAT: NATPortRestricted, Hosts: 2}, []string{"-b-h2", "route add"}},
		{SiteConfig{NAT: NATFullCone}, []string{"-b-nat", "nft"}},
		{SiteConfig{NAT: NATPortRestricted, Outer: NATSymmetric}, []string{"-b-nat", "nft"}},
		{SiteConfig{NAT: NATPortRestricted, Outer: NATSymmetric}, []string{"-b-cgn", "peer name"}},
		{SiteConfig{NAT: NATPortRestricted, UDPTimeout: time.Second}, []string{"sysctl", "nf_conntrack_udp_timeout_stream"}},
		{SiteConfig{NAT: NATNone, Hosts: 2}, []string{"-b-h2", "addr add"}},
		{SiteConfig{NAT: NATPortRestricted}, []string{"-pub", "nft"}}, // the site's bridge table, last
	} {
		h.arm(tc.at...)
		if _, err := l.AddSite("b", tc.cfg); err == nil || h.hit == "" {
			t.Fatalf("AddSite succeeded or failure at %q not injected: %v", tc.at, err)
		}
		if left := namespacesWith(t, prefix+"failsite-b-"); len(left) != 0 {
			t.Errorf("failure at %q: namespaces left: %v", h.hit, left)
		}
		for _, name := range linkNames(t, l.PublicNamespace()) {
			if strings.HasPrefix(name, prefix+"u2") {
				t.Errorf("failure at %q: public bridge port %s left", h.hit, name)
			}
		}
		// The lab still works.
		if m := mapped(t, ca, srv.A1, srv.a1); !reaches(t, srv.a1, m, ca) {
			t.Errorf("after a failed AddSite, site a lost its server path")
		}
	}
	// The same name and index again, for real.
	b := addSite(t, l, "b", SiteConfig{NAT: NATPortRestricted, Outer: NATSymmetric, Hosts: 2})
	cb := udp(t, b.Hosts[1], ":0")
	if m := mapped(t, cb, srv.A1, srv.a1); !reaches(t, srv.a1, m, cb) {
		t.Error("site b added after failures does not work")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if left := namespacesWith(t, prefix); len(left) != 0 {
		t.Errorf("namespaces left after Close: %v", left)
	}
}

// TestDo: f runs in the host's namespace, the caller's thread never moves,
// errors and panics come back to the caller.
func TestDo(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab(t, "do")
	s := addSite(t, l, "a", SiteConfig{NAT: NATPortRestricted})

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	selfDev, selfIno, err := netnsID(threadNetns)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*Host{l.Server(), s.Hosts[0], s.Routers[0]} {
		wantDev, wantIno, err := netnsID(nsPath(h.Namespace))
		if err != nil {
			t.Fatal(err)
		}
		var dev, ino uint64
		if err := h.Do(func() (err error) {
			dev, ino, err = netnsID(threadNetns)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if dev != wantDev || ino != wantIno {
			t.Errorf("%s: Do ran in namespace %d:%d, want %d:%d", h.Name, dev, ino, wantDev, wantIno)
		}
		if d, i, _ := netnsID(threadNetns); d != selfDev || i != selfIno {
			t.Errorf("%s: the caller's thread moved to %d:%d", h.Name, d, i)
		}
	}

	sentinel := errors.New("sentinel")
	if err := s.Hosts[0].Do(func() error { return sentinel }); err != sentinel {
		t.Errorf("Do returned %v, want f's error", err)
	}
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Errorf("recovered %v, want f's panic", v)
			}
		}()
		s.Hosts[0].Do(func() error { panic("boom") })
	}()
	if err := (&Host{Name: "ghost", Namespace: l.Prefix() + "no-such"}).Do(func() error { return nil }); err == nil {
		t.Error("Do in a missing namespace succeeded")
	}

	// Command runs in the namespace too.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := s.Hosts[0].Command(ctx, "ip", "-4", "-o", "addr", "show", "dev", l.Prefix()+"eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), s.Hosts[0].IP.String()+"/24") {
		t.Errorf("Command: %v: %s", err, out)
	}
}

// TestSweep removes leftovers by prefix and refuses prefixes that could
// remove namespaces that are not labs'.
func TestSweep(t *testing.T) {
	for _, p := range []string{"", "g", "gw", "x1234-", "gw1/..", "gw 1"} {
		if err := sweep(p); err == nil {
			t.Errorf("sweep(%q) accepted", p)
		}
	}
	requireAvailable(t)
	prefix, err := randomPrefix()
	if err != nil {
		t.Fatal(err)
	}
	ip, _ := tool("ip")
	for _, n := range []string{"left1", "left2"} {
		if err := runCmd("", ip, "netns", "add", prefix+n); err != nil {
			t.Fatal(err)
		}
	}
	if err := sweep(prefix); err != nil {
		t.Fatal(err)
	}
	if left := namespacesWith(t, prefix); len(left) != 0 {
		t.Errorf("sweep left %v", left)
	}
}

// TestSiteConfigErrors: bad configurations fail before anything is made.
func TestSiteConfigErrors(t *testing.T) {
	l := &Lab{} // never reaches the system: validation comes first
	for _, tc := range []struct {
		name string
		cfg  SiteConfig
	}{
		{"bad name", SiteConfig{}},
		{"-dash", SiteConfig{}},
		{"ok", SiteConfig{NAT: "cone"}},
		{"ok", SiteConfig{NAT: NATNone, Outer: NATSymmetric}},
		{"ok", SiteConfig{NAT: NATFullCone, Outer: "weird"}},
		{"ok", SiteConfig{Hosts: -1}},
		{"ok", SiteConfig{Hosts: maxHosts + 1}},
		{"ok", SiteConfig{LossPermille: 1001}},
		{"ok", SiteConfig{UDPTimeout: -time.Second}},
		{"ok", SiteConfig{IPv6: "triple"}},
		{"ok", SiteConfig{IPv6: IPv6Dual}}, // the lab has no IPv6
		{"ok", SiteConfig{IPv6: IPv6Only}},
		{"ok", SiteConfig{IPv6Open: true}},
	} {
		if _, err := l.AddSite(tc.name, tc.cfg); err == nil {
			t.Errorf("AddSite(%q, %+v) accepted", tc.name, tc.cfg)
		}
	}
}
