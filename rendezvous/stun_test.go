package rendezvous

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestSTUNLargeRequests: a request padded past a 1500-byte buffer
// (turnutils_natdiscovery -P adds 1500 bytes of PADDING: 1524 in all) and
// one of exactly 2048 bytes are read whole and answered with every
// attribute; a datagram longer than 2048 bytes is dropped and counted
// (Oversized), not parsed cut short.
func TestSTUNLargeRequests(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, true)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, size := range []int{1524, maxDatagram} {
		req := stunRequest(t, size, 0)
		if len(req) != size {
			t.Fatalf("request of %d bytes, want %d", len(req), size)
		}
		m, _, ok := stunExchange(t, conn, req, s.Addr())
		if !ok {
			t.Fatalf("no answer to a %d-byte request", size)
		}
		var xa stun.XORMappedAddress
		var other stun.OtherAddress
		var origin stun.ResponseOrigin
		if xa.GetFrom(m) != nil || other.GetFrom(m) != nil || origin.GetFrom(m) != nil || stun.Fingerprint.Check(m) != nil {
			t.Errorf("%d-byte request: attributes missing from %v", size, m)
		}
	}

	before := s.Stats()
	conn.WriteToUDPAddrPort(stunRequest(t, 3000, 0), s.Addr())
	// The bare request after it is answered once the server has read both
	// (one socket, one reader, in order).
	if _, _, ok := stunExchange(t, conn, stunRequest(t, 0, 0), s.Addr()); !ok {
		t.Fatal("no answer to the request after the oversized one")
	}
	after := s.Stats()
	if after.Oversized != before.Oversized+1 || after.STUNAnswered != before.STUNAnswered+1 || after.STUNDropped != before.STUNDropped {
		t.Fatalf("oversized %d→%d, answered %d→%d, STUN dropped %d→%d; want one oversized, one answered",
			before.Oversized, after.Oversized, before.STUNAnswered, after.STUNAnswered, before.STUNDropped, after.STUNDropped)
	}
}

// classicRequest is an RFC 3489 Binding request: no magic cookie, a
// random 16-byte transaction ID, then attrs (whole TLVs).
func classicRequest(t *testing.T, attrs ...[]byte) []byte {
	t.Helper()
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b, classicBindingRequest)
	rand.Read(b[4:20])
	b[4] &^= 0x20 // never the magic cookie by chance
	for _, a := range attrs {
		b = append(b, a...)
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)-20))
	return b
}

func classicAttr(typ uint16, v []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// classicExchange sends req and reads the answer's addresses by
// attribute type, checking its header and size; ok is false without one.
func classicExchange(t *testing.T, conn *net.UDPConn, req []byte, to netip.AddrPort) (attrs map[uint16]netip.AddrPort, from netip.AddrPort, n int, ok bool) {
	t.Helper()
	conn.WriteToUDPAddrPort(req, to)
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 1500)
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, from, 0, false
	}
	b := buf[:n]
	if n > max(len(req), stunAnswerFloor) {
		t.Errorf("answer of %d bytes to a request of %d", n, len(req))
	}
	if n < 20 || binary.BigEndian.Uint16(b) != classicBindingResponse || int(binary.BigEndian.Uint16(b[2:])) != n-20 || !bytes.Equal(b[4:20], req[4:20]) {
		t.Fatalf("not an RFC 3489 Binding response to the request: %x", b)
	}
	attrs = map[uint16]netip.AddrPort{}
	for a := b[20:]; len(a) > 0; {
		typ, l := binary.BigEndian.Uint16(a), int(binary.BigEndian.Uint16(a[2:]))
		v := a[4 : 4+l]
		ip, _ := netip.AddrFromSlice(v[4:])
		attrs[typ] = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(v[2:]))
		a = a[4+l:]
	}
	return attrs, from, n, true
}

