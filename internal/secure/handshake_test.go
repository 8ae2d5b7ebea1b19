package secure

import (
	"bytes"
	"errors"
	"testing"
)

func TestHandshakeRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		iIdx, rIdx uint32
		iPay, rPay []byte
	}{
		{"zero payloads", 1, 2, make([]byte, InitiationPayloadLen), make([]byte, ResponsePayloadLen)},
		{"patterned payloads", 0xdeadbeef, 0x01020304, seq(InitiationPayloadLen, 3), seq(ResponsePayloadLen, 7)},
		{"equal indices", 42, 42, seq(InitiationPayloadLen, 0), seq(ResponsePayloadLen, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			alice, bob := newNode(t), newNode(t)
			in, err := alice.Initiate(bob.PublicKey(), tt.iIdx, tt.iPay)
			if err != nil {
				t.Fatal(err)
			}
			inc, err := bob.ConsumeInitiation(in.Message())
			if err != nil {
				t.Fatal(err)
			}
			if inc.Peer != alice.PublicKey() {
				t.Errorf("Peer = %x, want the initiator's key %x", inc.Peer, alice.PublicKey())
			}
			if inc.SenderIndex != tt.iIdx {
				t.Errorf("SenderIndex = %#x, want %#x", inc.SenderIndex, tt.iIdx)
			}
			if !bytes.Equal(inc.Payload, tt.iPay) {
				t.Errorf("initiation payload = %x, want %x", inc.Payload, tt.iPay)
			}
			pkt, bkp, err := inc.Respond(tt.rIdx, tt.rPay)
			if err != nil {
				t.Fatal(err)
			}
			akp, pay, err := in.ConsumeResponse(pkt)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pay, tt.rPay) {
				t.Errorf("response payload = %x, want %x", pay, tt.rPay)
			}
			checkIndices(t, akp, tt.iIdx, tt.rIdx, true)
			checkIndices(t, bkp, tt.rIdx, tt.iIdx, false)
			exchange(t, akp, bkp)
			exchange(t, bkp, akp)
		})
	}
}

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func checkIndices(t *testing.T, kp *Keypair, local, remote uint32, initiator bool) {
	t.Helper()
	if kp.LocalIndex() != local || kp.RemoteIndex() != remote || kp.Initiator() != initiator {
		t.Errorf("keypair local=%#x remote=%#x initiator=%v, want %#x %#x %v",
			kp.LocalIndex(), kp.RemoteIndex(), kp.Initiator(), local, remote, initiator)
	}
}

// exchange checks that from's packets open at to, intact.
func exchange(t *testing.T, from, to *Keypair) {
	t.Helper()
	for i, msg := range [][]byte{nil, []byte("hello"), seq(1200, 9)} {
		pkt := sealBytes(t, from, msg, byte(i))
		pt, flags, err := to.Open(pkt)
		if err != nil {
			t.Fatalf("Open packet %d: %v", i, err)
		}
		if !bytes.Equal(pt, msg) || flags != byte(i) {
			t.Fatalf("packet %d opened as %q flags %d, want %q flags %d", i, pt, flags, msg, i)
		}
	}
}

