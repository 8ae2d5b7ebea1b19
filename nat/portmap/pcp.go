package portmap

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// PCP (RFC 6887). Layouts in doc.go.
const (
	pcpVersion    = 2
	pcpPort       = 5351
	pcpOpAnnounce = 0
	pcpOpMap      = 1
	pcpReply      = 0x80 // the R bit of the opcode byte
	pcpHeaderLen  = 24
	pcpMapLen     = pcpHeaderLen + 36
	pcpMaxLen     = 1100 // RFC 6887 §7: messages are at most 1100 bytes
	ipProtoUDP    = 17
)

// PCP result codes (RFC 6887 §7.4).
const (
	pcpSuccess       = 0
	pcpUnsuppVersion = 1
	pcpUnsuppOpcode  = 4
)

var pcpResultNames = [...]string{
	"SUCCESS", "UNSUPP_VERSION", "NOT_AUTHORIZED", "MALFORMED_REQUEST", "UNSUPP_OPCODE",
	"UNSUPP_OPTION", "MALFORMED_OPTION", "NETWORK_FAILURE", "NO_RESOURCES", "UNSUPP_PROTOCOL",
	"USER_EX_QUOTA", "CANNOT_PROVIDE_EXTERNAL", "ADDRESS_MISMATCH", "EXCESSIVE_REMOTE_PEERS",
}

func pcpError(code int) *ResultError {
	e := &ResultError{Protocol: PCP, Code: code}
	if code < len(pcpResultNames) {
		e.Name = pcpResultNames[code]
	}
	return e
}

// pcpMapRequest is one MAP request's fields.
type pcpMapRequest struct {
	client   netip.Addr // the PCP client's (our) address: the request's source
	nonce    [12]byte
	internal uint16 // the local port to map
	suggest  netip.AddrPort
	lifetime uint32 // seconds; 0 deletes
}

// putAddr16 writes a as 16 bytes: IPv4 as an IPv4-mapped IPv6 address,
// and an invalid address as the IPv4 all-zeros address ::ffff:0.0.0.0
// (RFC 6887 §11.1: "no preference").
func putAddr16(b []byte, a netip.Addr) {
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	x := a.As16()
	copy(b, x[:])
}

func pcpHeader(b []byte, op byte, lifetime uint32, client netip.Addr) {
	b[0] = pcpVersion
	b[1] = op
	binary.BigEndian.PutUint32(b[4:8], lifetime)
	putAddr16(b[8:24], client)
}

func (r *pcpMapRequest) marshal() []byte {
	b := make([]byte, pcpMapLen)
	pcpHeader(b, pcpOpMap, r.lifetime, r.client)
	m := b[pcpHeaderLen:]
	copy(m[0:12], r.nonce[:])
	m[12] = ipProtoUDP
	binary.BigEndian.PutUint16(m[16:18], r.internal)
	binary.BigEndian.PutUint16(m[18:20], r.suggest.Port())
	putAddr16(m[20:36], r.suggest.Addr())
	return b
}

func pcpAnnounceRequest(client netip.Addr) []byte {
	b := make([]byte, pcpHeaderLen)
	pcpHeader(b, pcpOpAnnounce, 0, client)
	return b
}

// pcpMapResult is a successful MAP answer.
type pcpMapResult struct {
	external netip.AddrPort
	lifetime time.Duration
	epoch    uint32
}

// pcpCommon checks what every PCP answer to opcode op must have. It
// returns errSkip for datagrams that are not such an answer, and
// ErrUnsupported for a NAT-PMP server's "unsupported version" answer
// (RFC 6887 §9: a NAT-PMP-only gateway answers a PCP request so).
func pcpCommon(b []byte, op byte) error {
	if len(b) >= 4 && b[0] == 0 {
		if b[1] >= pmpReply && binary.BigEndian.Uint16(b[2:4]) == pmpUnsuppVersion {
			return fmt.Errorf("%w: the gateway speaks NAT-PMP only", ErrUnsupported)
		}
		return errSkip
	}
	if len(b) < pcpHeaderLen || len(b) > pcpMaxLen || len(b)%4 != 0 {
		return errSkip
	}
	if b[0] != pcpVersion {
		if b[3] == pcpUnsuppVersion && b[1] == pcpReply|op {
			return fmt.Errorf("%w: the gateway speaks PCP version %d", ErrUnsupported, b[0])
		}
		return errSkip
	}
	if b[1] != pcpReply|op {
		return errSkip
	}
	return nil
}

// parsePCPMap reads an answer to req. Answers that are not for req (other
// nonce, protocol or port, a request echoed back, too short, bad length)
// return errSkip; an error result returns a *ResultError.
func parsePCPMap(b []byte, req *pcpMapRequest) (pcpMapResult, error) {
	if err := pcpCommon(b, pcpOpMap); err != nil {
		return pcpMapResult{}, err
	}
	code := int(b[3])
	if len(b) < pcpMapLen {
		if code != pcpSuccess {
			// An error answer to a request the server could not parse
			// carries the header only.
			return pcpMapResult{}, pcpError(code)
		}
		return pcpMapResult{}, errSkip
	}
	m := b[pcpHeaderLen:]
	if [12]byte(m[0:12]) != req.nonce || m[12] != ipProtoUDP || binary.BigEndian.Uint16(m[16:18]) != req.internal {
		return pcpMapResult{}, errSkip
	}
	if code != pcpSuccess {
		return pcpMapResult{}, pcpError(code)
	}
	res := pcpMapResult{
		lifetime: time.Duration(binary.BigEndian.Uint32(b[4:8])) * time.Second,
		epoch:    binary.BigEndian.Uint32(b[8:12]),
	}
	ip := netip.AddrFrom16([16]byte(m[20:36])).Unmap()
	res.external = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(m[18:20]))
	if req.lifetime == 0 {
		return res, nil // a deletion: the other fields say nothing
	}
	if res.lifetime == 0 {
		return pcpMapResult{}, fmt.Errorf("%w: PCP success with lifetime 0", ErrMalformed)
	}
	if !ip.Is4() || ip.IsUnspecified() || res.external.Port() == 0 {
		return pcpMapResult{}, fmt.Errorf("%w: PCP assigned %v", ErrNoExternalAddress, res.external)
	}
	return res, nil
}

// parsePCPAnnounce reads an answer to ANNOUNCE: any PCP version 2 answer
// says a PCP server is there.
func parsePCPAnnounce(b []byte) error {
	if err := pcpCommon(b, pcpOpAnnounce); err != nil {
		return err
	}
	if b[3] == pcpUnsuppOpcode || b[3] == pcpSuccess {
		return nil // the server exists; some refuse client ANNOUNCEs
	}
	return pcpError(int(b[3]))
}
