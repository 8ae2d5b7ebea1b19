package nat

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Mapping is a NAT's mapping behaviour (RFC 4787 §4.1): unknown,
// endpoint-independent (one public address for every destination: full,
// restricted and port-restricted cone NATs, or no NAT) or
// endpoint-dependent (a public port per destination: "symmetric"). Package
// rendezvous puts it on the wire as it is (rendezvous.Mapping is this
// type), so what discovery learns is what peers are told, without
// conversion; its values are the wire's.
type Mapping uint8

const (
	MappingUnknown             Mapping = 0
	MappingEndpointIndependent Mapping = 1 // the same public address for every destination
	MappingEndpointDependent   Mapping = 2 // a new public port per destination ("symmetric")
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
	// Alternate is the primary server's OTHER-ADDRESS (RFC 5780), if it
	// has one: DiscoverFiltering can then run.
	Alternate netip.AddrPort
}

// Discover learns the socket's public address and its NAT's mapping
// behaviour (RFC 5780 §4.3): it compares the public address seen by two
// server addresses, the primary's and its OTHER-ADDRESS when it has one
// that answers, else the first of extra to answer. With a single plain
// server only Mapped is known.
//
// Every server is asked at once, so a dead one costs no waiting while
// others answer; Discover returns as soon as it can decide, and stops the
// other queries. If the primary does not answer, the error says so and
// Mapping is still what two extra servers showed, if two answered.
//
// Filtering is left to DiscoverFiltering, on another socket: once this
// socket has sent to the server's other address, the NAT lets that address
// in, and the filtering tests would pass whatever the NAT does.
func Discover(ctx context.Context, s *STUN, primary netip.AddrPort, extra []netip.AddrPort) (Behaviour, error) {
	ctx, cancel := context.WithCancel(ctx)
	type answer struct {
		server netip.AddrPort
		r      STUNResult
		err    error
	}
	// Room for every query Discover may start (the primary, each extra,
	// the primary's other address), so none blocks once it is not read.
	results := make(chan answer, len(extra)+2)
	var wg sync.WaitGroup
	defer func() {
		cancel() // ends the queries still running
		wg.Wait()
	}()
	asked := make(map[netip.AddrPort]bool)
	pending := 0
	ask := func(server netip.AddrPort, padFirst bool) {
		if !server.IsValid() || asked[server] {
			return
		}
		asked[server] = true
		pending++
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.query(ctx, s.send, server, ChangeNone, padFirst)
			results <- answer{server, r, err}
		}()
	}
	// Only the primary's answer needs OTHER-ADDRESS, hence room for it:
	// the others are asked plainly first, as any server answers that.
	ask(primary, true)
	for _, x := range extra {
		ask(x, false)
	}

	var b Behaviour
	var primaryErr error
	primaryDone := false
	got := make(map[netip.AddrPort]answer)
	var answered []netip.AddrPort // servers that answered, the primary first
	decide := func(x, y netip.AddrPort) {
		b.Mapping = MappingEndpointIndependent
		if got[x].r.Mapped != got[y].r.Mapped {
			b.Mapping = MappingEndpointDependent
		}
	}
	for pending > 0 {
		a := <-results
		pending--
		got[a.server] = a
		if a.err == nil {
			answered = append(answered, a.server)
		}
		if a.server == primary {
			primaryDone, primaryErr = true, a.err
			if a.err == nil {
				b.Mapped, b.Alternate = a.r.Mapped, a.r.Other
				answered = append([]netip.AddrPort{primary}, answered[:len(answered)-1]...)
				ask(a.r.Other, false)
			}
		}
		if !primaryDone {
			continue
		}
		// RFC 5780's own pair: the primary and its other address.
		if o := b.Alternate; primaryErr == nil && o.IsValid() && o != primary {
			oa, ok := got[o]
			if !ok {
				continue // still waiting for it
			}
			if oa.err == nil {
				decide(primary, o)
				return b, nil
			}
		}
		// Else any two servers that answered: the primary, if it did, and
		// whichever other answered first.
		if len(answered) >= 2 {
			decide(answered[0], answered[1])
			return b, primaryErr
		}
	}
	return b, primaryErr
}

// DiscoverFiltering runs RFC 5780's filtering tests (§4.4) against an
// RFC 5780 server over pc: it asks the primary address to answer from the
// other IP and port, and from the other port, both at once, and waits
// filterWait for each answer. pc must be a socket of its own that has never
// sent to the server's other addresses (the NAT in front of it is assumed
// to filter as it does for every socket); DiscoverFiltering reads it until
// it returns, and the caller closes it.
func DiscoverFiltering(ctx context.Context, pc net.PacketConn, primary netip.AddrPort) Filtering {
	s := NewSTUN(func(b []byte, to netip.AddrPort) error {
		_, err := pc.WriteTo(b, net.UDPAddrFromAddrPort(to))
		return err
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		readSTUN(pc, s)
	}()
	defer func() {
		pc.SetReadDeadline(time.Now()) // ends readSTUN
		<-done
	}()

	if _, err := s.Query(ctx, primary, ChangeNone); err != nil {
		return FilteringUnknown // no answer even from the address we sent to
	}
	var anyIP, anyPort bool
	var wg sync.WaitGroup
	try := func(c Change, ok *bool) {
		defer wg.Done()
		cctx, cancel := context.WithTimeout(ctx, filterWait)
		defer cancel()
		_, err := s.Query(cctx, primary, c)
		*ok = err == nil
	}
	wg.Add(2)
	go try(ChangeIP|ChangePort, &anyIP)
	go try(ChangePort, &anyPort)
	wg.Wait()
	switch {
	case anyIP:
		return FilteringEndpointIndependent
	case anyPort:
		return FilteringAddressDependent
	case ctx.Err() != nil:
		return FilteringUnknown
	}
	return FilteringAddressPortDependent
}

// readSTUN passes pc's STUN datagrams to s until reading fails.
func readSTUN(pc net.PacketConn, s *STUN) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		ap, err := netip.ParseAddrPort(from.String())
		if err != nil || !IsSTUN(buf[:n]) {
			continue
		}
		s.Handle(buf[:n], netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
}

// filterWait bounds each filtering test: a filtered answer never comes.
const filterWait = 1500 * time.Millisecond
