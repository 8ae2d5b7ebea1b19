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
	// their answers to it.
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
func (s *STUN) QueryVia(ctx context.Context, send func(b []byte, to netip.AddrPort) error, server netip.AddrPort, change Change) (STUNResult, error) {
	req, id, err := bindingRequest(change)
	if err != nil {
		return STUNResult{}, err
	}
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
	for range stunTries {
		if err := send(req, server); err != nil {
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

func bindingRequest(change Change) ([]byte, [stun.TransactionIDSize]byte, error) {
	var id [stun.TransactionIDSize]byte
	rand.Read(id[:])
	m := stun.New()
	m.TransactionID = id
	m.Type = stun.BindingRequest
	m.WriteHeader()
	if change != ChangeNone {
		m.Add(stun.AttrChangeRequest, []byte{0, 0, 0, byte(change)})
	}
	if pad := stunPadTo - len(m.Raw) - 4; pad > 0 {
		m.Add(stun.AttrPadding, make([]byte, pad))
	}
	m.WriteLength()
	return m.Raw, id, nil
}

// Handle takes a STUN datagram read from the shared socket; it reports
// whether it answered one of this client's requests.
func (s *STUN) Handle(b []byte, from netip.AddrPort) bool {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil || m.Type != stun.BindingSuccess {
		return false
	}
	s.mu.Lock()
	ch := s.pending[m.TransactionID]
	delete(s.pending, m.TransactionID)
	s.mu.Unlock()
	if ch == nil {
		return false
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil {
		return false
	}
	r := STUNResult{Mapped: addrPort(xa.IP, xa.Port), From: from}
	var other stun.OtherAddress
	if other.GetFrom(m) == nil {
		r.Other = addrPort(other.IP, other.Port)
	}
	ch <- r
	return true
}

func addrPort(ip net.IP, port int) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}
