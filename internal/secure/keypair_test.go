package secure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/flynn/noise"
)

// keypairPair returns two Keypairs facing each other, built from fixed
// keys without a handshake (the handshake tests cover the derivation).
func keypairPair(t testing.TB) (a, b *Keypair) {
	t.Helper()
	var k1, k2 [keyLen]byte
	copy(k1[:], seq(keyLen, 1))
	copy(k2[:], seq(keyLen, 101))
	a, err := newKeypairFromKeys(k1, k2, 10, 20, true, newNoncePool())
	if err != nil {
		t.Fatal(err)
	}
	b, err = newKeypairFromKeys(k2, k1, 20, 10, false, newNoncePool())
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestSealOpenSizes(t *testing.T) {
	a, b := keypairPair(t)
	for n := 0; n <= 1200; n++ {
		msg := seq(n, byte(n))
		flags := byte(n * 7)
		pkt := sealBytes(t, a, msg, flags)
		if len(pkt) != DataHeaderLen+n+TagLen {
			t.Fatalf("n=%d: packet is %d bytes, want %d", n, len(pkt), DataHeaderLen+n+TagLen)
		}
		if pkt[0] != TypeData || pkt[1] != flags || pkt[2] != 0 || pkt[3] != 0 {
			t.Fatalf("n=%d: header %x", n, pkt[:4])
		}
		if idx, ok := DataReceiverIndex(pkt); !ok || idx != b.LocalIndex() {
			t.Fatalf("n=%d: receiver index %d, %v", n, idx, ok)
		}
		if c := binary.LittleEndian.Uint64(pkt[8:]); c != uint64(n) {
			t.Fatalf("n=%d: counter %d, want %d", n, c, n)
		}
		if n > 8 && bytes.Contains(pkt, msg) {
			t.Fatalf("n=%d: plaintext visible in the packet", n)
		}
		pt, gotFlags, err := b.Open(pkt)
		if err != nil {
			t.Fatalf("n=%d: Open: %v", n, err)
		}
		if !bytes.Equal(pt, msg) || gotFlags != flags {
			t.Fatalf("n=%d: opened %x flags %#x", n, pt, gotFlags)
		}
		if n > 0 && &pt[0] != &pkt[DataHeaderLen] {
			t.Fatalf("n=%d: plaintext is not in place", n)
		}
	}
	if a.Sent() != 1201 {
		t.Fatalf("Sent() = %d, want 1201", a.Sent())
	}
}

func TestSealBuffer(t *testing.T) {
	a, _ := keypairPair(t)
	tests := []struct {
		name    string
		cap, n  int
		wantErr bool
	}{
		{"exact", DataHeaderLen + 10 + TagLen, 10, false},
		{"spare room", 2000, 10, false},
		{"empty payload", DataHeaderLen + TagLen, 0, false},
		{"no room for tag", DataHeaderLen + 10 + TagLen - 1, 10, true},
		{"negative n", 100, -1, true},
		{"tiny buffer", 4, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := a.Sent()
			pkt, err := a.Seal(make([]byte, 0, tt.cap), tt.n, 0)
			if tt.wantErr {
				if !errors.Is(err, ErrShortBuffer) {
					t.Fatalf("err = %v, want ErrShortBuffer", err)
				}
				if a.Sent() != before {
					t.Fatal("a refused Seal used a counter")
				}
				return
			}
			if err != nil || len(pkt) != DataHeaderLen+tt.n+TagLen {
				t.Fatalf("Seal = %d bytes, %v", len(pkt), err)
			}
		})
	}
}

