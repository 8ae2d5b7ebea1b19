package p2p

import (
	"encoding/binary"
	"errors"

	"golang.org/x/crypto/blake2s"
)

// protocolVersion is carried by every handshake; a node refuses another
// version with SessionErrorNotRunningApp, as it does another AppID.
const protocolVersion = 1

// Payload sizes: they must match internal/secure's InitiationPayloadLen and
// ResponsePayloadLen (checked by a test).
const (
	initPayloadLen = 40
	respPayloadLen = 16
)

// initPayload is the plaintext the initiator sends in Noise message 1:
//
//	0  version   u8   protocolVersion
//	1  flags     u8   0 (reserved)
//	2  reserved  2    zero
//	4  app       16   BLAKE2s-256(AppID), first 16 bytes
//	20 timestamp u64  little endian, unix ns, strictly increasing per node;
//	                  a responder ignores initiations not newer than the
//	                  last it accepted from that peer (replays)
//	28 epoch     u64  little endian, random per session attempt: a new
//	                  epoch means the initiator restarted its session
//	36 reserved  4    zero
type initPayload struct {
	version   uint8
	app       [16]byte
	timestamp uint64
	epoch     uint64
}

func (p initPayload) encode() []byte {
	b := make([]byte, initPayloadLen)
	b[0] = p.version
	copy(b[4:20], p.app[:])
	binary.LittleEndian.PutUint64(b[20:], p.timestamp)
	binary.LittleEndian.PutUint64(b[28:], p.epoch)
	return b
}

var errBadPayload = errors.New("p2p: malformed handshake payload")

// decodeInitPayload reads the fields a node of any version can read: the
// version first, so a newer layout is refused as NotRunningApp rather than
// misread.
func decodeInitPayload(b []byte) (initPayload, error) {
	var p initPayload
	if len(b) != initPayloadLen {
		return p, errBadPayload
	}
	p.version = b[0]
	copy(p.app[:], b[4:20])
	p.timestamp = binary.LittleEndian.Uint64(b[20:])
	p.epoch = binary.LittleEndian.Uint64(b[28:])
	return p, nil
}

// Response status values.
const (
	statusOK            = 0
	statusNotRunningApp = 1 // version or AppID differ
	statusRefused       = 2 // the responder will not take the session now
)

// Response flags.
const respAccepted = 1 // the responder already accepts the initiator

// respPayload is the plaintext of Noise message 2:
//
//	0 status   u8  statusOK, statusNotRunningApp or statusRefused
//	1 flags    u8  respAccepted
//	2 reserved 6   zero
//	8 epoch    u64 little endian, the responder's session epoch
type respPayload struct {
	status uint8
	flags  uint8
	epoch  uint64
}

func (p respPayload) encode() []byte {
	b := make([]byte, respPayloadLen)
	b[0], b[1] = p.status, p.flags
	binary.LittleEndian.PutUint64(b[8:], p.epoch)
	return b
}

func decodeRespPayload(b []byte) (respPayload, error) {
	var p respPayload
	if len(b) != respPayloadLen || b[0] > statusRefused {
		return p, errBadPayload
	}
	p.status, p.flags = b[0], b[1]
	p.epoch = binary.LittleEndian.Uint64(b[8:])
	return p, nil
}

// appHash names an AppID in handshakes without sending it in the clear or
// letting its length vary.
func appHash(appID string) [16]byte {
	sum := blake2s.Sum256([]byte(appID))
	var h [16]byte
	copy(h[:], sum[:16])
	return h
}

// Flags in the header of data packets (authenticated as associated data).
// Each packet says where the sender stands on the session, so acceptance,
// refusal and closing need no reliable control messages of their own: they
// ride on every packet, acknowledgements and keepalives included. A packet
// with empty plaintext carries only these flags.
const (
	flagAccepted = 1 << iota // the sender accepts the session
	flagRefused              // the sender refuses it (NoRightsToApp)
	flagClosing              // the sender closed it
)
