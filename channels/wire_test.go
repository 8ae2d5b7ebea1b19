package channels

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
	"testing/synctest"
	"time"
)

func TestVarint(t *testing.T) {
	for _, tc := range []struct {
		v   uint64
		hex string
	}{
		{0, "00"}, {37, "25"}, {63, "3f"}, {64, "4040"}, {15293, "7bbd"}, {16383, "7fff"},
		{16384, "80004000"}, {494878333, "9d7f3e7d"}, {1<<30 - 1, "bfffffff"},
		{1 << 30, "c000000040000000"}, {151288809941952652, "c2197c5eff14e88c"}, {maxVarint, "ffffffffffffffff"},
	} {
		b := appendVarint(nil, tc.v)
		if hex.EncodeToString(b) != tc.hex || varintLen(tc.v) != len(b) {
			t.Errorf("%d: %x (len %d), want %s", tc.v, b, varintLen(tc.v), tc.hex)
		}
		v, n := readVarint(b)
		if v != tc.v || n != len(b) {
			t.Errorf("read %x: %d, %d", b, v, n)
		}
		if _, n := readVarint(b[:len(b)-1]); n != 0 {
			t.Errorf("truncated %x read", b)
		}
	}
}

// TestDecodePN uses RFC 9000 Appendix A.3's example and the edges of the
// window.
func TestDecodePN(t *testing.T) {
	// RFC 9000 A.3's example, with 32 bits instead of 16.
	if got := decodePN(0x2f30ea, true, 0x2f9b32, 4); got != 0x2f9b32 {
		t.Errorf("below 2^31: %x", got)
	}
	if got := decodePN(0x1a82f30ea, true, 0xa82f9b32, 4); got != 0x1a82f9b32 {
		t.Errorf("extended: %x", got)
	}
	if got := decodePN(0x200000010, true, 0xfffffff0, 4); got != 0x1fffffff0 {
		t.Errorf("across a 2^32 boundary: %x", got)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		largest := 1<<31 + rng.Uint64N(1<<40)
		// A packet up to 2^31 below or above the largest received decodes.
		pn := largest + uint64(rng.Int64N(1<<31)) - 1<<30
		n := pnLength(pn)
		trunc := pn & (1<<(8*n) - 1)
		if got := decodePN(largest, true, trunc, n); got != pn {
			t.Fatalf("largest %d pn %d (len %d): got %d", largest, pn, n, got)
		}
	}
	// Numbers below 2^31 are sent whole: an old one decodes to itself
	// however far behind it arrives.
	for _, pn := range []uint64{5, 300, 70000, 1 << 24, 1<<31 - 1} {
		n := pnLength(pn)
		if got := decodePN(1<<31+100000, true, pn&(1<<(8*n)-1), n); got != pn {
			t.Errorf("whole number %d: %d", pn, got)
		}
	}
	if got := decodePN(0, false, 0x1234, 2); got != 0x1234 {
		t.Errorf("first packet: %x", got)
	}
}

// TestGoldenDatagram checks the byte layout documented in doc.go.
func TestGoldenDatagram(t *testing.T) {
	b := appendHeader(nil, 5)
	b = appendMsg(b, kindReliable, false, 3, 0, 0, 0, 0, []byte("hi"), false)
	if got := hex.EncodeToString(b); got != "800511030068"+"69" {
		t.Fatalf("got %s", got)
	}
	var p packetParser
	pn, n, err := p.parse(b)
	if err != nil || pn != 5 || n != 1 || len(p.frames) != 1 {
		t.Fatalf("parse: %v %d %d %d", err, pn, n, len(p.frames))
	}
	f := p.frames[0]
	if f.kind != kindReliable || f.channel != 3 || f.seq != 0 || string(f.data) != "hi" {
		t.Fatalf("frame %+v", f)
	}

	// A fragment with a length, after an ACK, with a 3-byte packet number.
	b = appendHeader(nil, 0x123456)
	b = appendAck(b, []pnRange{{10, 12}, {2, 5}}, 800*time.Microsecond, 70000, 100)
	b = appendMsg(b, kindSequenced, true, 300, 7, 2000, 1000, 1, make([]byte, 1000), true)
	want := "a0123456" + // header LL=2, pn
		"02" + "0c" + "4064" + "80011170" + "01" + "02" + "03" + "03" + // ACK: largest 12, delay 100 (800µs/8), max 70000, 1 more range, first 2, gap 3, length 3
		"1c" + "412c" + "07" + "47d0" + "43e8" + "01" + "43e8" // MSG seq frag+len: channel 300, seq 7, total 2000, size 1000, index 1, length 1000
	if got := hex.EncodeToString(b[:len(b)-1000]); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if _, _, err := p.parse(b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p.ackRanges, []pnRange{{10, 12}, {2, 5}}) {
		t.Fatalf("ack ranges %v", p.ackRanges)
	}
	if f := p.frames[0]; f.ackDelay != 800*time.Microsecond || f.maxData != 70000 {
		t.Fatalf("ack %+v", f)
	}
	if f := p.frames[1]; f.channel != 300 || f.seq != 7 || f.total != 2000 || f.size != 1000 || f.index != 1 || len(f.data) != 1000 {
		t.Fatalf("fragment %+v", f)
	}
}

