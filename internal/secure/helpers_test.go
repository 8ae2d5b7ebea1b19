package secure

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// fakeClock is a manual clock for cookie and rate limiter tests.
type fakeClock struct{ t time.Time }

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

// testNode is a Handshaker with its own fake clock.
type testNode struct {
	*Handshaker
	priv  PrivateKey
	clock *fakeClock
}

func newNode(t testing.TB) *testNode {
	t.Helper()
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return nodeFromKey(priv)
}

func nodeFromKey(priv PrivateKey) *testNode {
	h := NewHandshaker(priv)
	c := newFakeClock()
	h.now = c.Now
	return &testNode{Handshaker: h, priv: priv, clock: c}
}

// seededNode is a node whose keys and randomness come from seed, so that
// its messages are the same in every run (fuzz seeds rely on that).
func seededNode(seed uint64) *testNode {
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'g', 'w'})
	priv, _ := generateKey(rng)
	n := nodeFromKey(priv)
	n.random = rng
	return n
}

func payloadOf(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }

var (
	srcA = netip.MustParseAddrPort("198.51.100.7:40000")
	srcB = netip.MustParseAddrPort("203.0.113.9:40000")
)

// session is the outcome of a full handshake between two nodes.
type session struct {
	in          *Initiation
	incoming    *IncomingInitiation
	initKP      *Keypair
	respKP      *Keypair
	respPay     []byte
	responsePkt []byte
}

// handshake runs initiator → responder → initiator and fails the test on
// any error.
func handshake(t testing.TB, ini, resp *testNode, iIdx, rIdx uint32) session {
	t.Helper()
	in, err := ini.Initiate(resp.PublicKey(), iIdx, payloadOf(InitiationPayloadLen, 0xA1))
	if err != nil {
		t.Fatalf("Initiate: %v", err)
	}
	msg := in.Message()
	if !resp.CheckMAC1(msg) {
		t.Fatal("CheckMAC1 rejected a fresh initiation")
	}
	inc, err := resp.ConsumeInitiation(msg)
	if err != nil {
		t.Fatalf("ConsumeInitiation: %v", err)
	}
	pkt, rkp, err := inc.Respond(rIdx, payloadOf(ResponsePayloadLen, 0xB2))
	if err != nil {
		t.Fatalf("Respond: %v", err)
	}
	ikp, pay, err := in.ConsumeResponse(pkt)
	if err != nil {
		t.Fatalf("ConsumeResponse: %v", err)
	}
	return session{in: in, incoming: inc, initKP: ikp, respKP: rkp, respPay: pay, responsePkt: pkt}
}

// sealBytes seals a copy of pt with kp and returns the packet.
func sealBytes(t testing.TB, kp *Keypair, pt []byte, flags byte) []byte {
	t.Helper()
	buf := make([]byte, DataHeaderLen+len(pt), DataHeaderLen+len(pt)+TagLen)
	copy(buf[DataHeaderLen:], pt)
	pkt, err := kp.Seal(buf, len(pt), flags)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return pkt
}

// isOneOf reports whether err matches one of targets.
func isOneOf(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

func flip(pkt []byte, i int, mask byte) []byte {
	c := bytes.Clone(pkt)
	c[i] ^= mask
	return c
}
