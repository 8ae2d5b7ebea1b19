package secure

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
)

// prologue is mixed into every handshake hash: a message made for another
// protocol or version fails Noise on both sides.
const prologue = "gamewire/1"

// A Handshaker holds a node's static key and the responder-side state that
// all handshakes share: the mac1 key, the rotating cookie secret and the
// per-source rate limiter. It is safe for concurrent use: the keys are
// immutable, and the cookie jar and limiter lock themselves.
type Handshaker struct {
	static  PrivateKey
	public  PublicKey
	suite   noise.CipherSuite
	mac1Key [keyLen]byte // mac1 of messages addressed to us (initiations, responses)
	cookieK [keyLen]byte // seals the cookie replies we send

	// now and random are time.Now and crypto/rand unless a test replaces
	// them before first use.
	now    func() time.Time
	random io.Reader

	cookies cookieJar
	limiter *RateLimiter
	nonces  *sync.Pool // nonce scratch for the data path of our Keypairs
}

// NewHandshaker returns a Handshaker for the static key.
func NewHandshaker(static PrivateKey) *Handshaker {
	pub := static.Public()
	return &Handshaker{
		static:  static,
		public:  pub,
		suite:   noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s),
		mac1Key: mac1Key(pub),
		cookieK: cookieKey(pub),
		now:     time.Now,
		limiter: newRateLimiter(),
		nonces:  newNoncePool(),
	}
}

// PublicKey returns the public key of the Handshaker's static key.
func (h *Handshaker) PublicKey() PublicKey { return h.public }

func (h *Handshaker) rand() io.Reader {
	if h.random != nil {
		return h.random
	}
	return rand.Reader
}

func (h *Handshaker) fill(b []byte) error {
	_, err := io.ReadFull(h.rand(), b)
	return err
}

// noiseState starts a Noise IK handshake. An initiator passes the
// responder's key; rng supplies the ephemeral key.
func (h *Handshaker) noiseState(initiator bool, remote *PublicKey, rng io.Reader) (*noise.HandshakeState, error) {
	cfg := noise.Config{
		CipherSuite:   h.suite,
		Random:        rng,
		Pattern:       noise.HandshakeIK,
		Initiator:     initiator,
		Prologue:      []byte(prologue),
		StaticKeypair: noise.DHKey{Private: h.static[:], Public: h.public[:]},
	}
	if remote != nil {
		cfg.PeerStatic = remote[:]
	}
	return noise.NewHandshakeState(cfg)
}

// An Initiation is one attempt by this node to open a session with a
// remote. It is not safe for concurrent use: its owner (one goroutine per
// pending session) calls Message, ConsumeCookieReply and ConsumeResponse.
type Initiation struct {
	h           *Handshaker
	remote      PublicKey
	senderIndex uint32
	cookieKey   [keyLen]byte // opens the remote's cookie replies

	// msg is the initiation with mac1 set and mac2 zero, built once so that
	// retransmissions carry the same Noise message.
	msg [InitiationLen]byte

	// hs awaits message 2. A failed ReadMessage can leave flynn/noise's
	// state half-updated, so it is then dropped and rebuilt from the
	// ephemeral key and payload: a forged response cannot spoil the attempt.
	hs       *noise.HandshakeState
	ephPriv  [keyLen]byte
	payload  [InitiationPayloadLen]byte
	done     bool
	cookie   [macLen]byte
	cookieAt time.Time
	hasCook  bool
}

