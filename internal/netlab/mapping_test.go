package netlab

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestUDPTimeout: with UDPTimeout 3 s a mapping idle for longer is gone
// (inbound from the same server endpoint no longer arrives), while a site
// with the kernel default keeps it; the sysctls apply inside the NAT
// namespaces only.
func TestUDPTimeout(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	rootBefore := readRootSysctls(t)
	l := newLab(t, "timeout")
	srv := openServer(t, l)
	const timeout = 3 * time.Second
	type probe struct {
		site   *Site
		c      *net.UDPConn
		m      netip.AddrPort
		expire bool
	}
	var probes []*probe
	for _, tc := range []struct {
		name string
		cfg  SiteConfig
	}{
		{"pr3", SiteConfig{NAT: NATPortRestricted, UDPTimeout: timeout}},
		{"fc3", SiteConfig{NAT: NATFullCone, UDPTimeout: timeout}},
		{"dbl3", SiteConfig{NAT: NATPortRestricted, Outer: NATFullCone, UDPTimeout: timeout}},
		{"pr", SiteConfig{NAT: NATPortRestricted}},
	} {
		s := addSite(t, l, tc.name, tc.cfg)
		for _, r := range s.Routers {
			for _, k := range []string{"nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"} {
				v, err := readSysctl(r.Namespace, "net/netfilter/"+k)
				if err != nil {
					t.Fatal(err)
				}
				if want := map[bool]string{true: "3", false: v}[tc.cfg.UDPTimeout != 0]; v != want {
					t.Errorf("%s: %s = %s in %s, want %s", tc.name, k, v, r.Name, want)
				}
			}
		}
		p := &probe{site: s, c: udp(t, s.Hosts[0], ":0"), expire: tc.cfg.UDPTimeout != 0}
		p.m = mapped(t, p.c, srv.A1, srv.a1)
		if !reaches(t, srv.a1, p.m, p.c) {
			t.Fatalf("%s: the server's reply did not arrive", tc.name)
		}
		probes = append(probes, p)
	}
	if after := readRootSysctls(t); after != rootBefore {
		t.Errorf("root namespace sysctls changed:\nbefore %s\nafter  %s", rootBefore, after)
	}

	// Idle past the timeout: no datagram in either direction.
	time.Sleep(timeout + 1500*time.Millisecond)
	for _, p := range probes {
		if got := reaches(t, srv.a1, p.m, p.c); got == p.expire {
			t.Errorf("%s: after %v idle the mapping works: %v, want %v", p.site.Name, timeout+1500*time.Millisecond, got, !p.expire)
		}
		// Sending again makes a new mapping (the same port: preserved).
		m := mapped(t, p.c, srv.A1, srv.a1)
		if m != p.m {
			t.Errorf("%s: new mapping %v, want the preserved %v", p.site.Name, m, p.m)
		}
		if !reaches(t, srv.a1, m, p.c) {
			t.Errorf("%s: the server's reply on the new mapping did not arrive", p.site.Name)
		}
	}
}

// readRootSysctls reads sysctls a lab must not change in the root
// namespace. Test goroutines run on threads in the root namespace (Do
// never leaves a thread elsewhere).
func readRootSysctls(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, k := range []string{
		"net/ipv4/ip_forward",
		"net/ipv4/conf/all/rp_filter",
		"net/ipv4/conf/default/rp_filter",
		"net/ipv4/conf/all/send_redirects",
		"net/ipv6/conf/all/disable_ipv6",
		"net/netfilter/nf_conntrack_udp_timeout",
		"net/netfilter/nf_conntrack_udp_timeout_stream",
		"net/bridge/bridge-nf-call-iptables",
	} {
		v, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			v = []byte("-")
		}
		b.WriteString(k + "=" + strings.TrimSpace(string(v)) + " ")
	}
	return b.String()
}

// siteCase is a named site configuration of a table-driven test.
type siteCase struct {
	name string
	cfg  SiteConfig
}

// TestFlushConntrack: after FlushConntrack the server can no longer reach
// the old mapping (conntrack and the cone state are gone in every layer);
// sending again opens a new one.
func TestFlushConntrack(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab(t, "flush")
	for _, tc := range []siteCase{
		{"pr", SiteConfig{NAT: NATPortRestricted}},
		{"fc", SiteConfig{NAT: NATFullCone}},
		{"ar", SiteConfig{NAT: NATAddrRestricted}},
		{"fcfc", SiteConfig{NAT: NATFullCone, Outer: NATFullCone}},
		{"none", SiteConfig{NAT: NATNone}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := openServer(t, l)
			s := addSite(t, l, tc.name, tc.cfg)
			c := udp(t, s.Hosts[0], ":0")
			m := mapped(t, c, srv.A1, srv.a1)
			if !reaches(t, srv.a1, m, c) {
				t.Fatal("reply before flush lost")
			}
			if err := s.FlushConntrack(); err != nil {
				t.Fatalf("FlushConntrack: %v", err)
			}
			want := tc.cfg.NAT == NATNone // no NAT, nothing to forget
			if got := reaches(t, srv.a1, m, c); got != want {
				t.Errorf("after FlushConntrack the old mapping works: %v, want %v", got, want)
			}
			if tc.cfg.NAT == NATFullCone && reaches(t, srv.b1, m, c) {
				t.Error("after FlushConntrack B:p1 still reaches the old full-cone mapping")
			}
			m2 := mapped(t, c, srv.A1, srv.a1)
			if !reaches(t, srv.a1, m2, c) {
				t.Error("reply on the new mapping lost")
			}
		})
	}
}

