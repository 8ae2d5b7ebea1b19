package nat

import (
	"net"
	"net/netip"
	"slices"
)

// Kind is where a candidate address comes from.
type Kind uint8

const (
	KindHost       Kind = iota // an address of one of the node's interfaces
	KindPeerRefl               // seen as the source of a peer's probe
	KindServerRefl             // seen by a STUN or rendezvous server
)

func (k Kind) String() string {
	switch k {
	case KindHost:
		return "host"
	case KindPeerRefl:
		return "peer-reflexive"
	case KindServerRefl:
		return "server-reflexive"
	}
	return "unknown"
}

// Candidate is an address a peer may be reachable at.
type Candidate struct {
	Addr netip.AddrPort
	Kind Kind
}

// Priority orders candidates as ICE's type preferences do (host 126,
// peer-reflexive 110, server-reflexive 100), and among host candidates puts
// those on one of our own subnets first: a peer on the same LAN is best
// reached there. Higher is better.
func Priority(c Candidate, local []netip.Prefix) int {
	p := 0
	switch c.Kind {
	case KindHost:
		p = 126 << 8
		if onSubnet(c.Addr.Addr(), local) {
			p += 200
		} else if c.Addr.Addr().IsPrivate() {
			p += 100
		}
		if c.Addr.Addr().IsLoopback() {
			p -= 50 // only good for peers on this machine
		}
	case KindPeerRefl:
		p = 110 << 8
	case KindServerRefl:
		p = 100 << 8
	}
	if c.Addr.Addr().Is4() {
		p += 10 // IPv4 paths through NATs are the ones punching is built for
	}
	return p
}

func onSubnet(a netip.Addr, local []netip.Prefix) bool {
	for _, p := range local {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Sort orders cs best first by Priority, dropping duplicates and invalid
// addresses.
func Sort(cs []Candidate, local []netip.Prefix) []Candidate {
	seen := map[netip.AddrPort]bool{}
	var out []Candidate
	for _, c := range cs {
		if !c.Addr.IsValid() || c.Addr.Port() == 0 || seen[c.Addr] {
			continue
		}
		seen[c.Addr] = true
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b Candidate) int { return Priority(b, local) - Priority(a, local) })
	return out
}

// Interfaces lists the node's interface addresses.
type Interfaces func() ([]netip.Prefix, error)

// SystemInterfaces is Interfaces for the real system.
func SystemInterfaces() ([]netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()))
		}
	}
	return out, nil
}

// HostCandidates returns the addresses of the interfaces (up to max) at
// port, as host candidates: global unicast and private ones, IPv4 first,
// no link-local (they need zones peers cannot use) and loopback only if
// nothing else exists (peers on this machine).
func HostCandidates(ifs []netip.Prefix, port uint16, max int) []netip.AddrPort {
	var out, loop []netip.AddrPort
	for _, p := range ifs {
		a := p.Addr()
		switch {
		case a.IsLoopback():
			loop = append(loop, netip.AddrPortFrom(a, port))
		case a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified():
		default:
			out = append(out, netip.AddrPortFrom(a, port))
		}
	}
	slices.SortStableFunc(out, func(x, y netip.AddrPort) int {
		if x.Addr().Is4() == y.Addr().Is4() {
			return 0
		}
		if x.Addr().Is4() {
			return -1
		}
		return 1
	})
	if len(out) == 0 {
		out = loop
	}
	return out[:min(len(out), max)]
}
