package secure

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// The fuzz targets feed arbitrary bytes to every parser of this package.
// Each must return one of the documented errors, never panic, and never
// modify its input (except Open, which decrypts in place by contract).
// Where a MAC would stop nearly every mutation early, the input is also
// tried with the MAC repaired, so the Noise and AEAD code behind it is
// fuzzed too.

func FuzzConsumeInitiation(f *testing.F) {
	alice, bob := seededNode(1), seededNode(2)
	in, err := alice.Initiate(bob.PublicKey(), 7, seq(InitiationPayloadLen, 0))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(in.Message())
	reply, _ := bob.CookieReply(in.Message(), srcA)
	if err := in.ConsumeCookieReply(reply); err != nil {
		f.Fatal(err)
	}
	f.Add(in.Message())
	f.Add([]byte{})
	f.Add(make([]byte, InitiationLen))
	f.Add(reply)

	f.Fuzz(func(t *testing.T, pkt []byte) {
		orig := bytes.Clone(pkt)
		bob.CheckMAC2(pkt, srcA)
		InitiationID(pkt)
		idx, shaped := initiationSenderIndex(pkt)
		mac1OK := bob.CheckMAC1(pkt)
		if mac1OK && !shaped {
			t.Fatal("CheckMAC1 accepted a packet not shaped like an initiation")
		}
		reply, err := bob.CookieReply(pkt, srcA)
		if !isOneOf(err, nil, ErrMalformed, ErrMAC) || (err == nil) != mac1OK {
			t.Fatalf("CookieReply: %v (mac1 ok %v)", err, mac1OK)
		}
		if err == nil && (len(reply) != cookieReplyLen || getIndex(reply[cookieReceiverOff:]) != idx) {
			t.Fatalf("cookie reply of %d bytes for index %#x", len(reply), idx)
		}
		checkConsumeInitiation(t, bob, pkt, ErrMalformed, ErrMAC, ErrHandshake)
		if shaped {
			fixed := bytes.Clone(pkt)
			mac1 := mac128(bob.mac1Key[:], fixed[:initMAC1Off])
			copy(fixed[initMAC1Off:], mac1[:])
			checkConsumeInitiation(t, bob, fixed, ErrHandshake)
		}
		if !bytes.Equal(pkt, orig) {
			t.Fatal("input modified")
		}
	})
}

func checkConsumeInitiation(t *testing.T, h *testNode, pkt []byte, allowed ...error) {
	t.Helper()
	inc, err := h.ConsumeInitiation(pkt)
	if err != nil {
		if !isOneOf(err, allowed...) {
			t.Fatalf("ConsumeInitiation: unexpected error %v", err)
		}
		return
	}
	if len(inc.Payload) != InitiationPayloadLen {
		t.Fatalf("payload of %d bytes", len(inc.Payload))
	}
	resp, kp, err := inc.Respond(1, make([]byte, ResponsePayloadLen))
	if err != nil || len(resp) != ResponseLen || kp == nil {
		t.Fatalf("Respond to an accepted initiation: %v", err)
	}
}

// fuzzInitiation returns the same Initiation from alice to bob on every
// call, by resetting alice's randomness, so seeds stay valid.
func fuzzInitiation(tb testing.TB, alice, bob *testNode) *Initiation {
	alice.random = rand.NewChaCha8([32]byte{'f', 'u', 'z', 'z'})
	in, err := alice.Initiate(bob.PublicKey(), 7, seq(InitiationPayloadLen, 0))
	if err != nil {
		tb.Fatal(err)
	}
	return in
}

