package rendezvous

import (
	"encoding/binary"
	"net/netip"

	"github.com/pion/stun/v3"
)

// STUN answering (RFC 5389 Binding, RFC 5780 behaviour discovery). The
// four sockets of an RFC 5780 group are (primary IP, primary port),
// (alternate IP, alternate port), (primary IP, alternate port) and
// (alternate IP, primary port), in that order in Conns: sockIPPort gives
// each role's pair of "is it the alternate" bits.
var sockIPPort = [4][2]int{{0, 0}, {1, 1}, {0, 1}, {1, 0}}

func sockFor(ip, port int) int {
	for i, v := range sockIPPort {
		if v[0] == ip && v[1] == port {
			return i
		}
	}
	return 0
}

// sockGroup is a socket's place among the server's sockets: the index in
// conns of its group's primary socket, and its role in the group
// (sockIPPort's index). A group is four sockets (RFC 5780, square set) or
// one; each is of one address family, so an answer to an IPv6 request
// names and leaves from IPv6 addresses only.
type sockGroup struct {
	base, role int
	square     bool
}

// groupSockets splits the server's addresses into groups, in order: a
// socket followed by three that complete its RFC 5780 square (another IP
// of the same family, another port: see ServerConfig.Conns) starts a
// group of four, any other socket is a group of its own.
func groupSockets(addrs []netip.AddrPort) []sockGroup {
	g := make([]sockGroup, len(addrs))
	for i := 0; i < len(addrs); {
		if i+4 <= len(addrs) && isSquare(addrs[i:i+4]) {
			for r := range 4 {
				g[i+r] = sockGroup{base: i, role: r, square: true}
			}
			i += 4
			continue
		}
		g[i] = sockGroup{base: i}
		i++
	}
	return g
}

// isSquare reports whether a holds the four addresses of an RFC 5780
// group in Conns' order.
func isSquare(a []netip.AddrPort) bool {
	p, alt := a[0], a[1]
	return p.Addr().Is4() == alt.Addr().Is4() && p.Addr() != alt.Addr() && p.Port() != alt.Port() &&
		!p.Addr().IsUnspecified() && !alt.Addr().IsUnspecified() &&
		a[2] == netip.AddrPortFrom(p.Addr(), alt.Port()) && a[3] == netip.AddrPortFrom(alt.Addr(), p.Port())
}

// groupSock is the socket of sock's group with the given "is it the
// alternate" bits.
func (s *Server) groupSock(sock, ip, port int) int {
	return s.groups[sock].base + sockFor(ip, port)
}

// otherAddr is the address that differs from sock's in both IP and port
// (OTHER-ADDRESS, RFC 3489's CHANGED-ADDRESS); false without an RFC 5780
// group.
func (s *Server) otherAddr(sock int) (netip.AddrPort, bool) {
	g := s.groups[sock]
	if !g.square {
		return netip.AddrPort{}, false
	}
	ipPort := sockIPPort[g.role]
	return s.addrs[s.groupSock(sock, ipPort[0]^1, ipPort[1]^1)], true
}

// CHANGE-REQUEST flags (RFC 5780 §7.2).
const (
	changeIPFlag   = 0x04
	changePortFlag = 0x02
)

// handleSTUN answers a Binding request with the source address it came
// from. The answer never has more bytes than the request or
// stunAnswerFloor, whichever is more: attributes are added in order of use
// (XOR-MAPPED-ADDRESS, OTHER-ADDRESS, RESPONSE-ORIGIN, FINGERPRINT) while
// they fit. Clients that want all of them pad their requests (PADDING,
// RFC 5780). A request without the magic cookie is RFC 3489's
// (handleClassicSTUN).
func (s *Server) handleSTUN(sock int, b []byte, src netip.AddrPort) {
	if !stun.IsMessage(b) {
		s.handleClassicSTUN(sock, b, src)
		return
	}
	req := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := req.Decode(); err != nil || req.Type != stun.BindingRequest {
		s.stats.stunDropped.Add(1)
		return
	}
	out := sock
	if v, err := req.Get(stun.AttrChangeRequest); err == nil {
		ok := len(v) == 4
		if ok {
			out, ok = s.changedSock(sock, v[3])
		}
		if !ok {
			s.stats.stunDropped.Add(1) // asks for what this server cannot do
			return
		}
	}
	resp, ok := s.bindingResponse(req, sock, out, src, len(b))
	if !ok {
		s.stats.stunDropped.Add(1)
		return
	}
	s.stats.stunAnswered.Add(1)
	s.send(origin{sock: out, addr: src}, resp)
}

