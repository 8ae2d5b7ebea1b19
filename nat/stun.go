package nat

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v3"
)

// STUN request timing: retransmit after 250 ms, doubling, 4 tries (about
// 3.75 s in all): a server that does not answer that fast is no use for
// connecting games.
const (
	stunRTO   = 250 * time.Millisecond
	stunTries = 4
	// stunPadTo pads requests so an answer with every attribute fits in
	// the request's size: servers that do not amplify (gamewire's) trim
	// their answers to it. Servers that do not know PADDING (RFC 3489
	// ones such as stund, and any RFC 5389 server without RFC 5780) must
	// refuse a request carrying it, as it is comprehension-required; the
	// retransmissions alternate with unpadded copies for them.
	stunPadTo = 96
)

// Change asks an RFC 5780 server to answer from another IP, port, or both.
type Change uint8

const (
	ChangeNone Change = 0
	ChangePort Change = 0x02
	ChangeIP   Change = 0x04
)

// STUNResult is a Binding response.
type STUNResult struct {
	Mapped netip.AddrPort // XOR-MAPPED-ADDRESS: where the server saw the request from
	Other  netip.AddrPort // OTHER-ADDRESS (RFC 5780), if the server has one
	From   netip.AddrPort // where the answer came from
}

// STUN sends Binding requests over a socket shared with other protocols:
// the socket's owner passes it the STUN datagrams it reads (Handle). Safe
// for concurrent use.
type STUN struct {
	send func(b []byte, to netip.AddrPort) error

	mu      sync.Mutex
	pending map[[stun.TransactionIDSize]byte]chan STUNResult
}

// NewSTUN returns a STUN client sending with send.
func NewSTUN(send func(b []byte, to netip.AddrPort) error) *STUN {
	return &STUN{send: send, pending: make(map[[stun.TransactionIDSize]byte]chan STUNResult)}
}

// IsSTUN reports whether b looks like a STUN message (RFC 7983: first byte
// 0–3, then the magic cookie).
func IsSTUN(b []byte) bool { return len(b) >= 20 && b[0] <= 0x03 && stun.IsMessage(b) }

// ErrNoAnswer: a STUN server did not answer.
var ErrNoAnswer = errors.New("nat: no STUN answer")

// Query sends a Binding request to server, retransmitting, and waits for
// the answer or ctx.
func (s *STUN) Query(ctx context.Context, server netip.AddrPort, change Change) (STUNResult, error) {
	return s.QueryVia(ctx, s.send, server, change)
}

// QueryVia is Query sent with send instead: from another socket, whose
// reader also passes its STUN datagrams to Handle.
//
// The first transmission is padded (PADDING, RFC 5780) so a server that
// never answers with more bytes than it got, as gamewire's, has room for
// OTHER-ADDRESS; retransmissions alternate unpadded and padded copies of
// the same transaction, so a server that drops padded requests (RFC 3489
// servers, RFC 5389 ones without RFC 5780) answers the second one, 250 ms
// later. Whichever answer comes first completes the query.
func (s *STUN) QueryVia(ctx context.Context, send func(b []byte, to netip.AddrPort) error, server netip.AddrPort, change Change) (STUNResult, error) {
	return s.query(ctx, send, server, change, true)
}

// query is QueryVia with the choice of the first transmission: padded, or
// plain for a server whose bare answer is all the caller needs (its
// mapped address), so a server that ignores padding answers at once.
func (s *STUN) query(ctx context.Context, send func(b []byte, to netip.AddrPort) error, server netip.AddrPort, change Change, padFirst bool) (STUNResult, error) {
	var id [stun.TransactionIDSize]byte
	rand.Read(id[:])
	reqs := [2][]byte{bindingRequest(id, change, padFirst), bindingRequest(id, change, !padFirst)}
	ch := make(chan STUNResult, 1)
	s.mu.Lock()
	s.pending[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
	}()
	rto := stunRTO
	for i := range stunTries {
		if err := send(reqs[i%2], server); err != nil {
			return STUNResult{}, err
		}
		t := time.NewTimer(rto)
		select {
		case r := <-ch:
			t.Stop()
			return r, nil
		case <-ctx.Done():
			t.Stop()
			return STUNResult{}, ctx.Err()
		case <-t.C:
		}
		rto *= 2
	}
	return STUNResult{}, ErrNoAnswer
}

// bindingRequest builds a Binding request with transaction id, padded to
// stunPadTo when pad is set.
func bindingRequest(id [stun.TransactionIDSize]byte, change Change, pad bool) []byte {
	m := stun.New()
	m.TransactionID = id
	m.Type = stun.BindingRequest
	m.WriteHeader()
	if change != ChangeNone {
		m.Add(stun.AttrChangeRequest, []byte{0, 0, 0, byte(change)})
	}
	if n := stunPadTo - len(m.Raw) - 4; pad && n > 0 {
		m.Add(stun.AttrPadding, make([]byte, n))
	}
	m.WriteLength()
	return m.Raw
}

// Handle takes a STUN datagram read from the shared socket; it reports
// whether it answered one of this client's requests. An answer without a
// usable mapped address leaves the transaction open for a later one.
func (s *STUN) Handle(b []byte, from netip.AddrPort) bool {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil || m.Type != stun.BindingSuccess {
		return false
	}
	r, ok := bindingResult(m, from)
	if !ok {
		return false
	}
	s.mu.Lock()
	ch := s.pending[m.TransactionID]
	delete(s.pending, m.TransactionID)
	s.mu.Unlock()
	if ch == nil {
		return false
	}
	ch <- r
	return true
}

// bindingResult reads a Binding success response. RFC 3489 servers answer
// with MAPPED-ADDRESS and CHANGED-ADDRESS, which RFC 5389 §12.2 asks
// clients to take; XOR-MAPPED-ADDRESS and OTHER-ADDRESS win where both are
// present (stund sends both kinds), since NATs that rewrite addresses in
// payloads (ALGs) leave the XORed one alone.
func bindingResult(m *stun.Message, from netip.AddrPort) (STUNResult, bool) {
	r := STUNResult{From: from}
	var xa stun.XORMappedAddress
	var ma stun.MappedAddress
	switch {
	case xa.GetFrom(m) == nil:
		r.Mapped = addrPort(xa.IP, xa.Port)
	case ma.GetFrom(m) == nil:
		r.Mapped = addrPort(ma.IP, ma.Port)
	}
	if !r.Mapped.IsValid() || r.Mapped.Port() == 0 || r.Mapped.Addr().IsUnspecified() {
		return r, false
	}
	var other stun.OtherAddress
	var changed stun.MappedAddress
	switch {
	case other.GetFrom(m) == nil:
		r.Other = addrPort(other.IP, other.Port)
	case changed.GetFromAs(m, stun.AttrChangedAddress) == nil:
		r.Other = addrPort(changed.IP, changed.Port)
	}
	if !r.Other.IsValid() || r.Other.Port() == 0 || r.Other.Addr().IsUnspecified() {
		r.Other = netip.AddrPort{} // a server with no second address may say 0.0.0.0:0
	}
	return r, true
}

func addrPort(ip net.IP, port int) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}