func TestHandshakePayloadLength(t *testing.T) {
	alice, bob := newNode(t), newNode(t)
	for _, n := range []int{0, InitiationPayloadLen - 1, InitiationPayloadLen + 1} {
		if _, err := alice.Initiate(bob.PublicKey(), 1, make([]byte, n)); !errors.Is(err, ErrMalformed) {
			t.Errorf("Initiate with %d-byte payload: err = %v, want ErrMalformed", n, err)
		}
	}
	in, _ := alice.Initiate(bob.PublicKey(), 1, make([]byte, InitiationPayloadLen))
	inc, err := bob.ConsumeInitiation(in.Message())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := inc.Respond(2, make([]byte, ResponsePayloadLen+1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("Respond with long payload: err = %v, want ErrMalformed", err)
	}
	// A rejected payload must not use up the IncomingInitiation.
	if _, _, err := inc.Respond(2, make([]byte, ResponsePayloadLen)); err != nil {
		t.Errorf("Respond after a rejected payload: %v", err)
	}
}

func TestHandshakeDone(t *testing.T) {
	alice, bob := newNode(t), newNode(t)
	s := handshake(t, alice, bob, 1, 2)
	if _, _, err := s.in.ConsumeResponse(s.responsePkt); !errors.Is(err, ErrDone) {
		t.Errorf("second ConsumeResponse: err = %v, want ErrDone", err)
	}
	if err := s.in.ConsumeCookieReply(make([]byte, cookieReplyLen)); !errors.Is(err, ErrDone) {
		t.Errorf("ConsumeCookieReply after completion: err = %v, want ErrDone", err)
	}
	if _, _, err := s.incoming.Respond(3, make([]byte, ResponsePayloadLen)); !errors.Is(err, ErrDone) {
		t.Errorf("second Respond: err = %v, want ErrDone", err)
	}
}

func TestImpersonation(t *testing.T) {
	t.Run("responder learns the real initiator key", func(t *testing.T) {
		alice, mallory, bob := newNode(t), newNode(t), newNode(t)
		in, _ := mallory.Initiate(bob.PublicKey(), 5, make([]byte, InitiationPayloadLen))
		inc, err := bob.ConsumeInitiation(in.Message())
		if err != nil {
			t.Fatal(err)
		}
		if inc.Peer != mallory.PublicKey() || inc.Peer == alice.PublicKey() {
			t.Fatalf("Peer = %x, want mallory's key %x", inc.Peer, mallory.PublicKey())
		}
	})
	t.Run("claiming another static key fails Noise", func(t *testing.T) {
		alice, mallory, bob := newNode(t), newNode(t), newNode(t)
		// Mallory sends Alice's public key as her static, with her own
		// private key. mac1 is fine (it only needs Bob's public key).
		mallory.public = alice.PublicKey()
		in, err := mallory.Initiate(bob.PublicKey(), 5, make([]byte, InitiationPayloadLen))
		if err != nil {
			t.Fatal(err)
		}
		msg := in.Message()
		if !bob.CheckMAC1(msg) {
			t.Fatal("mac1 should verify: it is not what stops her")
		}
		if inc, err := bob.ConsumeInitiation(msg); !errors.Is(err, ErrHandshake) {
			t.Fatalf("ConsumeInitiation = %+v, %v; want ErrHandshake", inc, err)
		}
	})
	t.Run("initiation for another responder fails mac1 and Noise", func(t *testing.T) {
		alice, bob, carol := newNode(t), newNode(t), newNode(t)
		in, _ := alice.Initiate(carol.PublicKey(), 5, make([]byte, InitiationPayloadLen))
		msg := in.Message()
		if bob.CheckMAC1(msg) {
			t.Error("Bob accepted mac1 of an initiation for Carol")
		}
		if _, err := bob.ConsumeInitiation(msg); !errors.Is(err, ErrMAC) {
			t.Errorf("ConsumeInitiation: err = %v, want ErrMAC", err)
		}
		if _, err := bob.consumeNoise(msg); !errors.Is(err, ErrHandshake) {
			t.Errorf("Noise alone: err = %v, want ErrHandshake", err)
		}
		if _, err := carol.ConsumeInitiation(msg); err != nil {
			t.Errorf("Carol, the addressee: %v", err)
		}
	})
	t.Run("response from the wrong responder fails", func(t *testing.T) {
		alice, bob, carol := newNode(t), newNode(t), newNode(t)
		toBob, _ := alice.Initiate(bob.PublicKey(), 9, make([]byte, InitiationPayloadLen))
		toCarol, _ := alice.Initiate(carol.PublicKey(), 9, make([]byte, InitiationPayloadLen))
		inc, err := carol.ConsumeInitiation(toCarol.Message())
		if err != nil {
			t.Fatal(err)
		}
		carolPkt, _, err := inc.Respond(3, make([]byte, ResponsePayloadLen))
		if err != nil {
			t.Fatal(err)
		}
		// Same receiver index and a valid mac1 for Alice: only Noise can tell.
		if _, _, err := toBob.ConsumeResponse(carolPkt); !errors.Is(err, ErrHandshake) {
			t.Fatalf("Carol's response to Bob's initiation: err = %v, want ErrHandshake", err)
		}
		// The attempt survives: Bob's genuine response still completes it.
		incB, err := bob.ConsumeInitiation(toBob.Message())
		if err != nil {
			t.Fatal(err)
		}
		bobPkt, bkp, _ := incB.Respond(4, make([]byte, ResponsePayloadLen))
		akp, _, err := toBob.ConsumeResponse(bobPkt)
		if err != nil {
			t.Fatalf("genuine response after a forged one: %v", err)
		}
		exchange(t, akp, bkp)
	})
	t.Run("response mac1 is keyed for the initiator", func(t *testing.T) {
		alice, bob, dave := newNode(t), newNode(t), newNode(t)
		in, _ := alice.Initiate(bob.PublicKey(), 9, make([]byte, InitiationPayloadLen))
		inc, _ := bob.ConsumeInitiation(in.Message())
		pkt, _, _ := inc.Respond(3, make([]byte, ResponsePayloadLen))
		k := mac1Key(dave.PublicKey())
		mac1 := mac128(k[:], pkt[:respMAC1Off])
		copy(pkt[respMAC1Off:], mac1[:])
		if _, _, err := in.ConsumeResponse(pkt); !errors.Is(err, ErrMAC) {
			t.Fatalf("response with mac1 for Dave: err = %v, want ErrMAC", err)
		}
	})
}

// TestForgedResponseKeepsInitiation sends responses that pass mac1 but
// break Noise in ways flynn/noise does not roll back (a low-order
// ephemeral fails inside DH), then the genuine one.
func TestForgedResponseKeepsInitiation(t *testing.T) {
	alice, bob := newNode(t), newNode(t)
	in, _ := alice.Initiate(bob.PublicKey(), 1, make([]byte, InitiationPayloadLen))
	inc, _ := bob.ConsumeInitiation(in.Message())
	genuine, bkp, _ := inc.Respond(2, make([]byte, ResponsePayloadLen))

	// forge applies change to a copy of the genuine response and fixes mac1,
	// which anyone knowing Alice's public key can do.
	forge := func(change func(p []byte)) []byte {
		p := bytes.Clone(genuine)
		change(p)
		mac1 := mac128(alice.mac1Key[:], p[:respMAC1Off])
		copy(p[respMAC1Off:], mac1[:])
		return p
	}
	setE := func(e []byte) func([]byte) {
		return func(p []byte) { copy(p[respNoiseOff:respNoiseOff+keyLen], e) }
	}
	forgeries := map[string][]byte{
		"zero ephemeral":     forge(setE(make([]byte, keyLen))),
		"order-2 ephemeral":  forge(setE(append([]byte{1}, make([]byte, keyLen-1)...))),
		"random ephemeral":   forge(setE(seq(keyLen, 77))),
		"garbage ciphertext": forge(func(p []byte) { p[respNoiseOff+keyLen] ^= 1 }),
	}
	for name, p := range forgeries {
		if _, _, err := in.ConsumeResponse(p); !errors.Is(err, ErrHandshake) {
			t.Errorf("%s: err = %v, want ErrHandshake", name, err)
		}
	}
	akp, _, err := in.ConsumeResponse(genuine)
	if err != nil {
		t.Fatalf("genuine response after forgeries: %v", err)
	}
	exchange(t, akp, bkp)
}

func TestTamperInitiation(t *testing.T) {
	alice, bob := newNode(t), newNode(t)
	in, _ := alice.Initiate(bob.PublicKey(), 1, seq(InitiationPayloadLen, 1))
	reply, err := bob.CookieReply(in.Message(), srcA)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.ConsumeCookieReply(reply); err != nil {
		t.Fatal(err)
	}
	msg := in.Message() // with mac2, so every byte is covered by something
	if !bob.CheckMAC1(msg) || !bob.CheckMAC2(msg, srcA) {
		t.Fatal("untampered initiation must pass both MACs")
	}
	for i := range msg {
		for _, mask := range []byte{0x01, 0x80} {
			bad := flip(msg, i, mask)
			if bob.CheckMAC2(bad, srcA) {
				t.Errorf("byte %d ^%#x: CheckMAC2 accepted", i, mask)
			}
			if i >= initMAC2Off {
				continue // mac2 is the reader's business; mac1 and Noise do not cover it
			}
			if bob.CheckMAC1(bad) {
				t.Errorf("byte %d ^%#x: CheckMAC1 accepted", i, mask)
			}
			if _, err := bob.ConsumeInitiation(bad); !isOneOf(err, ErrMalformed, ErrMAC) {
				t.Errorf("byte %d ^%#x: ConsumeInitiation err = %v", i, mask, err)
			}
			if i >= initNoiseOff && i < initMAC1Off {
				if _, err := bob.consumeNoise(bad); !errors.Is(err, ErrHandshake) {
					t.Errorf("byte %d ^%#x: Noise alone accepted, err = %v", i, mask, err)
				}
			}
		}
	}
}

func TestTamperResponse(t *testing.T) {
	alice, bob := newNode(t), newNode(t)
	in, _ := alice.Initiate(bob.PublicKey(), 1, make([]byte, InitiationPayloadLen))
	inc, _ := bob.ConsumeInitiation(in.Message())
	pkt, bkp, _ := inc.Respond(2, seq(ResponsePayloadLen, 5))
	for i := range pkt {
		if _, _, err := in.ConsumeResponse(flip(pkt, i, 0x04)); !isOneOf(err, ErrMalformed, ErrMAC, ErrWrongIndex, ErrHandshake) {
			t.Errorf("byte %d flipped: err = %v", i, err)
		}
		if i < respNoiseOff || i >= respMAC1Off {
			continue
		}
		// With mac1 recomputed, Noise alone must catch it.
		bad := flip(pkt, i, 0x04)
		mac1 := mac128(alice.mac1Key[:], bad[:respMAC1Off])
		copy(bad[respMAC1Off:], mac1[:])
		if _, _, err := in.ConsumeResponse(bad); !errors.Is(err, ErrHandshake) {
			t.Errorf("byte %d flipped, mac1 fixed: err = %v, want ErrHandshake", i, err)
		}
	}
	akp, pay, err := in.ConsumeResponse(pkt)
	if err != nil || !bytes.Equal(pay, seq(ResponsePayloadLen, 5)) {
		t.Fatalf("genuine response after tampered ones: %v", err)
	}
	exchange(t, akp, bkp)
}

func TestRetransmission(t *testing.T) {
	alice, bob := newNode(t), newNode(t)
	in, _ := alice.Initiate(bob.PublicKey(), 7, seq(InitiationPayloadLen, 0))
	m1, m2 := in.Message(), in.Message()
	if !bytes.Equal(m1, m2) {
		t.Fatal("two Message calls without cookie differ")
	}
	if !isZero(m1[initMAC2Off:]) {
		t.Fatal("mac2 set without a cookie")
	}
	m1[0] ^= 0xff // the caller may scribble on what it got
	if !bytes.Equal(in.Message(), m2) {
		t.Fatal("Message shares memory with a previous result")
	}
	id := InitiationID(m2)

	reply, _ := bob.CookieReply(m2, srcA)
	if err := in.ConsumeCookieReply(reply); err != nil {
		t.Fatal(err)
	}
	c1, c2 := in.Message(), in.Message()
	if !bytes.Equal(c1, c2) {
		t.Fatal("two Message calls with cookie differ")
	}
	if !bytes.Equal(c1[:initMAC2Off], m2[:initMAC2Off]) {
		t.Fatal("a cookie changed bytes other than mac2")
	}
	if isZero(c1[initMAC2Off:]) {
		t.Fatal("mac2 zero although a cookie was accepted")
	}
	if InitiationID(c1) != id || id == ([16]byte{}) {
		t.Fatalf("InitiationID changed with mac2 (%x vs %x)", InitiationID(c1), id)
	}
	other, _ := alice.Initiate(bob.PublicKey(), 7, seq(InitiationPayloadLen, 0))
	if InitiationID(other.Message()) == id {
		t.Fatal("two attempts with equal inputs share an InitiationID")
	}
	// The responder can process the retransmission as well as the original.
	for _, m := range [][]byte{m2, c1} {
		if _, err := bob.ConsumeInitiation(m); err != nil {
			t.Fatalf("ConsumeInitiation of a retransmission: %v", err)
		}
	}
}

func TestSeededNodeIsDeterministic(t *testing.T) {
	msg := func() []byte {
		a, b := seededNode(1), seededNode(2)
		in, err := a.Initiate(b.PublicKey(), 1, make([]byte, InitiationPayloadLen))
		if err != nil {
			t.Fatal(err)
		}
		return in.Message()
	}
	if !bytes.Equal(msg(), msg()) {
		t.Fatal("seeded nodes produce different initiations; fuzz seeds would go stale")
	}
}