// TestChangeMappings: each ChangeMappings moves the site's mapping for the
// same socket to another external port (from 20000-29999, then
// 10000-19999; symmetric stays random), the old mapping stops working and
// the NAT keeps its kind.
func TestChangeMappings(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab(t, "change")
	for _, tc := range []siteCase{
		{"pr", SiteConfig{NAT: NATPortRestricted}},
		{"fc", SiteConfig{NAT: NATFullCone, Hairpin: true}},
		{"ar", SiteConfig{NAT: NATAddrRestricted}},
		{"sym", SiteConfig{NAT: NATSymmetric}},
		{"prpr", SiteConfig{NAT: NATPortRestricted, Outer: NATPortRestricted}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := openServer(t, l)
			s := addSite(t, l, tc.name, tc.cfg)
			c := udp(t, s.Hosts[0], ":0")
			prev := mapped(t, c, srv.A1, srv.a1)
			if tc.cfg.NAT != NATSymmetric && prev.Port() != localAP(c).Port() {
				t.Errorf("first mapping %v does not keep the local port %d", prev, localAP(c).Port())
			}
			for round, rng := range [][2]uint16{{20000, 29999}, {10000, 19999}, {20000, 29999}} {
				if err := s.ChangeMappings(); err != nil {
					t.Fatalf("ChangeMappings: %v", err)
				}
				m := mapped(t, c, srv.A1, srv.a1)
				if m.Port() == prev.Port() {
					t.Errorf("round %d: mapped port %d unchanged", round, m.Port())
				}
				if tc.cfg.NAT != NATSymmetric && (m.Port() < rng[0] || m.Port() > rng[1]) {
					t.Errorf("round %d: mapped port %d outside %d-%d", round, m.Port(), rng[0], rng[1])
				}
				if !reaches(t, srv.a1, m, c) {
					t.Errorf("round %d: reply on the new mapping %v lost", round, m)
				}
				if reaches(t, srv.a1, prev, c) {
					t.Errorf("round %d: the old mapping %v still works", round, prev)
				}
				prev = m
			}
			// The cone state is keyed by the translated (mapped) port: the
			// postrouting chain at priority 200 runs after srcnat.
			if tc.cfg.NAT == NATAddrRestricted || tc.cfg.NAT == NATFullCone {
				out, err := s.Routers[0].Command(t.Context(), "nft", "list", "ruleset").CombinedOutput()
				if err != nil {
					t.Fatalf("nft list ruleset: %v: %s", err, out)
				}
				entry := fmt.Sprintf("%d expires", prev.Port()) // fc: mapped port : LAN address . port
				if tc.cfg.NAT == NATAddrRestricted {
					entry = fmt.Sprintf("%s . %d expires", serverAddr1, prev.Port()) // seen: remote . mapped port
				}
				if !regexp.MustCompile(`[{,] ` + regexp.QuoteMeta(entry)).Match(out) {
					t.Errorf("no element %q in the NAT's sets:\n%s", entry, out)
				}
			}
			// The kind survives the change.
			b, err := l.Probe(s.Hosts[0])
			if err != nil {
				t.Fatalf("probe: %v", err)
			}
			want := map[NATKind][2]string{
				NATPortRestricted: {EIM, APDF}, NATFullCone: {EIM, EIF},
				NATAddrRestricted: {EIM, ADF}, NATSymmetric: {APDM, APDF},
			}[tc.cfg.NAT]
			if b.Mapping != want[0] || b.Filtering != want[1] || b.Hairpin != tc.cfg.Hairpin {
				t.Errorf("after ChangeMappings: %s %s hairpin %v, want %s %s %v", b.Mapping, b.Filtering, b.Hairpin, want[0], want[1], tc.cfg.Hairpin)
			}
			if b.Hairpin && b.HairpinSource.Addr() != s.PublicIP {
				t.Errorf("after ChangeMappings: hairpin source %v", b.HairpinSource)
			}
		})
	}
}
