package netlab

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestBehavior builds one site per NAT kind and combination and measures
// mapping, filtering, port preservation and hairpinning the RFC 5780 way.
func TestBehavior(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab(t, "behave")

	type want struct {
		mapping, filtering string
		preserved, hairpin bool
	}
	cases := []struct {
		name string
		cfg  SiteConfig
		want want
	}{
		{"none", SiteConfig{NAT: NATNone}, want{EIM, EIF, true, true}},
		{"fc", SiteConfig{NAT: NATFullCone}, want{EIM, EIF, true, false}},
		{"ar", SiteConfig{NAT: NATAddrRestricted}, want{EIM, ADF, true, false}},
		{"pr", SiteConfig{NAT: NATPortRestricted}, want{EIM, APDF, true, false}},
		{"sym", SiteConfig{NAT: NATSymmetric}, want{APDM, APDF, false, false}},
		{"fc-hp", SiteConfig{NAT: NATFullCone, Hairpin: true}, want{EIM, EIF, true, true}},
		{"ar-hp", SiteConfig{NAT: NATAddrRestricted, Hairpin: true}, want{EIM, ADF, true, true}},
		{"pr-hp", SiteConfig{NAT: NATPortRestricted, Hairpin: true}, want{EIM, APDF, true, true}},
		{"sym-hp", SiteConfig{NAT: NATSymmetric, Hairpin: true}, want{APDM, APDF, false, true}},
		// Double NAT: the home NAT's kind, then the carrier's.
		{"pr.pr", SiteConfig{NAT: NATPortRestricted, Outer: NATPortRestricted}, want{EIM, APDF, true, false}},
		{"pr.pr-hp", SiteConfig{NAT: NATPortRestricted, Outer: NATPortRestricted, Hairpin: true}, want{EIM, APDF, true, true}},
		{"sym.pr", SiteConfig{NAT: NATSymmetric, Outer: NATPortRestricted}, want{APDM, APDF, false, false}},
		{"pr.sym", SiteConfig{NAT: NATPortRestricted, Outer: NATSymmetric}, want{APDM, APDF, false, false}},
		{"fc.fc", SiteConfig{NAT: NATFullCone, Outer: NATFullCone}, want{EIM, EIF, true, false}},
		{"fc.pr", SiteConfig{NAT: NATFullCone, Outer: NATPortRestricted}, want{EIM, APDF, true, false}},
		{"ar.fc", SiteConfig{NAT: NATAddrRestricted, Outer: NATFullCone}, want{EIM, ADF, true, false}},
		{"fc.ar", SiteConfig{NAT: NATFullCone, Outer: NATAddrRestricted}, want{EIM, ADF, true, false}},
	}

	start := time.Now()
	sites := make([]*Site, len(cases))
	for i, c := range cases {
		sites[i] = addSite(t, l, strings.ReplaceAll(c.name, ".", "_"), c.cfg)
	}
	t.Logf("%d sites built in %v", len(sites), time.Since(start))

	start = time.Now()
	rows := make([]behaviorRow, len(cases))
	var wg sync.WaitGroup
	errs := make([]error, len(cases))
	for i := range cases {
		wg.Go(func() {
			b, err := l.Probe(sites[i].Hosts[0])
			rows[i] = behaviorRow{Name: cases[i].name, Config: sites[i].Config, Behavior: b}
			errs[i] = err
		})
	}
	wg.Wait()
	t.Logf("probed in %v", time.Since(start))
	var table strings.Builder
	formatTable(&table, rows)
	t.Logf("measured behaviour:\n%s", table.String())

	for i, c := range cases {
		b := rows[i].Behavior
		if errs[i] != nil {
			t.Errorf("%s: %v", c.name, errs[i])
			continue
		}
		if b.Mapping != c.want.mapping || b.Filtering != c.want.filtering || b.Hairpin != c.want.hairpin {
			t.Errorf("%s (%s): mapping %s filtering %s hairpin %v, want %s %s %v", c.name, c.cfg.Describe(),
				b.Mapping, b.Filtering, b.Hairpin, c.want.mapping, c.want.filtering, c.want.hairpin)
		}
		if c.want.mapping == EIM && b.PortPreserved != c.want.preserved {
			t.Errorf("%s: port preserved %v (local %v, mapped %v), want %v", c.name, b.PortPreserved, b.Local, b.MappedA1, c.want.preserved)
		}
		if b.MappedA1.Addr() != sites[i].PublicIP {
			t.Errorf("%s: mapped address %v, want the site's public address %v", c.name, b.MappedA1, sites[i].PublicIP)
		}
		// An RFC 4787 hairpinning NAT shows the sender's public mapping.
		if b.Hairpin && c.cfg.NAT != NATNone && b.HairpinSource.Addr() != sites[i].PublicIP {
			t.Errorf("%s: hairpinned datagram came from %v, want the public address %v", c.name, b.HairpinSource, sites[i].PublicIP)
		}
	}
}