func TestOpenRejects(t *testing.T) {
	a, b := keypairPair(t)
	var k3 [keyLen]byte
	copy(k3[:], seq(keyLen, 200))
	// Same indices as a, different keys: only the tag can tell.
	impostor, err := newKeypairFromKeys(k3, k3, 10, 20, true, newNoncePool())
	if err != nil {
		t.Fatal(err)
	}
	good := sealBytes(t, a, []byte("payload"), 3)
	// reflected is b's own packet addressed back to b: right index, but
	// sealed with b's sending key, not the key b opens with.
	reflected := sealBytes(t, b, []byte("payload"), 0)
	putIndex(reflected[dataReceiverOff:], b.LocalIndex())
	tests := []struct {
		name string
		kp   *Keypair
		pkt  []byte
		want error
	}{
		{"wrong keypair", b, sealBytes(t, impostor, []byte("payload"), 0), ErrAuth},
		{"reflected packet", b, reflected, ErrAuth},
		{"too short", b, good[:DataHeaderLen+TagLen-1], ErrMalformed},
		{"empty", b, nil, ErrMalformed},
		{"wrong type", b, flip(good, 0, 0x01), ErrMalformed},
		{"reserved set", b, flip(good, 3, 0x01), ErrMalformed},
		{"wrong receiver", b, flip(good, dataReceiverOff, 0x01), ErrWrongIndex},
		{"other keypair's index", a, bytes.Clone(good), ErrWrongIndex},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := tt.kp.Open(tt.pkt); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if _, _, err := b.Open(good); err != nil {
		t.Fatalf("the untouched packet no longer opens: %v", err)
	}
}

func TestOpenReplay(t *testing.T) {
	a, b := keypairPair(t)
	pkt := sealBytes(t, a, []byte("once"), 0)
	replay := bytes.Clone(pkt)
	if _, _, err := b.Open(pkt); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Open(replay); !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed packet: err = %v, want ErrReplay", err)
	}
	// A forged packet with a fresh counter must not move the window.
	forged := bytes.Clone(replay)
	binary.LittleEndian.PutUint64(forged[dataCounterOff:], 1<<40)
	if _, _, err := b.Open(forged); !errors.Is(err, ErrAuth) {
		t.Fatalf("forged counter: err = %v, want ErrAuth", err)
	}
	next := sealBytes(t, a, []byte("twice"), 0) // counter 1, far below 1<<40
	if _, _, err := b.Open(next); err != nil {
		t.Fatalf("a forged counter moved the window: %v", err)
	}
}

func TestCounterLimit(t *testing.T) {
	a, b := keypairPair(t)
	a.sendCounter.Store(rejectAfterMessages - 1)
	last := sealBytes(t, a, []byte("last"), 0)
	if c := binary.LittleEndian.Uint64(last[dataCounterOff:]); c != rejectAfterMessages-1 {
		t.Fatalf("last counter = %d", c)
	}
	for i := 0; i < 3*(1<<13); i++ { // well past the slack before 2^64
		if _, err := a.Seal(make([]byte, 0, 64), 0, 0); !errors.Is(err, ErrCounterExhausted) {
			t.Fatalf("Seal %d past the limit: err = %v", i, err)
		}
	}
	if a.Sent() != rejectAfterMessages {
		t.Fatalf("Sent() = %d, want RejectAfterMessages", a.Sent())
	}
	if _, _, err := b.Open(last); err != nil {
		t.Fatalf("counter RejectAfterMessages-1 must open: %v", err)
	}
	// An authentic packet at the limit, sealed by hand, is still refused.
	for _, ctr := range []uint64{rejectAfterMessages, rejectAfterMessages + 1, ^uint64(0)} {
		pkt := sealAt(a, ctr, []byte("x"))
		if _, _, err := b.Open(pkt); !errors.Is(err, ErrReplay) {
			t.Errorf("counter %d: err = %v, want ErrReplay", ctr, err)
		}
	}
}

// sealAt seals like Seal but with a chosen counter.
func sealAt(kp *Keypair, ctr uint64, pt []byte) []byte {
	buf := make([]byte, DataHeaderLen, DataHeaderLen+len(pt)+TagLen)
	buf[0] = TypeData
	putIndex(buf[dataReceiverOff:], kp.remoteIndex)
	binary.LittleEndian.PutUint64(buf[dataCounterOff:], ctr)
	n := kp.nonce(ctr)
	defer kp.nonces.Put(n)
	return kp.send.Seal(buf, n[:], pt, buf[:DataHeaderLen])
}

