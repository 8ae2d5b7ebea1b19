package secure

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestCookieFlow(t *testing.T) {
	alice, bob := newNode(t), newNode(t)
	in, _ := alice.Initiate(bob.PublicKey(), 0x11223344, seq(InitiationPayloadLen, 0))
	msg := in.Message()
	if bob.CheckMAC2(msg, srcA) {
		t.Fatal("CheckMAC2 accepted an initiation without cookie")
	}
	reply, err := bob.CookieReply(msg, srcA)
	if err != nil {
		t.Fatal(err)
	}
	if idx, ok := CookieReplyReceiverIndex(reply); !ok || idx != 0x11223344 {
		t.Fatalf("cookie reply receiver index = %#x, %v", idx, ok)
	}
	if err := in.ConsumeCookieReply(reply); err != nil {
		t.Fatal(err)
	}
	withMAC2 := in.Message()
	if isZero(withMAC2[initMAC2Off:]) {
		t.Fatal("Message has no mac2 after a cookie reply")
	}
	tests := []struct {
		src  string
		want bool
	}{
		{"198.51.100.7:40000", true},
		{"[::ffff:198.51.100.7]:40000", true}, // the same address via a dual-stack socket
		{"198.51.100.7:40001", false},
		{"198.51.100.7:40256", false}, // differs in the port's high byte
		{"198.51.100.7:0", false},
		{"198.51.100.8:40000", false},
		{"203.0.113.9:40000", false},
		{"[2001:db8::7]:40000", false},
	}
	for _, tt := range tests {
		if got := bob.CheckMAC2(withMAC2, netip.MustParseAddrPort(tt.src)); got != tt.want {
			t.Errorf("CheckMAC2 from %s = %v, want %v", tt.src, got, tt.want)
		}
	}
	if bob.CheckMAC2(withMAC2, netip.AddrPort{}) {
		t.Error("CheckMAC2 accepted an invalid source")
	}
	if _, err := bob.ConsumeInitiation(withMAC2); err != nil {
		t.Fatalf("ConsumeInitiation with mac2: %v", err)
	}
}

func TestCookieIPv6(t *testing.T) {
	alice, bob := newNode(t), newNode(t)
	src := netip.MustParseAddrPort("[2001:db8:1:2::5]:9000")
	in, _ := alice.Initiate(bob.PublicKey(), 1, make([]byte, InitiationPayloadLen))
	reply, err := bob.CookieReply(in.Message(), src)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.ConsumeCookieReply(reply); err != nil {
		t.Fatal(err)
	}
	if !bob.CheckMAC2(in.Message(), src) {
		t.Error("CheckMAC2 rejected the IPv6 source the cookie was made for")
	}
	if bob.CheckMAC2(in.Message(), netip.MustParseAddrPort("[2001:db8:1:2::6]:9000")) {
		t.Error("CheckMAC2 accepted a neighbour in the same /64: cookies are per address")
	}
}

// TestCookieExpiry moves the two clocks independently: the initiator drops
// its cookie after CookieLifetime, the responder accepts a cookie while its
// secret is younger than 2×CookieLifetime.
func TestCookieExpiry(t *testing.T) {
	const L = cookieLifetime
	tests := []struct {
		name       string
		issueAfter time.Duration // bob's secret age when the cookie is issued
		useAfter   time.Duration // time from issue to use, on both clocks
		wantMAC2   bool          // Alice still attaches mac2
		wantValid  bool          // Bob accepts the mac2 Alice would compute
	}{
		{"fresh", 0, 0, true, true},
		{"initiator keeps it a lifetime", 0, L - time.Nanosecond, true, true},
		{"initiator drops it after a lifetime", 0, L, false, true},
		{"issued late in the window, used a lifetime later", L - time.Second, L - time.Nanosecond, true, true},
		{"secret too old", L - time.Second, L + time.Second, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			alice, bob := newNode(t), newNode(t)
			in, _ := alice.Initiate(bob.PublicKey(), 1, make([]byte, InitiationPayloadLen))
			// Create bob's secret, then age it.
			if _, err := bob.CookieReply(in.Message(), srcB); err != nil {
				t.Fatal(err)
			}
			bob.clock.Advance(tt.issueAfter)
			reply, err := bob.CookieReply(in.Message(), srcA)
			if err != nil {
				t.Fatal(err)
			}
			if err := in.ConsumeCookieReply(reply); err != nil {
				t.Fatal(err)
			}
			// What Alice would send if she had kept the cookie.
			cookieMsg := in.Message()
			alice.clock.Advance(tt.useAfter)
			bob.clock.Advance(tt.useAfter)

			msg := in.Message()
			if got := !isZero(msg[initMAC2Off:]); got != tt.wantMAC2 {
				t.Errorf("mac2 attached = %v, want %v", got, tt.wantMAC2)
			}
			if got := bob.CheckMAC2(cookieMsg, srcA); got != tt.wantValid {
				t.Errorf("responder accepts the cookie = %v, want %v", got, tt.wantValid)
			}
		})
	}
}

