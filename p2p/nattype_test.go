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
		{"no NAT", NATReport{NoNAT: true}, false, NATTypeOpen},
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