// changedSock is the socket the answer to a request received on sock
// leaves from under CHANGE-REQUEST flags; false when the server has no
// alternate address to honour them. No flags (RFC 3489 clients send the
// attribute so) is the receiving socket.
func (s *Server) changedSock(sock int, flags byte) (int, bool) {
	flags &= changeIPFlag | changePortFlag
	if flags == 0 {
		return sock, true
	}
	g := s.groups[sock]
	if !g.square {
		return 0, false
	}
	ipPort := sockIPPort[g.role]
	if flags&changeIPFlag != 0 {
		ipPort[0] ^= 1
	}
	if flags&changePortFlag != 0 {
		ipPort[1] ^= 1
	}
	return s.groupSock(sock, ipPort[0], ipPort[1]), true
}

// stunAnswerFloor is the size a Binding answer may always reach: the bare
// answer for an IPv6 source (header and XOR-MAPPED-ADDRESS). RFC 5389
// clients, coturn's turnutils_stunclient among them, send 20-byte requests
// and do not pad; a STUN server must answer them. The cost is at most 24
// bytes more than the request carried. Within it an IPv4 answer also has
// room for OTHER-ADDRESS (12 + 12 bytes of attributes), which is what an
// unpadded RFC 5780 client (turnutils_natdiscovery without -P) needs to
// run its tests: the bound is the same, the answer more useful.
const stunAnswerFloor = 20 + 4 + 20

func (s *Server) bindingResponse(req *stun.Message, in, out int, src netip.AddrPort, budget int) ([]byte, bool) {
	resp := stun.New()
	resp.TransactionID = req.TransactionID
	resp.Type = stun.BindingSuccess
	resp.WriteHeader()
	if err := (&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())}).AddTo(resp); err != nil {
		return nil, false
	}
	budget = max(budget, stunAnswerFloor)
	if len(resp.Raw) > budget {
		return nil, false
	}
	try := func(add func(*stun.Message) error) {
		trial := stun.New()
		resp.CloneTo(trial)
		if add(trial) == nil && len(trial.Raw) <= budget {
			trial.CloneTo(resp)
		}
	}
	if other, ok := s.otherAddr(in); ok {
		try(func(m *stun.Message) error {
			return (&stun.OtherAddress{IP: other.Addr().AsSlice(), Port: int(other.Port())}).AddTo(m)
		})
	}
	origin := s.addrs[out]
	try(func(m *stun.Message) error {
		return (&stun.ResponseOrigin{IP: origin.Addr().AsSlice(), Port: int(origin.Port())}).AddTo(m)
	})
	try(func(m *stun.Message) error { return stun.Fingerprint.AddTo(m) })
	return resp.Raw, true
}

// RFC 3489 ("classic STUN"): no magic cookie, a 16-byte transaction ID,
// and addresses in the clear.
const (
	classicBindingRequest  = 0x0001
	classicBindingResponse = 0x0101
	classicMappedAddress   = 0x0001
	classicResponseAddress = 0x0002
	classicChangeRequest   = 0x0003
	classicSourceAddress   = 0x0004
	classicChangedAddress  = 0x0005
)