// TestCookieRotation checks that the secret changes every CookieLifetime
// and that a cookie from the previous secret keeps working for a while.
func TestCookieRotation(t *testing.T) {
	const L = cookieLifetime
	alice, bob := newNode(t), newNode(t)
	in, _ := alice.Initiate(bob.PublicKey(), 1, make([]byte, InitiationPayloadLen))
	cookieMsg := func() []byte {
		t.Helper()
		reply, err := bob.CookieReply(in.Message(), srcA)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.ConsumeCookieReply(reply); err != nil {
			t.Fatal(err)
		}
		return in.Message()
	}
	first := cookieMsg()
	bob.clock.Advance(L / 2)
	alice.clock.Advance(L / 2)
	if !bytes.Equal(cookieMsg(), first) {
		t.Fatal("secret rotated before CookieLifetime")
	}
	bob.clock.Advance(L / 2)
	alice.clock.Advance(L / 2)
	second := cookieMsg()
	if bytes.Equal(second, first) {
		t.Fatal("secret did not rotate after CookieLifetime")
	}
	if !bob.CheckMAC2(first, srcA) || !bob.CheckMAC2(second, srcA) {
		t.Fatal("cookies of the current and previous secret must both verify")
	}
	bob.clock.Advance(L - time.Nanosecond) // first secret is now 2L−1ns old
	if !bob.CheckMAC2(first, srcA) {
		t.Fatal("previous secret expired early")
	}
	bob.clock.Advance(time.Nanosecond)
	if bob.CheckMAC2(first, srcA) {
		t.Fatal("previous secret accepted at 2×CookieLifetime")
	}
	if !bob.CheckMAC2(second, srcA) {
		t.Fatal("current secret rejected before 2×CookieLifetime")
	}
	// Two more rotations forget the second secret entirely.
	cookieMsg()
	bob.clock.Advance(L)
	cookieMsg()
	if bob.CheckMAC2(second, srcA) {
		t.Fatal("a secret two generations old still verifies")
	}
}

func TestCookieReplyErrors(t *testing.T) {
	alice, bob := newNode(t), newNode(t)
	in, _ := alice.Initiate(bob.PublicKey(), 1, make([]byte, InitiationPayloadLen))
	msg := in.Message()
	tests := []struct {
		name string
		pkt  []byte
		src  netip.AddrPort
		want error
	}{
		{"short", msg[:InitiationLen-1], srcA, ErrMalformed},
		{"wrong type", flip(msg, 0, 0x03), srcA, ErrMalformed},
		{"reserved set", flip(msg, 2, 0x01), srcA, ErrMalformed},
		{"bad mac1", flip(msg, initMAC1Off, 0x01), srcA, ErrMAC},
		{"invalid source", msg, netip.AddrPort{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if reply, err := bob.CookieReply(tt.pkt, tt.src); !errors.Is(err, tt.want) {
				t.Fatalf("CookieReply = %x, %v; want %v", reply, err, tt.want)
			}
		})
	}
}

func TestConsumeCookieReplyBinding(t *testing.T) {
	alice, bob, carol := newNode(t), newNode(t), newNode(t)
	in, _ := alice.Initiate(bob.PublicKey(), 1, make([]byte, InitiationPayloadLen))
	sameIdx, _ := alice.Initiate(bob.PublicKey(), 1, make([]byte, InitiationPayloadLen))
	toCarol, _ := alice.Initiate(carol.PublicKey(), 1, make([]byte, InitiationPayloadLen))
	otherIdx, _ := alice.Initiate(bob.PublicKey(), 2, make([]byte, InitiationPayloadLen))

	replyFor := func(h *testNode, m []byte) []byte {
		r, err := h.CookieReply(m, srcA)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		name  string
		reply []byte
		want  error
	}{
		{"reply to another initiation (other mac1)", replyFor(bob, sameIdx.Message()), ErrMAC},
		{"reply from another responder", replyFor(carol, toCarol.Message()), ErrMAC},
		{"reply for another index", replyFor(bob, otherIdx.Message()), ErrWrongIndex},
		{"response instead of cookie reply", make([]byte, ResponseLen), ErrMalformed},
		{"empty", nil, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := in.ConsumeCookieReply(tt.reply); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !isZero(in.Message()[initMAC2Off:]) {
				t.Fatal("a rejected cookie reply set mac2")
			}
		})
	}
}

func TestTamperCookieReply(t *testing.T) {
	alice, bob := newNode(t), newNode(t)
	in, _ := alice.Initiate(bob.PublicKey(), 1, make([]byte, InitiationPayloadLen))
	reply, _ := bob.CookieReply(in.Message(), srcA)
	for i := range reply {
		if err := in.ConsumeCookieReply(flip(reply, i, 0x10)); !isOneOf(err, ErrMalformed, ErrWrongIndex, ErrMAC) {
			t.Errorf("byte %d flipped: err = %v", i, err)
		}
	}
	if !isZero(in.Message()[initMAC2Off:]) {
		t.Fatal("a tampered cookie reply set mac2")
	}
	if err := in.ConsumeCookieReply(reply); err != nil {
		t.Fatalf("genuine cookie reply: %v", err)
	}
}
