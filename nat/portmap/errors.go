package portmap

import (
	"errors"
	"fmt"
)

// Errors of Map, Probe and Close. Match them with errors.Is; Map joins the
// errors of every protocol it tried, each prefixed with the protocol's
// name.
var (
	// ErrClosed: the Client is closed.
	ErrClosed = errors.New("portmap: client closed")

	// ErrNoGateway: no gateway was configured and none could be found
	// (no IPv4 default route, or an OS without default-route discovery:
	// set Config.Gateway there).
	ErrNoGateway = errors.New("portmap: no gateway")

	// ErrNoResponse: the gateway did not answer the protocol within the
	// retransmission schedule, or refused it (ICMP port unreachable).
	ErrNoResponse = errors.New("portmap: no response from the gateway")

	// ErrUnsupported: the gateway answered but does not speak the
	// protocol (a NAT-PMP-only server answering PCP, an unsupported
	// version or opcode, an IGD without a WANIPConnection or
	// WANPPPConnection service).
	ErrUnsupported = errors.New("portmap: protocol not supported by the gateway")

	// ErrMalformed: an answer that is ours (matching nonce, opcode and
	// port) but cannot be used, or a UPnP document or SOAP answer that
	// does not parse. Stray and malformed datagrams are not errors: they
	// are dropped and counted (Stats.Dropped).
	ErrMalformed = errors.New("portmap: malformed answer")

	// ErrUntrustedURL: a UPnP location, URLBase or control URL that is not
	// plain HTTP to the gateway's own private or link-local address, or a
	// gateway address that is not private or link-local. Nothing is
	// fetched from such a URL.
	ErrUntrustedURL = errors.New("portmap: UPnP URL not on the gateway's LAN address")

	// ErrTooLarge: a UPnP HTTP answer longer than the client reads.
	ErrTooLarge = errors.New("portmap: UPnP answer too large")

	// ErrNoExternalAddress: the gateway reported no usable external
	// address (none, unspecified, or not IPv4).
	ErrNoExternalAddress = errors.New("portmap: the gateway has no external address")
)

// ResultError is an error code the gateway answered with: a PCP or
// NAT-PMP result code or a UPnP error code from a SOAP fault.
type ResultError struct {
	Protocol Protocol
	Code     int
	Name     string // the code's name in its specification, or ""
}

func (e *ResultError) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("portmap: %s: gateway answered with error %d", e.Protocol, e.Code)
	}
	return fmt.Sprintf("portmap: %s: gateway answered with error %d (%s)", e.Protocol, e.Code, e.Name)
}

// Is makes the codes that mean "this protocol is not spoken here" match
// ErrUnsupported.
func (e *ResultError) Is(target error) bool {
	if target != ErrUnsupported {
		return false
	}
	switch e.Protocol {
	case PCP:
		return e.Code == pcpUnsuppVersion || e.Code == pcpUnsuppOpcode
	case NATPMP:
		return e.Code == pmpUnsuppVersion || e.Code == pmpUnsuppOpcode
	case UPnP:
		return e.Code == 401 || e.Code == 602 // invalid action, optional action not implemented
	}
	return false
}

// errSkip marks a datagram that is not the answer awaited: it is dropped
// and counted, and the wait goes on.
var errSkip = errors.New("portmap: not the awaited answer")
