package rendezvous

import (
	"net/netip"

	"github.com/pion/stun/v3"
)

// STUN answering (RFC 5389 Binding, RFC 5780 behaviour discovery). The
// four sockets of an RFC 5780 server are (primary IP, primary port),
// (alternate IP, alternate port), (primary IP, alternate port) and
// (alternate IP, primary port): sockIPPort gives each one's pair of "is it
// the alternate" bits.
var sockIPPort = [4][2]int{{0, 0}, {1, 1}, {0, 1}, {1, 0}}

func sockFor(ip, port int) int {
	for i, v := range sockIPPort {
		if v[0] == ip && v[1] == port {
			return i
		}
	}
	return 0
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
// RFC 5780).
func (s *Server) handleSTUN(sock int, b []byte, src netip.AddrPort) {
	req := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := req.Decode(); err != nil || req.Type != stun.BindingRequest {
		s.stats.stunDropped.Add(1)
		return
	}
	out := sock
	if v, err := req.Get(stun.AttrChangeRequest); err == nil {
		if len(v) != 4 || len(s.conns) < 4 {
			s.stats.stunDropped.Add(1) // asks for what this server cannot do
			return
		}
		ipPort := sockIPPort[sock]
		if v[3]&changeIPFlag != 0 {
			ipPort[0] ^= 1
		}
		if v[3]&changePortFlag != 0 {
			ipPort[1] ^= 1
		}
		out = sockFor(ipPort[0], ipPort[1])
	}
	resp, ok := s.bindingResponse(req, sock, out, src, len(b))
	if !ok {
		s.stats.stunDropped.Add(1)
		return
	}
	s.stats.stunAnswered.Add(1)
	s.send(origin{sock: out, addr: src}, resp)
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
	if len(s.conns) >= 4 {
		other := s.addrs[sockFor(sockIPPort[in][0]^1, sockIPPort[in][1]^1)]
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
