// Package secure is gamewire's session cryptography and the wire format of
// its handshake and data packets. It follows WireGuard: a Noise IK
// handshake in one round trip, mac1/mac2 and cookies against denial of
// service, and data packets sealed with ChaCha20-Poly1305 under a 64-bit
// counter with a sliding replay window. It does no I/O and keeps no
// sessions: package p2p owns sockets, timers, index tables and retries and
// calls in here for every byte that is authenticated or encrypted.
//
// # Roles
//
// A Handshaker holds a node's static key (its PeerID is the public half)
// and the responder state every handshake shares. The initiator, who
// already knows the responder's PeerID, calls Initiate and sends Message;
// the responder checks mac1 (and under load mac2 and Allow) in its reader
// goroutine, runs ConsumeInitiation in a worker, and answers with Respond;
// the initiator finishes with ConsumeResponse. Both sides then hold a
// Keypair for data packets. A responder under load answers an initiation
// without a valid mac2 with CookieReply instead; the initiator passes that
// to ConsumeCookieReply and resends Message, which now carries mac2.
//
// # Cryptography
//
// Handshake: Noise_IK_25519_ChaChaPoly_BLAKE2s (github.com/flynn/noise),
// prologue the 10 ASCII bytes "gamewire/1". Message 1 is -> e, es, s, ss
// plus a payload; message 2 is <- e, ee, se plus a payload. The initiator's
// static key travels encrypted in message 1, and the responder learns it as
// IncomingInitiation.Peer. Noise's Split gives two keys: the first seals
// data from initiator to responder, the second the other way.
//
// Data: ChaCha20-Poly1305 under those keys with the packet counter as nonce,
// laid out as flynn/noise's ChaChaPoly lays out its nonces: 4 zero bytes,
// then the counter as 8 bytes little-endian. The associated data is the
// 16-byte data header, so flags, index and counter are authenticated. A
// Keypair seals counters 0, 1, 2, … and stops at RejectAfterMessages
// (2^64 − 2^13 − 1). The receiver accepts each counter below that once, if
// it is within ReplayWindow (8128) of the highest counter accepted; the
// window moves only for packets whose tag verified.
//
// mac1, mac2 and cookies are WireGuard's (whitepaper §5.4.4 and §5.4.7).
// BLAKE2s-256(x) is the unkeyed hash, MAC(k, x) is BLAKE2s-128 keyed with k,
// || is concatenation:
//
//	mac1 key    = BLAKE2s-256("mac1----" || static public key of the message's receiver)
//	mac1        = MAC(mac1 key, message bytes before mac1)
//	mac2        = MAC(cookie, message bytes before mac2), or 16 zero bytes without a cookie
//	cookie      = MAC(secret, source address)
//	cookie key  = BLAKE2s-256("cookie--" || responder's static public key)
//	cookie box  = XChaCha20-Poly1305(cookie key, nonce, cookie, associated data = mac1 of the initiation)
//
// The source address is the IP (4 bytes for IPv4 and IPv4-mapped IPv6,
// else 16; no zone) followed by the port, 2 bytes big-endian. The secret is
// 32 random bytes, replaced when a cookie is handed out and the secret is
// CookieLifetime (2 minutes) old; mac2 is accepted under the current and
// the previous secret while each is less than twice that old, so a cookie
// works for at least CookieLifetime. The initiator attaches mac2 while its
// cookie is younger than CookieLifetime.
//
// mac1 proves the sender knows the receiver's public key, so a node not
// addressed ignores the packet without a DH. mac2 proves the sender
// receives packets at its source address. Neither is secret: anyone who
// knows the public key can compute mac1, so the sender index, which Noise
// does not cover, is protected only against accidents, as in WireGuard.
//
// # Packet types
//
// The first byte of every gamewire packet is its type, within 0x80–0xBF
// (docs/ARCHITECTURE.md, "The first byte"): 0x80 initiation, 0x81 response, 0x82 cookie reply, 0x83
// data. Integers are little-endian. Reserved bytes are zero; a packet with
// a reserved byte set, of another size than its type's, or of another type
// than expected is rejected with ErrMalformed before any cryptography.
//
// # Initiation (0x80), InitiationLen = 176 bytes
//
//	offset size  field
//	     0    1  type = 0x80
//	     1    3  reserved, zero
//	     4    4  sender index: the initiator's index for this session
//	     8   32  Noise e: initiator's ephemeral public key, in clear
//	    40   48  Noise s: initiator's static public key (32) + tag (16)
//	    88   56  Noise payload: InitiationPayloadLen (40) bytes + tag (16)
//	   144   16  mac1, keyed for the responder, over bytes 0..143
//	   160   16  mac2, over bytes 0..159, or zeros
//
// Bytes 8..143 are Noise message 1, built once per Initiation: every
// retransmission is identical except mac2. InitiationID is the first 16
// bytes of BLAKE2s-256 of bytes 8..143.
//
// # Response (0x81), ResponseLen = 108 bytes
//
//	offset size  field
//	     0    1  type = 0x81
//	     1    3  reserved, zero
//	     4    4  sender index: the responder's index for this session
//	     8    4  receiver index: the initiation's sender index
//	    12   32  Noise e: responder's ephemeral public key, in clear
//	    44   32  Noise payload: ResponsePayloadLen (16) bytes + tag (16)
//	    76   16  mac1, keyed for the initiator, over bytes 0..75
//	    92   16  mac2: zero (the initiator never hands out cookies); a response
//	             with any other value is rejected as malformed
//
// Bytes 12..75 are Noise message 2.
//
// # Cookie reply (0x82), CookieReplyLen = 64 bytes
//
//	offset size  field
//	     0    1  type = 0x82
//	     1    3  reserved, zero
//	     4    4  receiver index: the initiation's sender index
//	     8   24  nonce: random, for XChaCha20-Poly1305
//	    32   32  cookie box: the 16-byte cookie sealed (16) + tag (16)
//
// # Data (0x83), DataHeaderLen + n + TagLen = 32 + n bytes
//
//	offset size  field
//	     0    1  type = 0x83
//	     1    1  flags: free for the caller; authenticated
//	     2    2  reserved, zero
//	     4    4  receiver index: the index the receiver chose (its LocalIndex)
//	     8    8  counter: nonce, 0 for the first packet of a Keypair
//	    16    n  ciphertext of the n-byte payload (n may be 0)
//	  16+n   16  Poly1305 tag over bytes 0..15 (associated data) and the ciphertext
//
// # Amplification
//
// Nothing unauthenticated is answered with more bytes than it carried:
// the only packets a responder sends in answer to an initiation are a
// response (108 bytes) or a cookie reply (64 bytes), both shorter than the
// 176-byte initiation. Allow limits handshakes per source address (IPv4,
// or IPv6 /64) to 20 a second with a burst of 5, in a table of bounded size.
//
// # Concurrency
//
// Handshaker and Keypair are safe for concurrent use; Seal and Open do not
// allocate. Initiation and IncomingInitiation belong to one goroutine each.
//
// Locks: a Keypair's replay window is under its own leaf mutex; the
// Handshaker's cookie secret and rate limiters under theirs. Nothing here
// calls out while holding one.
package secure
