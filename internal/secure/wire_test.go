package secure

import (
	"bytes"
	"testing"

	"golang.org/x/crypto/curve25519"
)

// TestNoAmplification: nothing a responder sends in answer to an
// unauthenticated initiation may be longer than the initiation.
func TestNoAmplification(t *testing.T) {
	if InitiationLen <= ResponseLen {
		t.Errorf("InitiationLen %d <= ResponseLen %d", InitiationLen, ResponseLen)
	}
	if InitiationLen <= cookieReplyLen {
		t.Errorf("InitiationLen %d <= CookieReplyLen %d", InitiationLen, cookieReplyLen)
	}
}

func TestMessageSizes(t *testing.T) {
	alice, bob := newNode(t), newNode(t)
	in, _ := alice.Initiate(bob.PublicKey(), 1, make([]byte, InitiationPayloadLen))
	msg := in.Message()
	reply, err := bob.CookieReply(msg, srcA)
	if err != nil {
		t.Fatal(err)
	}
	inc, _ := bob.ConsumeInitiation(msg)
	resp, kp, _ := inc.Respond(2, make([]byte, ResponsePayloadLen))
	data := sealBytes(t, kp, make([]byte, 100), 0)

	tests := []struct {
		name      string
		got, want int
		layout    int // sum of the documented fields
	}{
		{"initiation", len(msg), InitiationLen, 1 + 3 + 4 + 32 + 48 + (InitiationPayloadLen + 16) + 16 + 16},
		{"response", len(resp), ResponseLen, 1 + 3 + 4 + 4 + 32 + (ResponsePayloadLen + 16) + 16 + 16},
		{"cookie reply", len(reply), cookieReplyLen, 1 + 3 + 4 + 24 + 16 + 16},
		{"data, 100 bytes", len(data), DataHeaderLen + 100 + TagLen, 1 + 1 + 2 + 4 + 8 + 100 + 16},
	}
	for _, tt := range tests {
		if tt.got != tt.want || tt.want != tt.layout {
			t.Errorf("%s: %d bytes, constant %d, documented layout %d", tt.name, tt.got, tt.want, tt.layout)
		}
	}
	// The literal sizes doc.go states.
	if InitiationLen != 176 || ResponseLen != 108 || cookieReplyLen != 64 || DataHeaderLen != 16 {
		t.Errorf("sizes %d/%d/%d/%d differ from doc.go's 176/108/64/16", InitiationLen, ResponseLen, cookieReplyLen, DataHeaderLen)
	}
	// Field placement: types, zero reserved bytes, indices.
	if msg[0] != TypeInitiation || resp[0] != TypeResponse || reply[0] != TypeCookieReply || data[0] != TypeData {
		t.Error("wrong type bytes")
	}
	for _, p := range [][]byte{msg, resp, reply} {
		if !isZero(p[1:4]) {
			t.Errorf("type %#x: reserved bytes %x", p[0], p[1:4])
		}
	}
	if !isZero(resp[respMAC2Off:]) {
		t.Error("response mac2 is not zero")
	}
	if getIndex(resp[4:]) != 2 || getIndex(resp[8:]) != 1 || getIndex(reply[4:]) != 1 || getIndex(msg[4:]) != 1 {
		t.Error("indices not where doc.go puts them")
	}
	if pub := alice.PublicKey(); bytes.Contains(msg, pub[:]) {
		t.Error("the initiator's static key is visible in the initiation")
	}
}

func TestReceiverIndexHelpers(t *testing.T) {
	alice, bob := newNode(t), newNode(t)
	in, _ := alice.Initiate(bob.PublicKey(), 0x0a0b0c0d, make([]byte, InitiationPayloadLen))
	msg := in.Message()
	reply, _ := bob.CookieReply(msg, srcA)
	inc, _ := bob.ConsumeInitiation(msg)
	resp, kp, _ := inc.Respond(0x01020304, make([]byte, ResponsePayloadLen))
	data := sealBytes(t, kp, nil, 0)

	type helper func([]byte) (uint32, bool)
	tests := []struct {
		name string
		fn   helper
		pkt  []byte
		want uint32
		ok   bool
	}{
		{"response", ResponseReceiverIndex, resp, 0x0a0b0c0d, true},
		{"response short", ResponseReceiverIndex, resp[:ResponseLen-1], 0, false},
		{"response reserved", ResponseReceiverIndex, flip(resp, 1, 1), 0, false},
		{"response given initiation", ResponseReceiverIndex, msg, 0, false},
		{"cookie reply", CookieReplyReceiverIndex, reply, 0x0a0b0c0d, true},
		{"cookie reply long", CookieReplyReceiverIndex, append(bytes.Clone(reply), 0), 0, false},
		{"cookie reply wrong type", CookieReplyReceiverIndex, flip(reply, 0, 1), 0, false},
		{"data", DataReceiverIndex, data, 0x0a0b0c0d, true},
		{"data short", DataReceiverIndex, data[:DataHeaderLen+TagLen-1], 0, false},
		{"data reserved", DataReceiverIndex, flip(data, 2, 1), 0, false},
		{"data flags are free", DataReceiverIndex, flip(data, 1, 0xff), 0x0a0b0c0d, true},
		{"data given response", DataReceiverIndex, resp, 0, false},
		{"initiation sender", initiationSenderIndex, msg, 0x0a0b0c0d, true},
		{"initiation sender short", initiationSenderIndex, msg[:10], 0, false},
		{"nil", DataReceiverIndex, nil, 0, false},
	}
	for _, tt := range tests {
		if got, ok := tt.fn(tt.pkt); got != tt.want || ok != tt.ok {
			t.Errorf("%s: got %#x, %v; want %#x, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestInitiationIDMalformed(t *testing.T) {
	for _, pkt := range [][]byte{nil, make([]byte, InitiationLen), make([]byte, InitiationLen+1)} {
		if id := InitiationID(pkt); id != ([16]byte{}) {
			t.Errorf("InitiationID of %d malformed bytes = %x, want zero", len(pkt), id)
		}
	}
}

func TestGenerateKey(t *testing.T) {
	seen := make(map[PrivateKey]bool)
	for i := 0; i < 16; i++ {
		k, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if k[0]&7 != 0 || k[31]&0x80 != 0 || k[31]&0x40 == 0 {
			t.Fatalf("key %x is not clamped", k)
		}
		if seen[k] {
			t.Fatal("GenerateKey repeated a key")
		}
		seen[k] = true
		pub := k.Public()
		want, _ := curve25519.X25519(k[:], curve25519.Basepoint)
		if !bytes.Equal(pub[:], want) || pub.IsZero() {
			t.Fatalf("Public() = %x, want %x", pub, want)
		}
	}
	// Two keys agree on a shared secret: Public is the X25519 point.
	a, _ := GenerateKey()
	b, _ := GenerateKey()
	pa, pb := a.Public(), b.Public()
	s1, _ := curve25519.X25519(a[:], pb[:])
	s2, _ := curve25519.X25519(b[:], pa[:])
	if !bytes.Equal(s1, s2) {
		t.Fatal("DH does not agree")
	}
	if !(PublicKey{}).IsZero() || pa.IsZero() {
		t.Fatal("IsZero is wrong")
	}
}
