package secure

import (
	"encoding/binary"

	"golang.org/x/crypto/blake2s"
)

// Packet types: the first byte of every gamewire packet. The range
// 0x80–0xBF is gamewire's, apart from STUN and TURN ChannelData
// (docs/ARCHITECTURE.md, "The first byte").
const (
	TypeInitiation  byte = 0x80
	TypeResponse    byte = 0x81
	TypeCookieReply byte = 0x82
	TypeData        byte = 0x83
)

// Payload and framing sizes.
const (
	InitiationPayloadLen = 40 // plaintext payload of an initiation, opaque here
	ResponsePayloadLen   = 16 // plaintext payload of a response, opaque here
	DataHeaderLen        = 16 // bytes before the ciphertext in a data packet
	TagLen               = 16 // Poly1305 tag after the ciphertext
)

const (
	keyLen     = 32 // X25519 keys, BLAKE2s-256 outputs, ChaCha20 keys
	macLen     = 16 // BLAKE2s-128 mac1, mac2 and cookies
	nonceXLen  = 24 // XChaCha20-Poly1305 nonce of a cookie reply
	noiseTag   = 16 // ChaCha20-Poly1305 tag inside Noise messages
	headerLen  = 4  // type byte and three reserved (or flags) bytes
	indexLen   = 4
	cookieLen  = macLen
	counterLen = 8
)

// Noise IK message sizes: message 1 is e, s (encrypted) and the encrypted
// payload; message 2 is e and the encrypted payload.
const (
	noiseMsg1Len = keyLen + (keyLen + noiseTag) + (InitiationPayloadLen + noiseTag) // 136
	noiseMsg2Len = keyLen + (ResponsePayloadLen + noiseTag)                         // 64
)

// Byte offsets within an initiation.
const (
	initSenderOff = headerLen                   // 4
	initNoiseOff  = initSenderOff + indexLen    // 8
	initMAC1Off   = initNoiseOff + noiseMsg1Len // 144
	initMAC2Off   = initMAC1Off + macLen        // 160
	InitiationLen = initMAC2Off + macLen        // 176: size of an initiation
)

// Byte offsets within a response.
const (
	respSenderOff   = headerLen                   // 4
	respReceiverOff = respSenderOff + indexLen    // 8
	respNoiseOff    = respReceiverOff + indexLen  // 12
	respMAC1Off     = respNoiseOff + noiseMsg2Len // 76
	respMAC2Off     = respMAC1Off + macLen        // 92
	ResponseLen     = respMAC2Off + macLen        // 108: size of a response
)

// Byte offsets within a cookie reply.
const (
	cookieReceiverOff = headerLen                         // 4
	cookieNonceOff    = cookieReceiverOff + indexLen      // 8
	cookieBoxOff      = cookieNonceOff + nonceXLen        // 32
	cookieReplyLen    = cookieBoxOff + cookieLen + TagLen // 64: size of a cookie reply
)

// Byte offsets within a data packet header.
const (
	dataFlagsOff    = 1
	dataReceiverOff = headerLen                  // 4
	dataCounterOff  = dataReceiverOff + indexLen // 8
	dataMinLen      = DataHeaderLen + TagLen     // 32: empty payload
)

// handshakeHeaderOK reports whether pkt has exactly the size n, the type t
// and three zero reserved bytes. Every handshake parser starts here, so no
// later offset can run off the end.
func handshakeHeaderOK(pkt []byte, t byte, n int) bool {
	return len(pkt) == n && pkt[0] == t && pkt[1] == 0 && pkt[2] == 0 && pkt[3] == 0
}

// dataHeaderOK reports whether pkt is long enough to be a data packet and
// has the data type and zero reserved bytes. The flags byte is free.
func dataHeaderOK(pkt []byte) bool {
	return len(pkt) >= dataMinLen && pkt[0] == TypeData && pkt[2] == 0 && pkt[3] == 0
}

func putIndex(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }
func getIndex(b []byte) uint32    { return binary.LittleEndian.Uint32(b) }

// DataReceiverIndex returns the receiver index of a data packet so the
// caller can find its Keypair before Open. It is false if pkt is too short
// to be a data packet, has another type, or has reserved bits set.
func DataReceiverIndex(pkt []byte) (uint32, bool) {
	if !dataHeaderOK(pkt) {
		return 0, false
	}
	return getIndex(pkt[dataReceiverOff:]), true
}

// ResponseReceiverIndex returns the receiver index of a response (the
// sender index of the Initiation it answers), to route it to that
// Initiation. It is false if pkt is not shaped like a response.
func ResponseReceiverIndex(pkt []byte) (uint32, bool) {
	if !handshakeHeaderOK(pkt, TypeResponse, ResponseLen) {
		return 0, false
	}
	return getIndex(pkt[respReceiverOff:]), true
}

// CookieReplyReceiverIndex returns the receiver index of a cookie reply
// (the sender index of the Initiation it answers). It is false if pkt is not
// shaped like a cookie reply.
func CookieReplyReceiverIndex(pkt []byte) (uint32, bool) {
	if !handshakeHeaderOK(pkt, TypeCookieReply, cookieReplyLen) {
		return 0, false
	}
	return getIndex(pkt[cookieReceiverOff:]), true
}

// InitiationSenderIndex returns the sender index of an initiation. It is
// false if pkt is not shaped like an initiation. The index is protected by
// mac1 only, which anyone who knows the responder's public key can compute.
func initiationSenderIndex(pkt []byte) (uint32, bool) {
	if !handshakeHeaderOK(pkt, TypeInitiation, InitiationLen) {
		return 0, false
	}
	return getIndex(pkt[initSenderOff:]), true
}

// InitiationID identifies the Noise part of an initiation: the first 16
// bytes of BLAKE2s-256 over bytes 8..144 (the Noise message 1). Every
// retransmission of one Initiation has the same ID, whatever its mac2, so
// the responder can answer it with its cached response instead of new keys.
// The ephemeral key inside makes IDs of different attempts differ. It
// returns the zero ID if pkt is not shaped like an initiation; call it after
// CheckMAC1.
func InitiationID(pkt []byte) [16]byte {
	var id [16]byte
	if !handshakeHeaderOK(pkt, TypeInitiation, InitiationLen) {
		return id
	}
	sum := blake2s.Sum256(pkt[initNoiseOff:initMAC1Off])
	copy(id[:], sum[:])
	return id
}
