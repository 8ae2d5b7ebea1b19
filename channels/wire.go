package channels

import (
	"time"
)

// Datagram header byte: 10LLrrrr. The two high bits are 10 so every
// datagram starts in 0x80–0xBF (docs/ARCHITECTURE.md, "The first byte"),
// LL is the packet number length minus one, rrrr are reserved and must be
// zero.
const (
	headerFixed    = 0x80
	headerFormMask = 0xC0
	headerPNShift  = 4
	headerPNMask   = 0x30
	headerReserved = 0x0F

	maxPacketHeader = 1 + 4
)

// Frame types. Message frames use 0x10–0x1F: the low two bits are the kind
// (the Reliable and Unsequenced flags), then msgFragBit and msgLenBit.
const (
	frameTypePing    = 0x01
	frameTypeAck     = 0x02
	frameTypeMaxData = 0x03
	frameTypeClose   = 0x04
	frameTypeMsg     = 0x10
	frameTypeMsgMask = 0xF0

	msgKindMask = 0x03
	msgFragBit  = 0x04
	msgLenBit   = 0x08
)

// ackDelayExponent scales the ACK delay field: units of 8 µs (RFC 9000).
const ackDelayExponent = 3

// maxAckRanges bounds the ranges decoded from or encoded into one ACK frame.
const maxAckRanges = 64

// pnRange is an inclusive range of packet numbers.
type pnRange struct{ lo, hi uint64 }

// frame is one decoded frame. Data aliases the datagram.
type frame struct {
	typ byte

	// Message frames.
	kind    kind
	frag    bool
	channel uint16
	seq     uint64
	total   uint64 // fragmented: message length
	size    uint64 // fragmented: length of every fragment but the last
	index   uint64 // fragmented: fragment number, from 0
	data    []byte

	// ACK frames: ranges are in the parser's ackRanges, largest first.
	ackDelay time.Duration
	maxData  uint64

	// MAX_DATA limit or CLOSE code.
	value uint64
}

// packetParser decodes datagrams without allocating once warmed up.
type packetParser struct {
	frames    []frame
	ackRanges []pnRange // ranges of the packet's ACK frame, descending
	hasAck    bool
}

// parse decodes a datagram: the truncated packet number, its length and the
// frames. It validates the whole datagram before returning, so a caller
// acts on all of it or none of it.
func (p *packetParser) parse(b []byte) (pnTrunc uint64, pnLen int, err error) {
	p.frames = p.frames[:0]
	p.ackRanges = p.ackRanges[:0]
	p.hasAck = false
	if len(b) < 2 || b[0]&headerFormMask != headerFixed || b[0]&headerReserved != 0 {
		return 0, 0, ErrMalformed
	}
	pnLen = int(b[0]&headerPNMask)>>headerPNShift + 1
	if len(b) < 1+pnLen+1 {
		return 0, 0, ErrMalformed
	}
	for i := 0; i < pnLen; i++ {
		pnTrunc = pnTrunc<<8 | uint64(b[1+i])
	}
	rest := b[1+pnLen:]
	for len(rest) > 0 {
		n, err := p.parseFrame(rest)
		if err != nil {
			return 0, 0, err
		}
		rest = rest[n:]
	}
	return pnTrunc, pnLen, nil
}