// handleClassicSTUN answers an RFC 3489 Binding request (Debian's stun
// client, old VoIP phones) with MAPPED-ADDRESS, then, while they fit,
// CHANGED-ADDRESS (when the server has an alternate address: RFC 5780's
// OTHER-ADDRESS under its old name) and SOURCE-ADDRESS, and honours
// CHANGE-REQUEST as handleSTUN does. The answer keeps handleSTUN's bound:
// at most the request's size or stunAnswerFloor (44 bytes), whichever is
// more. RFC 3489 requests are 20 or 28 bytes and do not pad, so that is
// MAPPED-ADDRESS and CHANGED-ADDRESS for IPv4 (32 + 12 bytes), all an
// RFC 3489 client's tests need, and MAPPED-ADDRESS alone for IPv6: a
// spoofed 20-byte request buys an attacker 24 bytes, one datagram for
// one, toward an address it names anyway, which any open STUN server
// gives it too. RESPONSE-ADDRESS (answer to another address than the
// source) is refused: it would make the server a reflector aimed at
// anyone, which is why RFC 5389 dropped it.
func (s *Server) handleClassicSTUN(sock int, b []byte, src netip.AddrPort) {
	id, change, ok := parseClassicBinding(b)
	out := sock
	if ok {
		out, ok = s.changedSock(sock, change)
	}
	if !ok {
		s.stats.stunDropped.Add(1)
		return
	}
	resp, ok := s.classicResponse(id, sock, out, src, len(b))
	if !ok {
		s.stats.stunDropped.Add(1)
		return
	}
	s.stats.stunAnswered.Add(1)
	s.send(origin{sock: out, addr: src}, resp)
}

// parseClassicBinding reads an RFC 3489 Binding request: its transaction
// ID and CHANGE-REQUEST flags. The length must match the datagram and
// every attribute fit in it; attributes other than CHANGE-REQUEST and
// RESPONSE-ADDRESS are ignored (USERNAME, MESSAGE-INTEGRITY: the server
// authenticates no STUN).
func parseClassicBinding(b []byte) (id [16]byte, change byte, ok bool) {
	if len(b) < 20 || binary.BigEndian.Uint16(b) != classicBindingRequest || int(binary.BigEndian.Uint16(b[2:])) != len(b)-20 {
		return id, 0, false
	}
	copy(id[:], b[4:20])
	for a := b[20:]; len(a) > 0; {
		if len(a) < 4 {
			return id, 0, false
		}
		typ, n := binary.BigEndian.Uint16(a), int(binary.BigEndian.Uint16(a[2:]))
		if 4+n > len(a) {
			return id, 0, false
		}
		switch typ {
		case classicChangeRequest:
			if n != 4 {
				return id, 0, false
			}
			change = a[7]
		case classicResponseAddress:
			return id, 0, false
		}
		// RFC 3489's attributes are whole words; later ones are padded
		// to them (RFC 5389), which a lenient reader skips.
		a = a[min(len(a), 4+(n+3)&^3):]
	}
	return id, change, true
}

// classicResponse builds the answer to an RFC 3489 Binding request
// received on socket in and sent from out, within budget (or
// stunAnswerFloor); false if not even MAPPED-ADDRESS fits.
func (s *Server) classicResponse(id [16]byte, in, out int, src netip.AddrPort, budget int) ([]byte, bool) {
	budget = max(budget, stunAnswerFloor)
	b := make([]byte, 20, budget)
	binary.BigEndian.PutUint16(b, classicBindingResponse)
	copy(b[4:], id[:])
	add := func(typ uint16, a netip.AddrPort) bool {
		ip := a.Addr().Unmap()
		family, n := byte(1), 8
		if ip.Is6() {
			family, n = 2, 20
		}
		if len(b)+4+n > budget {
			return false
		}
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		b = append(b, 0, family)
		b = binary.BigEndian.AppendUint16(b, a.Port())
		b = append(b, ip.AsSlice()...)
		return true
	}
	if !add(classicMappedAddress, src) {
		return nil, false
	}
	if other, ok := s.otherAddr(in); ok {
		add(classicChangedAddress, other)
	}
	add(classicSourceAddress, s.addrs[out])
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)-20))
	return b, true
}