// TestSTUNClassic: RFC 3489 Binding requests (no magic cookie, as Debian's
// stun client sends) are answered with MAPPED-ADDRESS, CHANGED-ADDRESS and,
// when the request leaves room, SOURCE-ADDRESS, within 44 bytes or the
// request's size; CHANGE-REQUEST is honoured with four sockets, and with
// no flags set on a one-address server too; RESPONSE-ADDRESS and bad
// framing are dropped and counted.
func TestSTUNClassic(t *testing.T) {
	leakcheck.Check(t)
	s := startServer(t, true)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	me := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	change := func(flags byte) []byte { return classicAttr(classicChangeRequest, []byte{0, 0, 0, flags}) }

	attrs, from, n, ok := classicExchange(t, conn, classicRequest(t), s.Addr())
	if !ok || from != s.Addr() || n != stunAnswerFloor || attrs[classicMappedAddress] != me || attrs[classicChangedAddress] != s.addrs[1] {
		t.Fatalf("bare request: %v from %v (%d bytes); want MAPPED-ADDRESS %v and CHANGED-ADDRESS %v in %d bytes",
			attrs, from, n, me, s.addrs[1], stunAnswerFloor)
	}
	// Room for all three (an RFC 3489 request padded with a
	// comprehension-optional attribute).
	big := classicRequest(t, change(0), classicAttr(0x8022, make([]byte, 40)))
	if attrs, _, _, ok := classicExchange(t, conn, big, s.Addr()); !ok || attrs[classicSourceAddress] != s.Addr() || attrs[classicChangedAddress] != s.addrs[1] {
		t.Fatalf("padded request: %v", attrs)
	}
	for _, tc := range []struct {
		flags byte
		want  netip.AddrPort
	}{
		{changeIPFlag | changePortFlag, s.addrs[1]},
		{changePortFlag, s.addrs[2]},
		{changeIPFlag, s.addrs[3]},
	} {
		attrs, from, _, ok := classicExchange(t, conn, classicRequest(t, change(tc.flags)), s.Addr())
		if !ok || from != tc.want || attrs[classicMappedAddress] != me {
			t.Errorf("change %#x: %v from %v, want from %v", tc.flags, attrs, from, tc.want)
		}
	}
	// The request Debian's client sends to the changed IP (test I(2)):
	// its CHANGED-ADDRESS is relative to the socket it reached.
	if attrs, from, _, ok := classicExchange(t, conn, classicRequest(t, change(0)), s.addrs[3]); !ok || from != s.addrs[3] || attrs[classicChangedAddress] != s.addrs[2] {
		t.Errorf("at the alternate IP: %v from %v", attrs, from)
	}

	one := startServer(t, false)
	if attrs, _, _, ok := classicExchange(t, conn, classicRequest(t, change(0)), one.Addr()); !ok || attrs[classicMappedAddress] != me || attrs[classicSourceAddress] != one.Addr() {
		t.Errorf("one-address server, no flags: %v", attrs)
	}

	before, beforeOne := s.Stats(), one.Stats()
	respAddr := classicAttr(classicResponseAddress, []byte{0, 1, 0x30, 0x39, 198, 51, 100, 7})
	badLen := classicRequest(t, change(0))
	binary.BigEndian.PutUint16(badLen[2:], 4)
	truncated := classicRequest(t, classicAttr(classicChangeRequest, []byte{0, 0, 0, 0, 0, 0, 0, 0})[:6])
	for _, b := range [][]byte{classicRequest(t, respAddr), badLen, truncated, classicRequest(t, classicAttr(classicChangeRequest, []byte{0, 0, 6}))} {
		conn.WriteToUDPAddrPort(b, s.Addr())
	}
	conn.WriteToUDPAddrPort(classicRequest(t, change(changePortFlag)), one.Addr())
	// A good request after them: its answer must be the first to come
	// (classicExchange checks the transaction ID), and by then the
	// servers have read the others (one reader per socket, in order).
	if _, _, _, ok := classicExchange(t, conn, classicRequest(t), s.Addr()); !ok {
		t.Fatal("no answer to the good request after the bad ones")
	}
	if _, _, _, ok := classicExchange(t, conn, classicRequest(t), one.Addr()); !ok {
		t.Fatal("no answer from the one-address server after its bad request")
	}
	if got := s.Stats().STUNDropped - before.STUNDropped; got != 4 {
		t.Errorf("%d dropped, want 4", got)
	}
	if got := one.Stats().STUNDropped - beforeOne.STUNDropped; got != 1 {
		t.Errorf("one-address server: %d dropped, want 1", got)
	}
}
