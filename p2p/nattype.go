package p2p

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/nat/portmap"
)

// NATType is how directly peers can reach a node, in the terms of Epic
// Online Services' EOS_ENATType.
type NATType int

const (
	// NATTypeUnknown: not known yet (the node is still testing its NAT),
	// or the node has no rendezvous server to test it with.
	NATTypeUnknown NATType = iota
	// NATTypeOpen: every peer can reach the node directly: it has a
	// public address of its own (no NAT) and no firewall filtering
	// inbound datagrams, a port mapping on its router, or a NAT that maps
	// endpoint-independently and lets anyone's datagrams in (full cone).
	NATTypeOpen
	// NATTypeModerate: a NAT that maps endpoint-independently but filters
	// (address-restricted or port-restricted cone), or a stateful firewall
	// in front of a public address (IPv6 behind a home router). Direct with Open and
	// Moderate peers, and with Strict ones by the birthday approach
	// against a port-restricted NAT (nearly always) or plainly against an
	// address-restricted one.
	NATTypeModerate
	// NATTypeStrict: a NAT that maps per destination (symmetric) and no
	// port mapping, or UDP blocked. Direct with Open peers, and with
	// Moderate ones by the birthday approach or over direct TCP; sessions
	// with other Strict peers go through the relay.
	NATTypeStrict
)

func (t NATType) String() string {
	switch t {
	case NATTypeUnknown:
		return "Unknown"
	case NATTypeOpen:
		return "Open"
	case NATTypeModerate:
		return "Moderate"
	case NATTypeStrict:
		return "Strict"
	}
	return fmt.Sprintf("NATType(%d)", int(t))
}

// NATReport is what a node knows of its NAT: the EOS-style summary and
// the RFC 4787 behaviour, port mapping and IPv6 it rests on.
type NATReport struct {
	Type NATType
	// Mapping and Filtering are the NAT's behaviour toward the rendezvous
	// server (RFC 5780 tests): unknown until the tests end, and Filtering
	// stays unknown when the server has no second address.
	Mapping   nat.Mapping
	Filtering nat.Filtering
	// Public is the node's address as the rendezvous server sees it (its
	// server-reflexive candidate); NoNAT says it is one of the node's own.
	Public netip.AddrPort
	NoNAT  bool
	// PortMapping is the mapping the router holds for the node's port
	// (Valid when one is held: PCP, NAT-PMP or UPnP IGD). PortMapTried
	// says an attempt has ended: with no mapping the router offered none
	// (or port mapping is off: Config.DisablePortMapping).
	PortMapping  portmap.Mapping
	PortMapTried bool
	// IPv6 lists the node's global IPv6 addresses its socket can use
	// (none for an IPv4 socket); UDPBlocked says UDP does not reach the
	// server (the node registered over TCP).
	IPv6       []netip.Addr
	UDPBlocked bool
	// IPv6Public is the node's address as the server sees it over IPv6
	// (valid once the server answered there: IPv6 reaches the internet),
	// with the mapping and filtering in front of it (a stateful IPv6
	// firewall filters without mapping: IPv6Public is then a host
	// address). The server's IPv6 address comes from Config.Rendezvous
	// (a second address, or a name with an AAAA record). Mapping,
	// Filtering and Public above are those of the family the node
	// registers in: IPv4, unless the node has no IPv4 address.
	IPv6Public    netip.AddrPort
	IPv6Mapping   nat.Mapping
	IPv6Filtering nat.Filtering
}

func (r NATReport) String() string {
	pm := "none"
	switch {
	case r.PortMapping.Valid():
		pm = fmt.Sprintf("%s %v", r.PortMapping.Protocol, r.PortMapping.External)
	case !r.PortMapTried:
		pm = "not tried yet"
	}
	public := r.Public.String()
	if !r.Public.IsValid() {
		public = "unknown"
	}
	v6 := fmt.Sprintf("%d addresses", len(r.IPv6))
	if r.IPv6Public.IsValid() {
		v6 = fmt.Sprintf("public %v, mapping %v, filtering %v", r.IPv6Public, r.IPv6Mapping, r.IPv6Filtering)
	}
	s := fmt.Sprintf("%v (public %s, mapping %v, filtering %v, port mapping %s, IPv6 %s", r.Type, public, r.Mapping, r.Filtering, pm, v6)
	if r.NoNAT {
		s += ", no NAT"
	}
	if r.UDPBlocked {
		s += ", UDP blocked"
	}
	return s + ")"
}

// NATType reports what the node knows of its NAT (NATReport). Without a
// rendezvous server it is NATTypeUnknown with the node's IPv6 addresses.
func (n *Node) NATType() NATReport {
	var r NATReport
	for _, p := range n.prefixes {
		if a := p.Addr(); a.Is6() && !a.Is4In6() && nat.MayBeNATed(a) && n.dualStack() {
			r.IPv6 = append(r.IPv6, a)
		}
	}
	t := n.trav
	if t == nil {
		return r
	}
	t.mu.Lock()
	b, other, tested := t.behaviour, t.otherBehaviour, t.tested
	t.mu.Unlock()
	r.Mapping, r.Filtering, r.Public = b.Mapping, b.Filtering, b.Mapped
	if t.server.Addr().Is6() {
		other = b
	}
	if other.Mapped.Addr().Is6() {
		r.IPv6Public, r.IPv6Mapping, r.IPv6Filtering = other.Mapped, other.Mapping, other.Filtering
	}
	r.NoNAT = b.Mapped.IsValid() && slices.Contains(t.hostCandidates(), b.Mapped)
	r.UDPBlocked = t.udpBlocked()
	if t.pm != nil {
		t.pm.mu.Lock()
		r.PortMapping, r.PortMapTried = t.pm.cur, t.pm.tried
		t.pm.mu.Unlock()
	} else {
		r.PortMapTried = true
	}
	r.Type = natType(r, tested)
	return r
}

// natType sums a report up; tested: the NAT tests are over.
func natType(r NATReport, tested bool) NATType {
	switch {
	case r.PortMapping.Valid():
		return NATTypeOpen
	case r.NoNAT && (r.Filtering == nat.FilteringEndpointIndependent || r.Filtering == nat.FilteringUnknown && tested):
		return NATTypeOpen
	case r.NoNAT && r.Filtering != nat.FilteringUnknown:
		return NATTypeModerate // no NAT, but a stateful firewall
	case r.UDPBlocked:
		return NATTypeStrict
	case !tested:
		return NATTypeUnknown
	case r.Mapping == nat.MappingEndpointDependent:
		return NATTypeStrict
	case r.Mapping != nat.MappingEndpointIndependent:
		return NATTypeUnknown
	case r.Filtering == nat.FilteringEndpointIndependent:
		return NATTypeOpen
	}
	return NATTypeModerate // filtering, or not known (no second server address): assume it
}

// dualStack reports whether the node's socket takes IPv6.
func (n *Node) dualStack() bool {
	a := addrOfConn(n.main.pc).Addr()
	return a.Is6() && !a.Is4In6()
}
