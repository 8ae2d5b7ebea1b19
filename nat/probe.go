package nat

import (
	"crypto/subtle"
	"encoding/binary"
	"net/netip"

	"golang.org/x/crypto/blake2s"
)

// Probes are gamewire's connectivity checks: a probe asks the peer to
// answer, the ack says the path works both ways and where the probe came
// from. Both carry a MAC under a key only the two peers can compute, so a
// third party can neither fake a working path nor steer a session to its own
// address.
//
//	0  type: 0x90 probe, 0x91 ack
//	1  reserved (3), zero
//	4  sender PeerID (32)
//	36 transaction ID (12): an ack echoes its probe's
//	48 observed address (18): an ack's is where the probe came from (16-byte
//	   IPv6 or IPv4-mapped address, 2-byte port); a probe's is zero
//	66 flags (1): reserved, zero
//	67 reserved (1)
//	68 MAC (16): BLAKE2s-128 keyed with the probe key, over bytes 0–67
//
// Probes and acks are the same size, so an ack never amplifies.
const (
	TypeProbe    byte = 0x90
	TypeProbeAck byte = 0x91
	ProbeLen          = 84
	probeMACAt        = 68
)

// ProbeKey authenticates probes between two peers.
type ProbeKey [32]byte

// NewProbeKey derives the key from X25519 between the two peers' identities
// (dh, computed by either side with its private key and the other's public
// key) and their PeerIDs.
func NewProbeKey(dh []byte, a, b [32]byte) ProbeKey {
	if string(a[:]) > string(b[:]) {
		a, b = b, a
	}
	h, _ := blake2s.New256(nil)
	h.Write([]byte("gamewire probe v1"))
	h.Write(dh)
	h.Write(a[:])
	h.Write(b[:])
	var k ProbeKey
	h.Sum(k[:0])
	return k
}

// Probe is a decoded probe or ack.
type Probe struct {
	Ack      bool
	Sender   [32]byte
	TxID     [12]byte
	Observed netip.AddrPort
}

// IsProbe reports whether b's first byte is a probe type.
func IsProbe(b []byte) bool { return len(b) > 0 && (b[0] == TypeProbe || b[0] == TypeProbeAck) }

// Append appends p sealed with k.
func (p *Probe) Append(b []byte, k *ProbeKey) []byte {
	start := len(b)
	b = append(b, make([]byte, ProbeLen)...)
	m := b[start:]
	m[0] = TypeProbe
	if p.Ack {
		m[0] = TypeProbeAck
	}
	copy(m[4:], p.Sender[:])
	copy(m[36:], p.TxID[:])
	if p.Observed.IsValid() {
		ip := p.Observed.Addr().As16()
		copy(m[48:], ip[:])
		binary.BigEndian.PutUint16(m[64:], p.Observed.Port())
	}
	mac := probeMAC(k, m[:probeMACAt])
	copy(m[probeMACAt:], mac[:])
	return b
}

func probeMAC(k *ProbeKey, b []byte) [16]byte {
	h, _ := blake2s.New128(k[:])
	h.Write(b)
	var m [16]byte
	h.Sum(m[:0])
	return m
}

// ParseProbe decodes a probe's fields without checking its MAC: the
// sender tells which key to check it with (VerifyProbe).
func ParseProbe(b []byte) (Probe, bool) {
	var p Probe
	if len(b) != ProbeLen || !IsProbe(b) || b[1]|b[2]|b[3]|b[66]|b[67] != 0 {
		return p, false
	}
	p.Ack = b[0] == TypeProbeAck
	copy(p.Sender[:], b[4:])
	copy(p.TxID[:], b[36:])
	var ip [16]byte
	copy(ip[:], b[48:64])
	if port := binary.BigEndian.Uint16(b[64:]); port != 0 {
		p.Observed = netip.AddrPortFrom(netip.AddrFrom16(ip).Unmap(), port)
	}
	return p, true
}

// VerifyProbe checks b's MAC with k.
func VerifyProbe(b []byte, k *ProbeKey) bool {
	if len(b) != ProbeLen {
		return false
	}
	m := probeMAC(k, b[:probeMACAt])
	return subtle.ConstantTimeCompare(m[:], b[probeMACAt:]) == 1
}
