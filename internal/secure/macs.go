package secure

import (
	"crypto/subtle"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
)

// Labels of WireGuard's mac1 and cookie key derivation (whitepaper §5.4.4).
// gamewire keeps them: the prologue and packet types already separate the
// two protocols, and keeping them lets WireGuard's analysis carry over.
const (
	labelMAC1   = "mac1----"
	labelCookie = "cookie--"
)

// CookieLifetime is how long a cookie stays usable: the initiator attaches
// mac2 only while its cookie is younger than this, and the responder's
// cookie secret changes this often.
const cookieLifetime = 2 * time.Minute

// labelledKey returns BLAKE2s-256(label || pub).
func labelledKey(label string, pub PublicKey) [keyLen]byte {
	var buf [len(labelMAC1) + keyLen]byte
	n := copy(buf[:], label)
	n += copy(buf[n:], pub[:])
	return blake2s.Sum256(buf[:n])
}

// mac1Key is the key of mac1 on messages addressed to the owner of pub.
func mac1Key(pub PublicKey) [keyLen]byte { return labelledKey(labelMAC1, pub) }

// cookieKey is the XChaCha20-Poly1305 key of cookie replies sent by the
// owner of pub.
func cookieKey(pub PublicKey) [keyLen]byte { return labelledKey(labelCookie, pub) }

// mac128 returns BLAKE2s-128 keyed with key over msg. key is 16 or 32
// bytes, which blake2s always accepts.
func mac128(key, msg []byte) [macLen]byte {
	var out [macLen]byte
	h, err := blake2s.New128(key)
	if err != nil {
		// Unreachable for our fixed key sizes; a zero MAC never verifies
		// against a real one, so fail closed rather than panic.
		return out
	}
	h.Write(msg)
	h.Sum(out[:0])
	return out
}

// macEqual compares MACs in constant time.
func macEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

func isZero(b []byte) bool {
	var acc byte
	for _, x := range b {
		acc |= x
	}
	return acc == 0
}

// addrBytes is the cookie input for a source address: the IP (4 bytes for
// IPv4, including IPv4-mapped IPv6, else 16) followed by the port in network
// byte order. The zone is ignored. It is false for an invalid address.
func addrBytes(src netip.AddrPort) ([18]byte, int, bool) {
	var b [18]byte
	ip := src.Addr().Unmap()
	var n int
	switch {
	case ip.Is4():
		a := ip.As4()
		n = copy(b[:], a[:])
	case ip.Is6():
		a := ip.As16()
		n = copy(b[:], a[:])
	default:
		return b, 0, false
	}
	b[n] = byte(src.Port() >> 8)
	b[n+1] = byte(src.Port())
	return b, n + 2, true
}

// cookieSecret is one generation of the responder's cookie secret.
type cookieSecret struct {
	key  [keyLen]byte
	born time.Time
	set  bool
}

// usable reports whether cookies made from s are still accepted at now.
// A secret is current for cookieLifetime and accepted for twice that, so a
// cookie handed out just before rotation still lasts the initiator's full
// cookieLifetime.
func (s *cookieSecret) usable(now time.Time) bool {
	return s.set && now.Sub(s.born) < 2*cookieLifetime
}

func (s *cookieSecret) cookie(src []byte) [macLen]byte { return mac128(s.key[:], src) }

// cookieJar holds the current and previous cookie secrets of a responder.
// Any goroutine may use it; mu guards both secrets.
type cookieJar struct {
	mu   sync.RWMutex
	cur  cookieSecret
	prev cookieSecret
}

// checkMAC2 reports whether mac2 of msg (the 16 bytes at mac2Off, over
// msg[:mac2Off]) matches the cookie of src under a usable secret.
func (j *cookieJar) checkMAC2(msg []byte, mac2Off int, src []byte, now time.Time) bool {
	got := msg[mac2Off : mac2Off+macLen]
	if isZero(got) {
		return false // no cookie attached: skip the work
	}
	j.mu.RLock()
	defer j.mu.RUnlock()
	for _, s := range [...]*cookieSecret{&j.cur, &j.prev} {
		if !s.usable(now) {
			continue
		}
		c := s.cookie(src)
		want := mac128(c[:], msg[:mac2Off])
		if macEqual(want[:], got) {
			return true
		}
	}
	return false
}

// cookie returns the cookie of src under the current secret, rotating the
// secret first if it is CookieLifetime old. Rotation happens only here (when
// a cookie is handed out), so a cookie is always made from a secret younger
// than CookieLifetime and, by usable, accepted for at least CookieLifetime.
func (j *cookieJar) cookie(src []byte, now time.Time, fill func([]byte) error) ([macLen]byte, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.cur.set || now.Sub(j.cur.born) >= cookieLifetime {
		next := cookieSecret{born: now, set: true}
		if err := fill(next.key[:]); err != nil {
			return [macLen]byte{}, err
		}
		j.prev, j.cur = j.cur, next
	}
	return j.cur.cookie(src), nil
}
