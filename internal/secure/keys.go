package secure

import (
	"crypto/rand"
	"crypto/subtle"
	"io"

	"golang.org/x/crypto/curve25519"
)

// A PrivateKey is an X25519 scalar: a node's long-term identity secret.
type PrivateKey [32]byte

// A PublicKey is an X25519 point. A gamewire PeerID is a PublicKey.
type PublicKey [32]byte

// GenerateKey returns a new private key from crypto/rand, clamped as
// RFC 7748 §5 prescribes (X25519 clamps again, so a clamped key stores the
// scalar that is really used).
func GenerateKey() (PrivateKey, error) {
	return generateKey(rand.Reader)
}

func generateKey(r io.Reader) (PrivateKey, error) {
	var k PrivateKey
	if _, err := io.ReadFull(r, k[:]); err != nil {
		return PrivateKey{}, err
	}
	k.clamp()
	return k, nil
}

func (k *PrivateKey) clamp() {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// Public returns the public key of k. It returns the zero PublicKey only
// for the (negligibly likely) scalars whose product with the base point is
// the identity; such a key is useless and GenerateKey never returns one in
// practice.
func (k PrivateKey) Public() PublicKey {
	var p PublicKey
	out, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		return p
	}
	copy(p[:], out)
	return p
}

// IsZero reports whether k is all zeros (never set).
func (k PublicKey) IsZero() bool {
	var zero PublicKey
	return subtle.ConstantTimeCompare(k[:], zero[:]) == 1
}
