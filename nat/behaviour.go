package nat

import (
	"context"
	"net/netip"
	"time"
)

// Mapping is a NAT's mapping behaviour (RFC 4787 §4.1).
type Mapping uint8

const (
	MappingUnknown Mapping = iota
	// MappingEndpointIndependent: one public address for every destination
	// (full, restricted and port-restricted cone NATs, or no NAT).
	MappingEndpointIndependent
	// MappingEndpointDependent: a public port per destination ("symmetric").
	MappingEndpointDependent
)

func (m Mapping) String() string {
	switch m {
	case MappingEndpointIndependent:
		return "endpoint-independent"
	case MappingEndpointDependent:
		return "endpoint-dependent"
	}
	return "unknown"
}

// Filtering is a NAT's filtering behaviour (RFC 4787 §5).
type Filtering uint8

const (
	FilteringUnknown Filtering = iota
	FilteringEndpointIndependent
	FilteringAddressDependent
	FilteringAddressPortDependent
)

func (f Filtering) String() string {
	switch f {
	case FilteringEndpointIndependent:
		return "endpoint-independent"
	case FilteringAddressDependent:
		return "address-dependent"
	case FilteringAddressPortDependent:
		return "address-and-port-dependent"
	}
	return "unknown"
}

// Behaviour is what discovery learnt of the NAT in front of a socket.
type Behaviour struct {
	Mapped    netip.AddrPort // the public address toward the primary server
	Mapping   Mapping
	Filtering Filtering
}

// Discover runs the tests of RFC 5780 §4 that the servers allow: mapping
// by comparing the public address seen by two server addresses (the
// primary's OTHER-ADDRESS, else the first of extra that answers), filtering
// by asking an RFC 5780 server to answer from another IP and port, then
// another port. With a single plain server only Mapped is known.
func Discover(ctx context.Context, s *STUN, primary netip.AddrPort, extra []netip.AddrPort) (Behaviour, error) {
	var b Behaviour
	first, err := s.Query(ctx, primary, ChangeNone)
	if err != nil {
		return b, err
	}
	b.Mapped = first.Mapped
	second := first.Other
	if !second.IsValid() {
		for _, x := range extra {
			if x != primary {
				second = x
				break
			}
		}
	}
	if second.IsValid() {
		if r, err := s.Query(ctx, second, ChangeNone); err == nil {
			b.Mapping = MappingEndpointIndependent
			if r.Mapped != first.Mapped {
				b.Mapping = MappingEndpointDependent
			}
		}
	}
	if first.Other.IsValid() {
		b.Filtering = filtering(ctx, s, primary)
	}
	return b, nil
}

// filtering asks for answers from elsewhere: one that arrives shows the
// NAT lets that source in. An answer that does not arrive within the
// (short) wait counts as filtered.
func filtering(ctx context.Context, s *STUN, primary netip.AddrPort) Filtering {
	try := func(c Change) bool {
		cctx, cancel := context.WithTimeout(ctx, filterWait)
		defer cancel()
		_, err := s.Query(cctx, primary, c)
		return err == nil
	}
	switch {
	case try(ChangeIP | ChangePort):
		return FilteringEndpointIndependent
	case try(ChangePort):
		return FilteringAddressDependent
	case ctx.Err() != nil:
		return FilteringUnknown
	}
	return FilteringAddressPortDependent
}

// filterWait bounds each filtering test: a filtered answer never comes.
const filterWait = 1500 * time.Millisecond
