package secure

import "errors"

// Errors returned by this package. Match them with errors.Is: handshake
// errors may wrap them with detail, data-path errors are returned bare so
// that rejecting a packet never allocates.
var (
	// ErrMalformed reports a packet of the wrong size or type, or with a
	// reserved byte that is not zero. It also reports a payload of the
	// wrong length handed to Initiate or Respond, and an invalid address.
	ErrMalformed = errors.New("secure: malformed packet")

	// ErrMAC reports a mac1 or mac2 that does not verify, or a cookie reply
	// that does not decrypt.
	ErrMAC = errors.New("secure: bad message authentication code")

	// ErrHandshake reports a Noise failure: the message was not made for our
	// keys (wrong static key, wrong ephemeral) or was tampered with.
	ErrHandshake = errors.New("secure: handshake failed")

	// ErrWrongIndex reports a response, cookie reply or data packet whose
	// receiver index is not the one of the Initiation or Keypair it was
	// handed to.
	ErrWrongIndex = errors.New("secure: receiver index does not match")

	// ErrReplay reports a data packet whose counter was already received,
	// lies below the replay window, or is at or past RejectAfterMessages.
	ErrReplay = errors.New("secure: replayed or expired counter")

	// ErrAuth reports a data packet whose AEAD tag does not verify.
	ErrAuth = errors.New("secure: data packet failed authentication")

	// ErrCounterExhausted reports that a Keypair has sealed
	// RejectAfterMessages packets; a new handshake is needed.
	ErrCounterExhausted = errors.New("secure: send counter exhausted")

	// ErrShortBuffer reports a Seal buffer without room for header, payload
	// and tag.
	ErrShortBuffer = errors.New("secure: buffer too small")

	// ErrDone reports an Initiation used after it completed, or Respond
	// called a second time.
	ErrDone = errors.New("secure: handshake already completed")
)
