package p2p

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// PeerID names a peer: its X25519 static public key. Sessions are bound to
// both ends' PeerIDs by the handshake, so a peer cannot pose as another.
type PeerID [32]byte

// peerIDEncoding is RFC 4648 base32 without padding; String lowercases it.
var peerIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// PeerIDLen is the length of a PeerID's text form.
const PeerIDLen = 52

// String returns the PeerID as 52 lowercase base32 characters.
func (p PeerID) String() string { return strings.ToLower(peerIDEncoding.EncodeToString(p[:])) }

// MarshalText implements encoding.TextMarshaler.
func (p PeerID) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *PeerID) UnmarshalText(b []byte) error {
	q, err := ParsePeerID(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// ParsePeerID parses the text form of a PeerID (either case).
func ParsePeerID(s string) (PeerID, error) {
	var p PeerID
	if len(s) != PeerIDLen {
		return p, fmt.Errorf("%w: %d characters, want %d", ErrBadPeerID, len(s), PeerIDLen)
	}
	up := strings.ToUpper(s)
	b, err := peerIDEncoding.DecodeString(up)
	if err != nil || len(b) != len(p) || peerIDEncoding.EncodeToString(b) != up {
		return p, fmt.Errorf("%w: %q is not base32 of 32 bytes", ErrBadPeerID, s)
	}
	copy(p[:], b)
	return p, nil
}

// Identity is a node's private key. Its zero value is not usable; create
// one with NewIdentity, LoadOrCreateIdentity or UnmarshalText.
type Identity struct {
	private [32]byte
	public  PeerID
}

// NewIdentity returns a new random identity.
func NewIdentity() (*Identity, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, err
	}
	return identityFromKey(k)
}

func identityFromKey(k [32]byte) (*Identity, error) {
	pub, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		return nil, err // a low-order result: not a usable key
	}
	id := &Identity{private: k}
	copy(id.public[:], pub)
	return id, nil
}

// PeerID returns the identity's public key, which names this node.
func (id *Identity) PeerID() PeerID { return id.public }

// identityPrefix starts the text form of an Identity, so a secret key is
// never mistaken for a PeerID.
const identityPrefix = "gamewire-secret-key:"

// MarshalText returns "gamewire-secret-key:" and the private key in
// lowercase base32. Treat it as a secret.
func (id *Identity) MarshalText() ([]byte, error) {
	return []byte(identityPrefix + strings.ToLower(peerIDEncoding.EncodeToString(id.private[:]))), nil
}

// UnmarshalText parses the form MarshalText writes; surrounding white space
// is ignored.
func (id *Identity) UnmarshalText(b []byte) error {
	s := string(bytes.TrimSpace(b))
	rest, ok := strings.CutPrefix(s, identityPrefix)
	if !ok {
		return fmt.Errorf("%w: does not start with %q", ErrBadIdentity, identityPrefix)
	}
	k, err := ParsePeerID(rest) // same encoding and length
	if err != nil {
		return fmt.Errorf("%w: bad key text", ErrBadIdentity)
	}
	parsed, err := identityFromKey(k)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	*id = *parsed
	return nil
}

// LoadOrCreateIdentity reads the identity stored at path, or creates one
// there (mode 0600, and its directory 0700 if missing) when there is no
// file. It refuses a malformed file, and on Unix a file that others can
// read or write, rather than guess.
func LoadOrCreateIdentity(path string) (*Identity, error) {
	id, err := loadIdentity(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return id, err
	}
	fresh, err := NewIdentity()
	if err != nil {
		return nil, err
	}
	if err := createIdentityFile(path, fresh); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return loadIdentity(path) // another process created it first
		}
		return nil, fmt.Errorf("p2p: creating identity file %s: %w", path, err)
	}
	return fresh, nil
}

func loadIdentity(path string) (*Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if runtime.GOOS != "windows" && info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("p2p: identity file %s has mode %#o, readable or writable by others; it holds a secret key (chmod 600 %s)",
			path, info.Mode().Perm(), path)
	}
	b := make([]byte, 256)
	n, _ := f.Read(b)
	id := new(Identity)
	if err := id.UnmarshalText(b[:n]); err != nil {
		return nil, fmt.Errorf("p2p: identity file %s: %w", path, err)
	}
	return id, nil
}

// createIdentityFile writes id to a temporary file and links it into place,
// so readers never see a partial file and an existing one is never replaced.
func createIdentityFile(path string, id *Identity) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".identity-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	text, _ := id.MarshalText()
	_, err = tmp.Write(append(text, '\n'))
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Link(tmp.Name(), path)
}
