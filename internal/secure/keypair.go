package secure

import (
	"crypto/cipher"
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
)

// A Keypair holds the transport keys of one established session: one AEAD
// per direction, the two session indices, the send counter and the replay
// window. Seal and Open may be called from any goroutine.
type Keypair struct {
	send, recv  cipher.AEAD // immutable after creation; AEADs are stateless
	localIndex  uint32
	remoteIndex uint32
	initiator   bool
	nonces      *sync.Pool // *[chacha20poly1305.NonceSize]byte scratch, shared per Handshaker

	sendCounter atomic.Uint64 // next counter to seal

	mu     sync.Mutex // guards replay
	replay replayFilter
}

// newNoncePool returns the pool of AEAD nonce buffers. A nonce handed to
// cipher.AEAD escapes (the compiler cannot see through the interface), so a
// stack array would cost an allocation per packet; a pooled one does not.
func newNoncePool() *sync.Pool {
	return &sync.Pool{New: func() any { return new([chacha20poly1305.NonceSize]byte) }}
}

// newKeypair builds a Keypair from the two CipherStates Noise's Split
// produced. The data path manages nonces itself (they are the packet
// counters), so it takes the raw keys and runs ChaCha20-Poly1305 exactly as
// flynn/noise's Cipher does: nonce = 4 zero bytes || counter, little-endian.
func newKeypair(send, recv *noise.CipherState, local, remote uint32, initiator bool, nonces *sync.Pool) (*Keypair, error) {
	sk, rk := send.UnsafeKey(), recv.UnsafeKey()
	defer clear(sk[:])
	defer clear(rk[:])
	return newKeypairFromKeys(sk, rk, local, remote, initiator, nonces)
}

func newKeypairFromKeys(sk, rk [keyLen]byte, local, remote uint32, initiator bool, nonces *sync.Pool) (*Keypair, error) {
	s, err := chacha20poly1305.New(sk[:])
	if err != nil {
		return nil, err
	}
	r, err := chacha20poly1305.New(rk[:])
	if err != nil {
		return nil, err
	}
	return &Keypair{
		send: s, recv: r,
		localIndex: local, remoteIndex: remote,
		initiator: initiator,
		nonces:    nonces,
	}, nil
}

// LocalIndex returns the sender index we chose: the peer puts it in the
// data packets it sends us.
func (kp *Keypair) LocalIndex() uint32 { return kp.localIndex }

// RemoteIndex returns the peer's sender index: we put it in the data
// packets we send.
func (kp *Keypair) RemoteIndex() uint32 { return kp.remoteIndex }

// Initiator reports whether this side sent the initiation.
func (kp *Keypair) Initiator() bool { return kp.initiator }

// Sent returns how many counters Seal has used, so the caller can rekey
// well before RejectAfterMessages.
func (kp *Keypair) Sent() uint64 { return min(kp.sendCounter.Load(), rejectAfterMessages) }

// nextCounter reserves the next send counter. It uses compare-and-swap
// rather than Add so the counter stops at RejectAfterMessages instead of
// creeping on towards a wrap that would reuse nonces.
func (kp *Keypair) nextCounter() (uint64, bool) {
	for {
		c := kp.sendCounter.Load()
		if c >= rejectAfterMessages {
			return 0, false
		}
		if kp.sendCounter.CompareAndSwap(c, c+1) {
			return c, true
		}
	}
}

// Seal encrypts in place. buf[DataHeaderLen:DataHeaderLen+n] holds n
// plaintext bytes and cap(buf) must be at least DataHeaderLen+n+TagLen. Seal
// writes the header (type, flags, remote index, counter) into
// buf[:DataHeaderLen], seals with the whole header as associated data and
// returns the packet, buf[:DataHeaderLen+n+TagLen]. Counters start at 0 and
// grow by one per call; past RejectAfterMessages it returns
// ErrCounterExhausted.
func (kp *Keypair) Seal(buf []byte, n int, flags byte) ([]byte, error) {
	if n < 0 || cap(buf) < DataHeaderLen+TagLen || cap(buf)-DataHeaderLen-TagLen < n {
		return nil, ErrShortBuffer
	}
	ctr, ok := kp.nextCounter()
	if !ok {
		return nil, ErrCounterExhausted
	}
	buf = buf[:DataHeaderLen+n]
	hdr := buf[:DataHeaderLen]
	hdr[0] = TypeData
	hdr[dataFlagsOff] = flags
	hdr[2], hdr[3] = 0, 0
	putIndex(hdr[dataReceiverOff:], kp.remoteIndex)
	binary.LittleEndian.PutUint64(hdr[dataCounterOff:], ctr)

	nonce := kp.nonce(ctr)
	out := kp.send.Seal(hdr, nonce[:], buf[DataHeaderLen:], hdr)
	kp.nonces.Put(nonce)
	return out, nil
}

// Open authenticates and decrypts a data packet in place and returns the
// plaintext (a subslice of pkt) and the header's flags byte. The replay
// window is checked before and updated only after the tag verifies, so a
// forged packet cannot advance it. On error the bytes of pkt after the
// header are unspecified.
func (kp *Keypair) Open(pkt []byte) (plaintext []byte, flags byte, err error) {
	if !dataHeaderOK(pkt) {
		return nil, 0, ErrMalformed
	}
	if getIndex(pkt[dataReceiverOff:]) != kp.localIndex {
		return nil, 0, ErrWrongIndex
	}
	ctr := binary.LittleEndian.Uint64(pkt[dataCounterOff:])
	if !kp.fresh(ctr) {
		return nil, 0, ErrReplay // spare the AEAD work
	}
	hdr := pkt[:DataHeaderLen]
	nonce := kp.nonce(ctr)
	pt, err := kp.recv.Open(pkt[DataHeaderLen:DataHeaderLen], nonce[:], pkt[DataHeaderLen:], hdr)
	kp.nonces.Put(nonce)
	if err != nil {
		return nil, 0, ErrAuth
	}
	if !kp.accept(ctr) {
		return nil, 0, ErrReplay // a duplicate raced us through the AEAD
	}
	return pt, pkt[dataFlagsOff], nil
}

func (kp *Keypair) nonce(ctr uint64) *[chacha20poly1305.NonceSize]byte {
	n := kp.nonces.Get().(*[chacha20poly1305.NonceSize]byte)
	n[0], n[1], n[2], n[3] = 0, 0, 0, 0
	binary.LittleEndian.PutUint64(n[4:], ctr)
	return n
}

func (kp *Keypair) fresh(ctr uint64) bool {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	return kp.replay.fresh(ctr)
}

func (kp *Keypair) accept(ctr uint64) bool {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	return kp.replay.accept(ctr)
}