func TestTamperData(t *testing.T) {
	a, b := keypairPair(t)
	for _, size := range []int{0, 1, 64} {
		n := DataHeaderLen + size + TagLen
		for i := 0; i < n; i++ {
			pkt := sealBytes(t, a, seq(size, 1), 0x5a)
			if _, _, err := b.Open(flip(pkt, i, 0x20)); !isOneOf(err, ErrMalformed, ErrWrongIndex, ErrReplay, ErrAuth) {
				t.Errorf("size %d, byte %d flipped: err = %v", size, i, err)
			}
		}
	}
}

// TestDataMatchesNoiseCipher shows the data path is ChaCha20-Poly1305 as
// flynn/noise's CipherState.Cipher() runs it, nonce layout included.
func TestDataMatchesNoiseCipher(t *testing.T) {
	suite := noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)
	var k1, k2 [keyLen]byte
	copy(k1[:], seq(keyLen, 50))
	copy(k2[:], seq(keyLen, 150))
	a, err := newKeypair(noise.UnsafeNewCipherState(suite, k1, 0), noise.UnsafeNewCipherState(suite, k2, 0), 1, 2, true, newNoncePool())
	if err != nil {
		t.Fatal(err)
	}
	toA := noise.UnsafeNewCipherState(suite, k2, 0).Cipher()
	fromA := noise.UnsafeNewCipherState(suite, k1, 0).Cipher()
	for i := 0; i < 3; i++ {
		pkt := sealBytes(t, a, []byte("hello noise"), byte(i))
		pt, err := fromA.Decrypt(nil, uint64(i), pkt[:DataHeaderLen], pkt[DataHeaderLen:])
		if err != nil || string(pt) != "hello noise" {
			t.Fatalf("noise Cipher cannot open packet %d: %v", i, err)
		}
	}
	hdr := []byte{TypeData, 9, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0}
	pkt := toA.Encrypt(bytes.Clone(hdr), 7, hdr, []byte("from noise"))
	pt, flags, err := a.Open(pkt)
	if err != nil || string(pt) != "from noise" || flags != 9 {
		t.Fatalf("Open of a noise Cipher packet = %q, %d, %v", pt, flags, err)
	}
}

func TestSealOpenConcurrent(t *testing.T) {
	a, b := keypairPair(t)
	const workers, each = 4, 500
	pkts := make(chan []byte, 2*workers*each)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				buf := make([]byte, DataHeaderLen+8, DataHeaderLen+8+TagLen)
				pkt, err := a.Seal(buf, 8, 0)
				if err != nil {
					t.Error(err)
					return
				}
				pkts <- pkt
				pkts <- bytes.Clone(pkt) // a duplicate of every packet
			}
		}()
	}
	wg.Wait()
	close(pkts)

	var mu sync.Mutex
	seen := make(map[uint64]int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pkt := range pkts {
				ctr := binary.LittleEndian.Uint64(pkt[dataCounterOff:])
				_, _, err := b.Open(pkt)
				if err != nil && !errors.Is(err, ErrReplay) {
					t.Errorf("counter %d: %v", ctr, err)
				}
				if err == nil {
					mu.Lock()
					seen[ctr]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(seen) != workers*each {
		t.Fatalf("%d distinct counters opened, want %d", len(seen), workers*each)
	}
	for ctr, n := range seen {
		if n != 1 || ctr >= workers*each {
			t.Fatalf("counter %d opened %d times", ctr, n)
		}
	}
}

func TestSealOpenDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	a, b := keypairPair(t)
	buf := make([]byte, DataHeaderLen+1200+TagLen)
	if n := testing.AllocsPerRun(200, func() {
		if _, err := a.Seal(buf, 1200, 0); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Seal allocates %.1f times per call", n)
	}
	pkts := make([][]byte, 300)
	for i := range pkts {
		pkts[i] = sealBytes(t, a, seq(64, 0), 0)
	}
	i := 0
	if n := testing.AllocsPerRun(200, func() {
		if _, _, err := b.Open(pkts[i]); err != nil {
			t.Fatal(err)
		}
		i++
	}); n != 0 {
		t.Errorf("Open allocates %.1f times per call", n)
	}
	bad := flip(pkts[299], 40, 1)
	if n := testing.AllocsPerRun(100, func() { b.Open(bad) }); n != 0 {
		t.Errorf("rejecting a packet allocates %.1f times", n)
	}
}