func (p *packetParser) parseFrame(b []byte) (int, error) {
	typ := b[0]
	pos := 1
	next := func() (uint64, bool) {
		v, n := readVarint(b[pos:])
		pos += n
		return v, n > 0
	}
	switch {
	case typ == frameTypePing:
		p.frames = append(p.frames, frame{typ: typ})
		return 1, nil

	case typ == frameTypeMaxData || typ == frameTypeClose:
		v, ok := next()
		if !ok {
			return 0, ErrMalformed
		}
		p.frames = append(p.frames, frame{typ: typ, value: v})
		return pos, nil

	case typ == frameTypeAck:
		if p.hasAck {
			return 0, ErrMalformed
		}
		p.hasAck = true
		largest, ok1 := next()
		delay, ok2 := next()
		maxData, ok3 := next()
		count, ok4 := next()
		first, ok5 := next()
		if !(ok1 && ok2 && ok3 && ok4 && ok5) || first > largest || count > maxAckRanges-1 {
			return 0, ErrMalformed
		}
		lo := largest - first
		p.ackRanges = append(p.ackRanges, pnRange{lo, largest})
		for i := uint64(0); i < count; i++ {
			gap, ok1 := next()
			length, ok2 := next()
			if !ok1 || !ok2 || gap+2 > lo {
				return 0, ErrMalformed
			}
			hi := lo - gap - 2
			if length > hi {
				return 0, ErrMalformed
			}
			lo = hi - length
			p.ackRanges = append(p.ackRanges, pnRange{lo, hi})
		}
		if delay > uint64(time.Hour/time.Microsecond)>>ackDelayExponent {
			return 0, ErrMalformed
		}
		p.frames = append(p.frames, frame{
			typ:      typ,
			ackDelay: time.Duration(delay<<ackDelayExponent) * time.Microsecond,
			maxData:  maxData,
		})
		return pos, nil

	case typ&frameTypeMsgMask == frameTypeMsg:
		f := frame{typ: typ, kind: kind(typ & msgKindMask), frag: typ&msgFragBit != 0}
		if f.kind == kind(msgKindMask) {
			return 0, ErrMalformed
		}
		ch, ok := next()
		if !ok || ch > 0xFFFF {
			return 0, ErrMalformed
		}
		f.channel = uint16(ch)
		if f.kind != kindUnsequenced || f.frag {
			if f.seq, ok = next(); !ok {
				return 0, ErrMalformed
			}
		}
		if f.frag {
			total, ok1 := next()
			size, ok2 := next()
			index, ok3 := next()
			if !ok1 || !ok2 || !ok3 || total > maxFragmentedTotal || size < minFragmentSize || size > maxDatagramSize || index >= fragCount(total, size) {
				return 0, ErrMalformed
			}
			f.total, f.size, f.index = total, size, index
		}
		length := uint64(len(b) - pos)
		if typ&msgLenBit != 0 {
			var ok bool
			if length, ok = next(); !ok || length > uint64(len(b)-pos) {
				return 0, ErrMalformed
			}
		}
		if f.frag && length != fragLen(f.total, f.size, f.index) {
			return 0, ErrMalformed
		}
		f.data = b[pos : pos+int(length)]
		p.frames = append(p.frames, f)
		return pos + int(length), nil
	}
	return 0, ErrMalformed
}

// appendHeader appends the datagram header for packet number pn.
func appendHeader(b []byte, pn uint64) []byte {
	n := pnLength(pn)
	b = append(b, headerFixed|byte(n-1)<<headerPNShift)
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(pn>>(8*i)))
	}
	return b
}

// pnLength is the packet number length: the whole number while it fits in
// 31 bits, then its low 32 bits. Unlike QUIC this does not shorten the
// number relative to the largest acknowledged packet: nothing authenticates
// the number at this layer, so a copy delayed past a short window would
// decode to a future number and be acknowledged in that packet's place.
// Four bytes make the window 2^31 packets.
func pnLength(pn uint64) int {
	switch {
	case pn < 1<<7:
		return 1
	case pn < 1<<15:
		return 2
	case pn < 1<<23:
		return 3
	default:
		return 4
	}
}

// decodePN recovers a full packet number. Numbers shorter than four bytes
// are sent whole. Four bytes are the low 32 bits, extended to the value
// nearest the largest packet number received so far (RFC 9000 Appendix
// A.3).
func decodePN(largest uint64, any bool, truncated uint64, pnLen int) uint64 {
	if pnLen < 4 {
		return truncated
	}
	expected := uint64(0)
	if any {
		expected = largest + 1
	}
	const win = uint64(1) << 32
	const half = win / 2
	candidate := (expected &^ (win - 1)) | truncated
	switch {
	case candidate+half <= expected && candidate < 1<<62-win:
		return candidate + win
	case candidate > expected+half && candidate >= win:
		return candidate - win
	}
	return candidate
}