func TestParseRejects(t *testing.T) {
	ok := appendHeader(nil, 1)
	for name, b := range map[string][]byte{
		"empty":               nil,
		"header only":         {0x80, 1},
		"form bits 00":        {0x00, 1, 1},
		"form bits 11":        {0xC0, 1, 1},
		"reserved bit":        {0x81, 1, 1},
		"short pn":            {0xB0, 1, 1},
		"unknown frame":       append(ok, 0x05),
		"kind 11":             append(ok, 0x13, 0, 0),
		"channel too large":   append(ok, 0x11, 0x80, 0x01, 0x00, 0x00, 0),
		"truncated varint":    append(ok, 0x03, 0x40),
		"length past end":     append(ok, 0x19, 0, 0, 5, 1, 2),
		"two acks":            appendAck(appendAck(append([]byte(nil), ok...), []pnRange{{0, 0}}, 0, 0, 50), []pnRange{{0, 0}}, 0, 0, 50),
		"ack first > largest": append(ok, 0x02, 3, 0, 0, 0, 4),
		"ack gap underflow":   append(ok, 0x02, 3, 0, 0, 1, 0, 5, 0),
		"fragment size < 64":  appendMsg(append([]byte(nil), ok...), kindReliable, true, 0, 0, 200, 10, 0, make([]byte, 10), true),
		"index past count":    appendMsg(append([]byte(nil), ok...), kindReliable, true, 0, 0, 200, 100, 2, make([]byte, 100), true),
		"fragment wrong size": appendMsg(append([]byte(nil), ok...), kindReliable, true, 0, 0, 200, 100, 1, make([]byte, 99), true),
		"last fragment short": appendMsg(append([]byte(nil), ok...), kindReliable, true, 0, 0, 250, 100, 2, make([]byte, 49), true),
		"total too large":     appendMsg(append([]byte(nil), ok...), kindReliable, true, 0, 0, 1<<31, 1000, 0, make([]byte, 1000), true),
	} {
		var p packetParser
		if _, _, err := p.parse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s (% x): %v", name, b, err)
		}
	}
}

func TestAckLimit(t *testing.T) {
	var ranges []pnRange
	for i := uint64(100); i > 0; i-- {
		ranges = append(ranges, pnRange{i * 10, i*10 + 3})
	}
	b := appendAck(nil, ranges, 0, 0, 40)
	if len(b) > 40 || len(b) == 0 {
		t.Fatalf("%d bytes for a 40-byte limit", len(b))
	}
	var p packetParser
	if _, _, err := p.parse(append([]byte{0x80, 0}, b...)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p.ackRanges, ranges[:len(p.ackRanges)]) {
		t.Fatalf("decoded %v", p.ackRanges)
	}
	if b := appendAck(nil, ranges, 0, 1<<40, 5); len(b) != 0 {
		t.Fatalf("ack in 5 bytes: %x", b)
	}
	b = appendAck(nil, ranges, 0, 0, 2000)
	if _, _, err := p.parse(append([]byte{0x80, 0}, b...)); err != nil || len(p.ackRanges) != maxAckRanges {
		t.Fatalf("%v: %d ranges", err, len(p.ackRanges))
	}
}

// encodeFrames writes parsed frames back out, for round-trip checks.
func encodeFrames(p *packetParser, pn uint64) []byte {
	b := appendHeader(nil, pn)
	for i, f := range p.frames {
		switch {
		case f.typ == frameTypePing:
			b = append(b, frameTypePing)
		case f.typ == frameTypeMaxData || f.typ == frameTypeClose:
			b = appendVarint(append(b, f.typ), f.value)
		case f.typ == frameTypeAck:
			b = appendAck(b, p.ackRanges, f.ackDelay, f.maxData, 1<<20)
		default:
			last := i == len(p.frames)-1
			b = appendMsg(b, f.kind, f.frag, f.channel, f.seq, f.total, f.size, f.index, f.data, !last)
		}
	}
	return b
}

