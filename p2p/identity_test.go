package p2p

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestPeerIDText(t *testing.T) {
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	p := id.PeerID()
	s := p.String()
	if len(s) != PeerIDLen || s != strings.ToLower(s) || strings.ContainsAny(s, "=") {
		t.Fatalf("String() = %q", s)
	}
	for _, in := range []string{s, strings.ToUpper(s)} {
		q, err := ParsePeerID(in)
		if err != nil || q != p {
			t.Fatalf("ParsePeerID(%q) = %v, %v", in, q, err)
		}
	}
	var u PeerID
	if err := u.UnmarshalText([]byte(s)); err != nil || u != p {
		t.Fatalf("UnmarshalText: %v", err)
	}
	last := s[len(s)-1]
	flipped := s[:len(s)-1] + string(rune(last^1))
	for _, bad := range []string{"", s[:51], s + "a", s[:51] + "1", s[:51] + "8", strings.Repeat("a", 51) + "b", flipped} {
		if bad == s {
			continue
		}
		if q, err := ParsePeerID(bad); err == nil && q.String() != strings.ToLower(bad) {
			t.Errorf("ParsePeerID(%q) accepted a non-canonical form", bad)
		} else if err != nil && !errors.Is(err, ErrBadPeerID) {
			t.Errorf("ParsePeerID(%q): %v is not ErrBadPeerID", bad, err)
		}
	}
}

func TestIdentityText(t *testing.T) {
	id, _ := NewIdentity()
	text, err := id.MarshalText()
	if err != nil || !strings.HasPrefix(string(text), identityPrefix) {
		t.Fatalf("%q %v", text, err)
	}
	var back Identity
	if err := back.UnmarshalText(append([]byte("  "), append(text, '\n')...)); err != nil {
		t.Fatal(err)
	}
	if back.PeerID() != id.PeerID() {
		t.Fatal("round trip changed the key")
	}
	for _, bad := range []string{"", "hello", identityPrefix, identityPrefix + "xyz", id.PeerID().String()} {
		if err := back.UnmarshalText([]byte(bad)); !errors.Is(err, ErrBadIdentity) {
			t.Errorf("UnmarshalText(%q): %v", bad, err)
		}
	}
}

func TestLoadOrCreateIdentity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "identity")
	a, err := LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", info.Mode().Perm())
	}
	b, err := LoadOrCreateIdentity(path)
	if err != nil || b.PeerID() != a.PeerID() {
		t.Fatalf("reload: %v, same key %v", err, b != nil && b.PeerID() == a.PeerID())
	}

	// Malformed: a clear error naming the file, and the file left alone.
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("not a key\n"), 0o600)
	if _, err := LoadOrCreateIdentity(bad); err == nil || !errors.Is(err, ErrBadIdentity) || !strings.Contains(err.Error(), bad) {
		t.Errorf("malformed file: %v", err)
	}
	if got, _ := os.ReadFile(bad); string(got) != "not a key\n" {
		t.Error("malformed file was overwritten")
	}
	// Readable by others: refused.
	loose := filepath.Join(dir, "loose")
	text, _ := a.MarshalText()
	os.WriteFile(loose, text, 0o644)
	os.Chmod(loose, 0o644)
	if _, err := LoadOrCreateIdentity(loose); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("mode 0644 file: %v", err)
	}

	// Concurrent first use: everyone ends up with the same key.
	shared := filepath.Join(dir, "shared")
	var wg sync.WaitGroup
	ids := make([]PeerID, 8)
	for i := range ids {
		wg.Go(func() {
			id, err := LoadOrCreateIdentity(shared)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = id.PeerID()
		})
	}
	wg.Wait()
	for _, p := range ids[1:] {
		if p != ids[0] {
			t.Fatal("concurrent creation produced different identities")
		}
	}
}