// Initiate starts a handshake with remote. senderIndex is the index the
// remote will put in its packets to us; payload (InitiationPayloadLen
// bytes) travels encrypted to the remote and authenticated by our static
// key. The Noise message is built here, once.
func (h *Handshaker) Initiate(remote PublicKey, senderIndex uint32, payload []byte) (*Initiation, error) {
	if len(payload) != InitiationPayloadLen {
		return nil, fmt.Errorf("%w: initiation payload is %d bytes, want %d", ErrMalformed, len(payload), InitiationPayloadLen)
	}
	in := &Initiation{
		h:           h,
		remote:      remote,
		senderIndex: senderIndex,
		cookieKey:   cookieKey(remote),
	}
	copy(in.payload[:], payload)
	hs, err := h.noiseState(true, &in.remote, h.rand())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	in.msg[0] = TypeInitiation
	putIndex(in.msg[initSenderOff:], senderIndex)
	out, _, _, err := hs.WriteMessage(in.msg[:initNoiseOff], payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	if len(out) != initMAC1Off || &out[0] != &in.msg[0] {
		return nil, fmt.Errorf("%w: noise message 1 is %d bytes", ErrHandshake, len(out)-initNoiseOff)
	}
	k := mac1Key(remote)
	mac1 := mac128(k[:], in.msg[:initMAC1Off])
	copy(in.msg[initMAC1Off:], mac1[:])
	in.hs = hs
	copy(in.ephPriv[:], hs.LocalEphemeral().Private)
	return in, nil
}

// Remote returns the responder's public key.
func (in *Initiation) Remote() PublicKey { return in.remote }

// SenderIndex returns the sender index given to Initiate.
func (in *Initiation) SenderIndex() uint32 { return in.senderIndex }

// Message returns the initiation packet to send or resend, a new slice
// each call. All calls return the same bytes except mac2, which carries the
// last cookie accepted by ConsumeCookieReply while it is younger than
// CookieLifetime, and is zero otherwise.
func (in *Initiation) Message() []byte {
	pkt := make([]byte, InitiationLen)
	copy(pkt, in.msg[:])
	if in.hasCook && in.h.now().Sub(in.cookieAt) < cookieLifetime {
		mac2 := mac128(in.cookie[:], pkt[:initMAC2Off])
		copy(pkt[initMAC2Off:], mac2[:])
	}
	return pkt
}

// ConsumeCookieReply authenticates a cookie reply to this initiation (its
// receiver index is our sender index and its associated data our mac1) and
// keeps the cookie for the following Message calls.
func (in *Initiation) ConsumeCookieReply(pkt []byte) error {
	if in.done {
		return ErrDone
	}
	if !handshakeHeaderOK(pkt, TypeCookieReply, cookieReplyLen) {
		return fmt.Errorf("%w: not a cookie reply", ErrMalformed)
	}
	if getIndex(pkt[cookieReceiverOff:]) != in.senderIndex {
		return ErrWrongIndex
	}
	aead, err := chacha20poly1305.NewX(in.cookieKey[:])
	if err != nil {
		return err
	}
	var cookie [macLen]byte
	_, err = aead.Open(cookie[:0], pkt[cookieNonceOff:cookieBoxOff], pkt[cookieBoxOff:], in.msg[initMAC1Off:initMAC2Off])
	if err != nil {
		return fmt.Errorf("%w: cookie reply does not decrypt", ErrMAC)
	}
	in.cookie, in.cookieAt, in.hasCook = cookie, in.h.now(), true
	return nil
}

// ConsumeResponse checks a response (mac1 keyed with our public key), runs
// Noise IK message 2 and returns the session keys and the responder's
// payload (ResponsePayloadLen bytes). After it succeeds the Initiation is
// done and every method but Message returns ErrDone. A response that fails
// leaves the Initiation waiting for the genuine one. A response's mac2 must
// be zero (initiators hand out no cookies); anything else is ErrMalformed.
func (in *Initiation) ConsumeResponse(pkt []byte) (*Keypair, []byte, error) {
	if in.done {
		return nil, nil, ErrDone
	}
	if !handshakeHeaderOK(pkt, TypeResponse, ResponseLen) || !isZero(pkt[respMAC2Off:]) {
		return nil, nil, fmt.Errorf("%w: not a response", ErrMalformed)
	}
	if getIndex(pkt[respReceiverOff:]) != in.senderIndex {
		return nil, nil, ErrWrongIndex
	}
	mac1 := mac128(in.h.mac1Key[:], pkt[:respMAC1Off])
	if !macEqual(mac1[:], pkt[respMAC1Off:respMAC2Off]) {
		return nil, nil, fmt.Errorf("%w: response mac1", ErrMAC)
	}
	if in.hs == nil {
		if err := in.rebuild(); err != nil {
			return nil, nil, err
		}
	}
	payload, toResponder, toInitiator, err := in.hs.ReadMessage(nil, pkt[respNoiseOff:respMAC1Off])
	if err != nil || toResponder == nil || len(payload) != ResponsePayloadLen {
		in.hs = nil
		return nil, nil, fmt.Errorf("%w: noise message 2: %v", ErrHandshake, err)
	}
	kp, err := newKeypair(toResponder, toInitiator, in.senderIndex, getIndex(pkt[respSenderOff:]), true, in.h.nonces)
	if err != nil {
		return nil, nil, err
	}
	in.finish()
	return kp, payload, nil
}

// rebuild recreates the handshake state after message 1 from the saved
// ephemeral key: replaying WriteMessage with the same randomness gives the
// same state, which the Noise bytes we sent confirm.
func (in *Initiation) rebuild() error {
	hs, err := in.h.noiseState(true, &in.remote, bytes.NewReader(in.ephPriv[:]))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	out, _, _, err := hs.WriteMessage(nil, in.payload[:])
	if err != nil || !bytes.Equal(out, in.msg[initNoiseOff:initMAC1Off]) {
		return fmt.Errorf("%w: cannot rebuild handshake state", ErrHandshake)
	}
	in.hs = hs
	return nil
}

func (in *Initiation) finish() {
	in.done = true
	in.hs = nil
	clear(in.ephPriv[:])
	clear(in.payload[:])
}

// CheckMAC1 reports whether pkt is an initiation with a valid mac1 for our
// static key: cheap proof that the sender knows our public key. The reader
// goroutine calls it before spending a DH on the packet.
func (h *Handshaker) CheckMAC1(pkt []byte) bool {
	if !handshakeHeaderOK(pkt, TypeInitiation, InitiationLen) {
		return false
	}
	mac1 := mac128(h.mac1Key[:], pkt[:initMAC1Off])
	return macEqual(mac1[:], pkt[initMAC1Off:initMAC2Off])
}

// CheckMAC2 reports whether pkt is an initiation whose mac2 was made with
// the cookie we give src: proof that the sender receives packets at src.
// Under load, initiations failing it are answered with CookieReply.
func (h *Handshaker) CheckMAC2(pkt []byte, src netip.AddrPort) bool {
	if !handshakeHeaderOK(pkt, TypeInitiation, InitiationLen) {
		return false
	}
	b, n, ok := addrBytes(src)
	if !ok {
		return false
	}
	return h.cookies.checkMAC2(pkt, initMAC2Off, b[:n], h.now())
}

// CookieReply returns a cookie reply to the initiation pkt received from
// src. It requires a valid mac1, and the reply (CookieReplyLen bytes) is
// smaller than the initiation, so it never amplifies.
func (h *Handshaker) CookieReply(pkt []byte, src netip.AddrPort) ([]byte, error) {
	if !handshakeHeaderOK(pkt, TypeInitiation, InitiationLen) {
		return nil, fmt.Errorf("%w: not an initiation", ErrMalformed)
	}
	if !h.CheckMAC1(pkt) {
		return nil, fmt.Errorf("%w: initiation mac1", ErrMAC)
	}
	b, n, ok := addrBytes(src)
	if !ok {
		return nil, fmt.Errorf("%w: invalid source address %v", ErrMalformed, src)
	}
	cookie, err := h.cookies.cookie(b[:n], h.now(), h.fill)
	if err != nil {
		return nil, err
	}
	reply := make([]byte, cookieReplyLen)
	reply[0] = TypeCookieReply
	putIndex(reply[cookieReceiverOff:], getIndex(pkt[initSenderOff:]))
	nonce := reply[cookieNonceOff:cookieBoxOff]
	if err := h.fill(nonce); err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(h.cookieK[:])
	if err != nil {
		return nil, err
	}
	aead.Seal(reply[cookieBoxOff:cookieBoxOff], nonce, cookie[:], pkt[initMAC1Off:initMAC2Off])
	return reply, nil
}

// Allow takes a token from the handshake bucket of src (20 a second, burst
// of 5, IPv6 grouped by /64) and reports whether there was one. Under load
// the reader asks it only for initiations whose mac2 proved src, as
// WireGuard does, so spoofed sources cannot drain a real peer's bucket.
func (h *Handshaker) Allow(src netip.Addr) bool {
	return h.limiter.allow(src, h.now())
}

// An IncomingInitiation is a verified initiation waiting for its response.
// Peer is authenticated by Noise: the sender holds its private key. It is
// not safe for concurrent use.
type IncomingInitiation struct {
	Peer        PublicKey // the initiator's static key, as proven by Noise
	SenderIndex uint32    // the initiator's index: put it in packets to it
	Payload     []byte    // InitiationPayloadLen bytes

	h    *Handshaker
	hs   *noise.HandshakeState
	done bool
}

// ConsumeInitiation checks mac1 and runs Noise IK message 1 (three DH
// operations: run it in a worker, not the reader). It returns the
// initiator's identity, its sender index and its payload.
func (h *Handshaker) ConsumeInitiation(pkt []byte) (*IncomingInitiation, error) {
	if !handshakeHeaderOK(pkt, TypeInitiation, InitiationLen) {
		return nil, fmt.Errorf("%w: not an initiation", ErrMalformed)
	}
	if !h.CheckMAC1(pkt) {
		return nil, fmt.Errorf("%w: initiation mac1", ErrMAC)
	}
	return h.consumeNoise(pkt)
}

// consumeNoise is ConsumeInitiation after the mac1 check.
func (h *Handshaker) consumeNoise(pkt []byte) (*IncomingInitiation, error) {
	hs, err := h.noiseState(false, nil, h.rand())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	payload, _, _, err := hs.ReadMessage(nil, pkt[initNoiseOff:initMAC1Off])
	if err != nil {
		return nil, fmt.Errorf("%w: noise message 1: %v", ErrHandshake, err)
	}
	rs := hs.PeerStatic()
	if len(rs) != keyLen || len(payload) != InitiationPayloadLen {
		return nil, fmt.Errorf("%w: noise message 1 has the wrong shape", ErrHandshake)
	}
	in := &IncomingInitiation{
		SenderIndex: getIndex(pkt[initSenderOff:]),
		Payload:     payload,
		h:           h,
		hs:          hs,
	}
	copy(in.Peer[:], rs)
	return in, nil
}

// Respond writes Noise IK message 2 with payload (ResponsePayloadLen
// bytes) and returns the response packet and the session keys. senderIndex
// is the index the initiator will put in its data packets to us. Call it
// at most once; later calls return ErrDone.
func (in *IncomingInitiation) Respond(senderIndex uint32, payload []byte) (pkt []byte, kp *Keypair, err error) {
	if len(payload) != ResponsePayloadLen {
		return nil, nil, fmt.Errorf("%w: response payload is %d bytes, want %d", ErrMalformed, len(payload), ResponsePayloadLen)
	}
	if in.done || in.hs == nil {
		return nil, nil, ErrDone
	}
	hs := in.hs
	in.done, in.hs = true, nil // the Noise state is spent whatever happens

	pkt = make([]byte, ResponseLen)
	pkt[0] = TypeResponse
	putIndex(pkt[respSenderOff:], senderIndex)
	putIndex(pkt[respReceiverOff:], in.SenderIndex)
	out, toResponder, toInitiator, err := hs.WriteMessage(pkt[:respNoiseOff], payload)
	if err != nil || toResponder == nil {
		return nil, nil, fmt.Errorf("%w: noise message 2: %v", ErrHandshake, err)
	}
	if len(out) != respMAC1Off || &out[0] != &pkt[0] {
		return nil, nil, fmt.Errorf("%w: noise message 2 is %d bytes", ErrHandshake, len(out)-respNoiseOff)
	}
	k := mac1Key(in.Peer)
	mac1 := mac128(k[:], pkt[:respMAC1Off])
	copy(pkt[respMAC1Off:], mac1[:])
	kp, err = newKeypair(toInitiator, toResponder, senderIndex, in.SenderIndex, false, in.h.nonces)
	if err != nil {
		return nil, nil, err
	}
	return pkt, kp, nil
}