func FuzzParse(f *testing.F) {
	f.Add([]byte{0x80, 0x05, 0x11, 0x03, 0x00, 0x68, 0x69})
	f.Add(append(appendAck([]byte{0x80, 0}, []pnRange{{10, 12}, {2, 5}}, 0, 70000, 100), 0x01))
	f.Add(appendMsg(appendHeader(nil, 77), kindSequenced, true, 300, 7, 2000, 1000, 1, make([]byte, 1000), true))
	f.Add([]byte{0xB0, 0, 0, 0, 1, 0x04, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p packetParser
		pn, n, err := p.parse(b)
		if err != nil {
			return
		}
		// Whatever parses must survive a round trip unchanged.
		first := append([]frame(nil), p.frames...)
		ranges := append([]pnRange(nil), p.ackRanges...)
		for i := range first {
			first[i].data = bytes.Clone(first[i].data)
		}
		out := encodeFrames(&p, pn)
		var q packetParser
		pn2, _, err := q.parse(out)
		if err != nil {
			t.Fatalf("re-encoded datagram does not parse: %v\nin  %x\nout %x", err, b, out)
		}
		if n == pnLength(pn) && pn2 != pn {
			t.Fatalf("pn %d became %d", pn, pn2)
		}
		for i := range first {
			// The ack delay loses its low bits; compare the encoded unit.
			first[i].typ &^= msgLenBit
			q.frames[i].typ &^= msgLenBit
			if len(first[i].data) == 0 {
				first[i].data = nil
			}
			if len(q.frames[i].data) == 0 {
				q.frames[i].data = nil
			}
		}
		if !reflect.DeepEqual(first, q.frames) || !reflect.DeepEqual(ranges, q.ackRanges) {
			t.Fatalf("round trip changed frames\nin  %+v %v\nout %+v %v", first, ranges, q.frames, q.ackRanges)
		}
	})
}

func FuzzVarint(f *testing.F) {
	f.Add([]byte{0x25})
	f.Add([]byte{0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, n := readVarint(b)
		if n == 0 {
			return
		}
		if v > maxVarint || n > len(b) {
			t.Fatalf("%x: %d, %d", b, v, n)
		}
		// Re-encoding gives the shortest form, which reads back the same.
		if w, m := readVarint(appendVarint(nil, v)); w != v || m != varintLen(v) || m > n {
			t.Fatalf("%x: %d re-encodes to %d (%d bytes)", b, v, w, m)
		}
	})
}

// FuzzConn feeds a Conn a sequence of hostile datagrams (each prefixed by a
// one-byte length in the fuzz input) and checks it neither panics nor holds
// more than its configured bounds.
func FuzzConn(f *testing.F) {
	seed := func(dgrams ...[]byte) []byte {
		var in []byte
		for _, d := range dgrams {
			in = append(in, byte(len(d)))
			in = append(in, d...)
		}
		return in
	}
	h := func(pn uint64) []byte { return appendHeader(nil, pn) }
	f.Add(seed(
		appendMsg(h(0), kindReliable, false, 1, 1, 0, 0, 0, []byte("second"), false),
		appendMsg(h(1), kindReliable, false, 1, 0, 0, 0, 0, []byte("first"), false),
	))
	f.Add(seed(
		appendMsg(h(0), kindReliable, true, 2, 0, 130, 64, 1, make([]byte, 64), true),
		appendMsg(h(1), kindReliable, true, 2, 0, 130, 64, 2, make([]byte, 2), true),
		appendMsg(h(2), kindReliable, true, 2, 0, 130, 64, 0, make([]byte, 64), true),
	))
	f.Add(seed(
		appendMsg(h(5), kindSequenced, true, 3, 9, 100, 64, 1, make([]byte, 36), true),
		appendMsg(h(3), kindSequenced, false, 3, 10, 0, 0, 0, []byte("newer"), false),
		appendMsg(h(4), kindUnsequenced, true, 3, 9, 100, 64, 0, make([]byte, 64), true),
	))
	f.Add(seed(appendAck(h(7), []pnRange{{0, 0}}, 0, 1<<30, 50), []byte{0x80, 8, frameTypeMaxData, 0x44}))
	f.Fuzz(func(t *testing.T, in []byte) {
		synctest.Test(t, func(t *testing.T) {
			var delivered int
			c, err := New(discard, Config{
				MaxReliableSize: 64 << 10, ReceiveWindow: 128 << 10, SendQueueBytes: 64 << 10,
				MaxUnreliableSize: 8 << 10, ReassemblyBytes: 16 << 10,
				Deliver: func(m Message) { delivered += len(m.Data) },
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Send(0, []byte("outgoing"), Reliable|FlushHint) // something to acknowledge
			for len(in) > 0 {
				n := min(int(in[0]), len(in)-1)
				c.HandleDatagram(in[1 : 1+n])
				in = in[1+n:]
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.charged > c.maxDataLimit() {
				t.Fatalf("charged %d past the window %d", c.charged, c.maxDataLimit())
			}
			if c.partialBytes > c.cfg.ReassemblyBytes || c.partialBytes < 0 {
				t.Fatalf("reassembly holds %d", c.partialBytes)
			}
			held := uint64(0)
			for _, rc := range c.recvChans {
				for _, m := range rc.pending {
					held += m.cost
				}
			}
			if held != c.charged-c.released {
				t.Fatalf("holding %d of window, accounts say %d", held, c.charged-c.released)
			}
		})
	})
}