// appendAck appends an ACK frame for ranges (descending, disjoint) using at
// most limit bytes; it returns b unchanged when not even one range fits.
func appendAck(b []byte, ranges []pnRange, delay time.Duration, maxData uint64, limit int) []byte {
	if len(ranges) == 0 {
		return b
	}
	d := uint64(max(delay, 0)/time.Microsecond) >> ackDelayExponent
	start := len(b)
	largest := ranges[0].hi
	b = append(b, frameTypeAck)
	b = appendVarint(b, largest)
	b = appendVarint(b, d)
	b = appendVarint(b, maxData)
	countPos := len(b)
	b = append(b, 0) // range count, at most maxAckRanges-1 fits one byte
	b = appendVarint(b, largest-ranges[0].lo)
	if len(b)-start > limit {
		return b[:start]
	}
	count := 0
	lo := ranges[0].lo
	for _, r := range ranges[1:] {
		if count == maxAckRanges-1 {
			break
		}
		gap := lo - r.hi - 2
		length := r.hi - r.lo
		if len(b)-start+varintLen(gap)+varintLen(length) > limit {
			break
		}
		b = appendVarint(b, gap)
		b = appendVarint(b, length)
		lo = r.lo
		count++
	}
	b[countPos] = byte(count)
	return b
}

// Fragment limits. Every fragment of a message but the last is exactly
// size bytes, so fragments are numbered and a bitmap tracks them.
const (
	maxFragmentedTotal = 1 << 30
	minFragmentSize    = 64

	// maxMsgHeader is the longest message frame header: type, channel (4),
	// seq (8), total (4), size (2... 4), index (4), length (2).
	maxMsgHeader = 1 + 4 + 8 + 4 + 4 + 4 + 2
)

func fragCount(total, size uint64) uint64 { return (total + size - 1) / size }

// fragLen is the length of fragment index of a message of total bytes.
func fragLen(total, size, index uint64) uint64 {
	if index == fragCount(total, size)-1 {
		return total - index*size
	}
	return size
}

// msgHeaderLen is the length of an unfragmented message frame header with a
// length field.
func msgHeaderLen(k kind, channel uint16, seq uint64, length int) int {
	n := 1 + varintLen(uint64(channel)) + varintLen(uint64(length))
	if k != kindUnsequenced {
		n += varintLen(seq)
	}
	return n
}

// fragHeaderLen is the length of a fragment frame header with a length field.
func fragHeaderLen(channel uint16, seq, total, size, index uint64, length int) int {
	return 1 + varintLen(uint64(channel)) + varintLen(seq) + varintLen(total) +
		varintLen(size) + varintLen(index) + varintLen(uint64(length))
}

// appendMsg appends a message frame; for fragments (frag true) total, size
// and index describe the fragment. withLen false lets data run to the end of
// the datagram, so it must be the last frame.
func appendMsg(b []byte, k kind, frag bool, channel uint16, seq, total, size, index uint64, data []byte, withLen bool) []byte {
	typ := byte(frameTypeMsg) | byte(k)
	if frag {
		typ |= msgFragBit
	}
	if withLen {
		typ |= msgLenBit
	}
	b = append(b, typ)
	b = appendVarint(b, uint64(channel))
	if k != kindUnsequenced || frag {
		b = appendVarint(b, seq)
	}
	if frag {
		b = appendVarint(b, total)
		b = appendVarint(b, size)
		b = appendVarint(b, index)
	}
	if withLen {
		b = appendVarint(b, uint64(len(data)))
	}
	return append(b, data...)
}
