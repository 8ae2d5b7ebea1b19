package p2p

import (
	"net/netip"
	"testing"

	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/nat/portmap"
)

// TestNATTypeSummary: the EOS-style type from the behaviour under it.
func TestNATTypeSummary(t *testing.T) {
	eim, edm := nat.MappingEndpointIndependent, nat.MappingEndpointDependent
	mapped := portmap.Mapping{Protocol: portmap.PCP, External: netip.MustParseAddrPort("203.0.113.5:4000")}
	for _, tc := range []struct {
		name   string
		r      NATReport
		tested bool
		want   NATType
	}{
		{"testing", NATReport{Mapping: eim}, false, NATTypeUnknown},
		{"no answer", NATReport{}, true, NATTypeUnknown},
		{"no NAT, testing", NATReport{NoNAT: true}, false, NATTypeUnknown},
		{"no NAT", NATReport{NoNAT: true, Mapping: eim, Filtering: nat.FilteringEndpointIndependent}, true, NATTypeOpen},
		{"no NAT, filtering not testable", NATReport{NoNAT: true, Mapping: eim}, true, NATTypeOpen},
		{"stateful firewall", NATReport{NoNAT: true, Mapping: eim, Filtering: nat.FilteringAddressPortDependent}, true, NATTypeModerate},
		{"full cone", NATReport{Mapping: eim, Filtering: nat.FilteringEndpointIndependent}, true, NATTypeOpen},
		{"address-restricted", NATReport{Mapping: eim, Filtering: nat.FilteringAddressDependent}, true, NATTypeModerate},
		{"port-restricted", NATReport{Mapping: eim, Filtering: nat.FilteringAddressPortDependent}, true, NATTypeModerate},
		{"filtering unknown", NATReport{Mapping: eim}, true, NATTypeModerate},
		{"symmetric", NATReport{Mapping: edm, Filtering: nat.FilteringAddressPortDependent}, true, NATTypeStrict},
		{"symmetric, port mapped", NATReport{Mapping: edm, PortMapping: mapped}, true, NATTypeOpen},
		{"port mapped while testing", NATReport{PortMapping: mapped}, false, NATTypeOpen},
		{"UDP blocked", NATReport{UDPBlocked: true}, false, NATTypeStrict},
	} {
		if got := natType(tc.r, tc.tested); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if s := (NATReport{Type: NATTypeOpen, PortMapping: mapped, PortMapTried: true}).String(); s == "" {
		t.Error("empty String")
	}
}

// TestNATTypeNoServer: without a rendezvous server nothing is tested.
func TestNATTypeNoServer(t *testing.T) {
	n := loopbackNode(t, "127.0.0.1", Config{})
	if r := n.NATType(); r.Type != NATTypeUnknown || r.Public.IsValid() || len(r.IPv6) != 0 {
		t.Errorf("NATType %v, want Unknown with nothing known", r)
	}
}

// TestRendezvousAddrs: Config.Rendezvous names one address per family at
// most; the node registers over IPv4 unless it has no IPv4 address, and
// learns the other family's NAT only if it has an address there.
func TestRendezvousAddrs(t *testing.T) {
	v4, v6 := netip.MustParseAddrPort("203.0.113.7:3478"), netip.MustParseAddrPort("[2001:db8::7]:3478")
	_, addrs, err := parseRendezvous("203.0.113.7:3478, [2001:db8::7]:3478,203.0.113.9:3478")
	if err != nil || len(addrs) != 2 || addrs[0] != v4 || addrs[1] != v6 {
		t.Fatalf("parse: %v, %v", addrs, err)
	}
	if _, _, err := parseRendezvous("203.0.113.7:3478,nonsense"); err == nil {
		t.Error("a bad second address parsed")
	}
	lan4, lan6 := netip.MustParsePrefix("10.1.0.2/24"), netip.MustParsePrefix("2001:db8:1::2/64")
	lo := netip.MustParsePrefix("127.0.0.1/8")
	link := netip.MustParsePrefix("fe80::1/64")
	both := []netip.AddrPort{v6, v4}
	for _, tc := range []struct {
		name           string
		addrs          []netip.AddrPort
		prefixes       []netip.Prefix
		dual           bool
		primary, other netip.AddrPort
	}{
		{"dual-stack", both, []netip.Prefix{lan4, lan6}, true, v4, v6},
		{"IPv4 socket", both, []netip.Prefix{lan4, lan6}, false, v4, netip.AddrPort{}},
		{"IPv4 only", both, []netip.Prefix{lo, lan4, link}, true, v4, netip.AddrPort{}},
		{"IPv6 only", both, []netip.Prefix{lo, lan6, link}, true, v6, netip.AddrPort{}},
		{"IPv6 only, IPv4 server only", []netip.AddrPort{v4}, []netip.Prefix{lan6}, true, v4, netip.AddrPort{}},
		{"interfaces unknown", both, nil, true, v4, v6},
	} {
		p, o := pickRendezvous(tc.addrs, tc.prefixes, tc.dual)
		if p != tc.primary || o != tc.other {
			t.Errorf("%s: register with %v, other %v; want %v, %v", tc.name, p, o, tc.primary, tc.other)
		}
	}
}
