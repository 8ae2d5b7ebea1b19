package portmap

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// NAT-PMP (RFC 6886). Layouts in doc.go.
const (
	pmpVersion     = 0
	pmpOpExternal  = 0
	pmpOpMapUDP    = 1
	pmpReply       = 128 // added to the request's opcode in its answer
	pmpExternalLen = 12
	pmpMapLen      = 16
)

// NAT-PMP result codes (RFC 6886 §3.5).
const (
	pmpSuccess       = 0
	pmpUnsuppVersion = 1
	pmpUnsuppOpcode  = 5
)

var pmpResultNames = [...]string{
	"Success", "Unsupported Version", "Not Authorized/Refused", "Network Failure",
	"Out of resources", "Unsupported opcode",
}

func pmpError(code int) *ResultError {
	e := &ResultError{Protocol: NATPMP, Code: code}
	if code < len(pmpResultNames) {
		e.Name = pmpResultNames[code]
	}
	return e
}

func pmpExternalRequest() []byte { return []byte{pmpVersion, pmpOpExternal} }

func pmpMapRequest(internal, suggest uint16, lifetime uint32) []byte {
	b := make([]byte, 12)
	b[0], b[1] = pmpVersion, pmpOpMapUDP
	binary.BigEndian.PutUint16(b[4:6], internal)
	binary.BigEndian.PutUint16(b[6:8], suggest)
	binary.BigEndian.PutUint32(b[8:12], lifetime)
	return b
}

// pmpCommon checks the version and opcode of an answer to op and returns
// its result code. An error result is returned as a *ResultError even in
// a short answer (RFC 6886 §3.5: an "unsupported version" answer has 8
// bytes); anything else that is not the answer is errSkip.
func pmpCommon(b []byte, op byte, want int) error {
	if len(b) < 4 || b[0] != pmpVersion || b[1] != pmpReply+op {
		return errSkip
	}
	if code := int(binary.BigEndian.Uint16(b[2:4])); code != pmpSuccess {
		return pmpError(code)
	}
	if len(b) < want {
		return errSkip
	}
	return nil
}

// parsePMPExternal reads the answer to an external address request.
func parsePMPExternal(b []byte) (netip.Addr, error) {
	if err := pmpCommon(b, pmpOpExternal, pmpExternalLen); err != nil {
		return netip.Addr{}, err
	}
	ip := netip.AddrFrom4([4]byte(b[8:12]))
	if ip.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("%w: NAT-PMP reported 0.0.0.0", ErrNoExternalAddress)
	}
	return ip, nil
}

// pmpMapResult is a successful mapping answer.
type pmpMapResult struct {
	external uint16
	lifetime time.Duration
	epoch    uint32
}

// parsePMPMap reads the answer to a UDP mapping request for internal
// port internal; lifetime is the request's (0 deletes).
func parsePMPMap(b []byte, internal uint16, lifetime uint32) (pmpMapResult, error) {
	if err := pmpCommon(b, pmpOpMapUDP, pmpMapLen); err != nil {
		return pmpMapResult{}, err
	}
	if binary.BigEndian.Uint16(b[8:10]) != internal {
		return pmpMapResult{}, errSkip
	}
	res := pmpMapResult{
		epoch:    binary.BigEndian.Uint32(b[4:8]),
		external: binary.BigEndian.Uint16(b[10:12]),
		lifetime: time.Duration(binary.BigEndian.Uint32(b[12:16])) * time.Second,
	}
	if lifetime == 0 {
		return res, nil
	}
	if res.lifetime == 0 || res.external == 0 {
		return pmpMapResult{}, fmt.Errorf("%w: NAT-PMP success with port %d, lifetime %v", ErrMalformed, res.external, res.lifetime)
	}
	return res, nil
}