// TestSameNAT: two hosts behind one NAT reach each other on the LAN, and
// through the NAT's public address only if it hairpins; a full-cone NAT
// with two hosts sends inbound datagrams to the right one.
func TestSameNAT(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab(t, "same")
	for _, tc := range []siteCase{
		{"hp", SiteConfig{NAT: NATPortRestricted, Hosts: 2, Hairpin: true}},
		{"nohp", SiteConfig{NAT: NATPortRestricted, Hosts: 2}},
		{"fchp", SiteConfig{NAT: NATFullCone, Hosts: 2, Hairpin: true}},
		{"fc", SiteConfig{NAT: NATFullCone, Hosts: 2}},
		{"symhp", SiteConfig{NAT: NATSymmetric, Hosts: 2, Hairpin: true}},
		{"dblhp", SiteConfig{NAT: NATPortRestricted, Outer: NATPortRestricted, Hosts: 2, Hairpin: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := openServer(t, l)
			s := addSite(t, l, tc.name, tc.cfg)
			h1, h2 := s.Hosts[0], s.Hosts[1]
			c1, c2 := udp(t, h1, ":0"), udp(t, h2, ":0")
			m1, m2 := mapped(t, c1, srv.A1, srv.a1), mapped(t, c2, srv.A1, srv.a1)

			// The LAN works directly.
			if from, ok, err := exchange(c1, h2.AddrPort(localAP(c2).Port()), c2, "lan", probeFirstTries); err != nil || !ok {
				t.Errorf("LAN datagram h1 -> h2 lost (%v)", err)
			} else if from != h1.AddrPort(localAP(c1).Port()) {
				t.Errorf("LAN datagram came from %v, want h1's LAN address", from)
			}

			// Through the public address: both send to the other's mapping,
			// a few rounds, as hole punching would.
			var got12, got21 bool
			var from12 netip.AddrPort
			for range probeTries {
				c1.WriteToUDPAddrPort([]byte("h12"), m2)
				c2.WriteToUDPAddrPort([]byte("h21"), m1)
				if !got12 {
					from12, got12, _ = await(c2, "h12", probeWait)
				}
				if !got21 {
					_, got21, _ = await(c1, "h21", probeWait)
				}
				if got12 && got21 {
					break
				}
			}
			if got12 != tc.cfg.Hairpin || got21 != tc.cfg.Hairpin {
				t.Errorf("hairpin h1->h2 %v, h2->h1 %v, want %v", got12, got21, tc.cfg.Hairpin)
			}
			// RFC 4787 REQ-9: the hairpinned datagram shows the sender's
			// public mapping (a symmetric NAT makes a new one).
			if got12 && tc.cfg.NAT != NATSymmetric && from12 != m1 {
				t.Errorf("hairpinned datagram from %v, want h1's mapping %v", from12, m1)
			}
			if got12 && from12.Addr() != s.PublicIP {
				t.Errorf("hairpinned datagram from %v, want the public address %v", from12, s.PublicIP)
			}

			// Full cone with two hosts: inbound from a new endpoint reaches
			// the host behind each mapping.
			if tc.cfg.NAT == NATFullCone {
				if !reaches(t, srv.b1, m1, c1) || !reaches(t, srv.b1, m2, c2) {
					t.Error("inbound datagrams from B:p1 did not reach the mapped hosts")
				}
			}
		})
	}
}