func FuzzConsumeResponse(f *testing.F) {
	alice, bob := seededNode(1), seededNode(2)
	inc, err := bob.ConsumeInitiation(fuzzInitiation(f, alice, bob).Message())
	if err != nil {
		f.Fatal(err)
	}
	resp, _, err := inc.Respond(9, seq(ResponsePayloadLen, 0))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(resp)
	f.Add(make([]byte, ResponseLen))
	f.Add([]byte{TypeResponse})
	f.Add(flip(resp, respNoiseOff, 1))

	f.Fuzz(func(t *testing.T, pkt []byte) {
		orig := bytes.Clone(pkt)
		ResponseReceiverIndex(pkt)
		in := fuzzInitiation(t, alice, bob)
		if !checkConsumeResponse(t, in, pkt, ErrMalformed, ErrWrongIndex, ErrMAC, ErrHandshake) {
			// Still pending: try again with mac1 repaired, which also
			// exercises rebuilding the state after a failed attempt.
			if _, ok := ResponseReceiverIndex(pkt); ok {
				fixed := bytes.Clone(pkt)
				mac1 := mac128(alice.mac1Key[:], fixed[:respMAC1Off])
				copy(fixed[respMAC1Off:], mac1[:])
				checkConsumeResponse(t, in, fixed, ErrMalformed, ErrWrongIndex, ErrHandshake)
			}
		}
		if !bytes.Equal(pkt, orig) {
			t.Fatal("input modified")
		}
	})
}

// checkConsumeResponse reports whether the response completed in.
func checkConsumeResponse(t *testing.T, in *Initiation, pkt []byte, allowed ...error) bool {
	t.Helper()
	kp, pay, err := in.ConsumeResponse(pkt)
	if err != nil {
		if !isOneOf(err, allowed...) {
			t.Fatalf("ConsumeResponse: unexpected error %v", err)
		}
		return false
	}
	if kp == nil || len(pay) != ResponsePayloadLen {
		t.Fatalf("accepted response gave keypair %v and %d payload bytes", kp, len(pay))
	}
	if _, _, err := in.ConsumeResponse(pkt); !isOneOf(err, ErrDone) {
		t.Fatalf("second ConsumeResponse: %v", err)
	}
	return true
}

func FuzzConsumeCookieReply(f *testing.F) {
	alice, bob := seededNode(1), seededNode(2)
	in := fuzzInitiation(f, alice, bob)
	reply, err := bob.CookieReply(in.Message(), srcA)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(reply)
	f.Add(make([]byte, cookieReplyLen))
	f.Add(flip(reply, cookieNonceOff, 1))
	f.Add(in.Message())

	f.Fuzz(func(t *testing.T, pkt []byte) {
		orig := bytes.Clone(pkt)
		CookieReplyReceiverIndex(pkt)
		in.hasCook = false
		err := in.ConsumeCookieReply(pkt)
		if !isOneOf(err, nil, ErrMalformed, ErrWrongIndex, ErrMAC) {
			t.Fatalf("ConsumeCookieReply: unexpected error %v", err)
		}
		if hasMAC2 := !isZero(in.Message()[initMAC2Off:]); hasMAC2 != (err == nil) {
			t.Fatalf("mac2 attached = %v after error %v", hasMAC2, err)
		}
		if !bytes.Equal(pkt, orig) {
			t.Fatal("input modified")
		}
	})
}

func FuzzOpen(f *testing.F) {
	a, _ := keypairPair(f)
	for i, n := range []int{0, 1, 15, 64, 1200} {
		f.Add(sealBytes(f, a, seq(n, byte(i)), byte(i)))
	}
	f.Add(sealAt(a, rejectAfterMessages-1, []byte("last")))
	f.Add(sealAt(a, rejectAfterMessages, []byte("past")))
	f.Add([]byte{TypeData})
	f.Add(make([]byte, DataHeaderLen+TagLen))

	f.Fuzz(func(t *testing.T, pkt []byte) {
		_, b := keypairPair(t) // a fresh window: the outcome depends on pkt only
		orig := bytes.Clone(pkt)
		_, shaped := DataReceiverIndex(pkt)
		pt, flags, err := b.Open(pkt)
		if err != nil {
			if !isOneOf(err, ErrMalformed, ErrWrongIndex, ErrReplay, ErrAuth) {
				t.Fatalf("Open: unexpected error %v", err)
			}
			if !shaped && err != ErrMalformed {
				t.Fatalf("DataReceiverIndex refused the packet but Open said %v", err)
			}
			return
		}
		if !shaped || len(pt) != len(pkt)-DataHeaderLen-TagLen || flags != orig[dataFlagsOff] {
			t.Fatalf("accepted packet: shaped %v, %d plaintext bytes of %d, flags %#x", shaped, len(pt), len(pkt), flags)
		}
		if _, _, err := b.Open(orig); err != ErrReplay {
			t.Fatalf("the same packet twice: %v, want ErrReplay", err)
		}
	})
}
