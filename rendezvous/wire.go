package rendezvous

import (
	"crypto/subtle"
	"encoding/binary"
	"net/netip"

	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/relay"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/curve25519"
)

// Message types: gamewire's first-byte range 0x80–0xBF, rendezvous part.
const (
	typeRegister   byte = 0xA0
	typeChallenge  byte = 0xA1
	typeRegistered byte = 0xA2
	typeIntroduce  byte = 0xA3
	typePeer       byte = 0xA4
	typeUnknown    byte = 0xA5
	typeAsk        byte = 0xA6
)

// IsRendezvous reports whether b's first byte is a rendezvous message type.
func IsRendezvous(b []byte) bool { return len(b) > 0 && b[0] >= typeRegister && b[0] <= typeAsk }

// Sizes and limits.
const (
	version       = 1
	addrLen       = 18 // 16-byte IPv6 or IPv4-mapped address, 2-byte port
	macLen        = 16
	cookieLen     = 16
	keyLen        = 32
	maxCandidates = 8

	registerFixed   = 4 + keyLen + 8 + cookieLen // then candidates, then MAC
	challengeLen    = 4 + cookieLen + keyLen
	registeredLen   = 4 + addrLen + 2 + 8 + macLen // then the TURN section, if any, before the MAC
	introduceLen    = 4 + keyLen + keyLen + 8 + macLen
	peerFixed       = 4 + keyLen + 8 + addrLen // then candidates, then MAC
	unknownLen      = 4 + keyLen + 8 + macLen
	askLen          = 4 + keyLen + 8 + addrLen + macLen
	minRegisterLen  = registerFixed + macLen
	maxRegisterLen  = registerFixed + (maxCandidates+1)*addrLen + macLen
	maxPeerLen      = peerFixed + (maxCandidates+1)*addrLen + macLen
	registerFlagMap = 0x03 // register and peer flags: the sender's NAT mapping behaviour
	peerFlagPushed  = 0x04 // peer flags: sent to the target of someone else's introduction

	registerFlagRelay     = 0x04 // the client allows relaying its sessions
	registerFlagRelayAddr = 0x08 // a relayed address follows the candidates
	peerFlagRelay         = 0x08 // the other peer allows relay
	peerFlagRelayAddr     = 0x10 // its relayed address follows the candidates
	peerFlagTCP           = 0x20 // it registered over TCP: its UDP is blocked
	registeredFlagTURN    = 0x01 // TURN servers and credentials follow

	// MaxTURNServers bounds the TURN servers a REGISTERED lists.
	maxTURNServers = 4
	turnServerLen  = 1 + addrLen
	maxCredLen     = 255
)

// Mapping is what a node knows of its NAT's mapping behaviour (RFC 4787),
// as the two low bits of REGISTER's and PEER's flags: package nat's type,
// which discovery fills in.
type Mapping = nat.Mapping

const (
	MappingUnknown             = nat.MappingUnknown
	MappingEndpointIndependent = nat.MappingEndpointIndependent // the same public address for every destination
	MappingEndpointDependent   = nat.MappingEndpointDependent   // a new public port per destination ("symmetric")
)

// Key is an X25519 public key: a PeerID, or the server's key.
type Key = [32]byte

// SessionKey is the MAC key a client and the server share: derived from
// X25519 between the client's identity and the server's key, so a valid
// MAC proves the client holds its PeerID's private key.
type sessionKey [32]byte

// DeriveKey computes the shared key from one side's private key and the
// other's public key. It fails for a low-order public key.
func deriveKey(private [32]byte, public Key, client, server Key) (sessionKey, error) {
	dh, err := curve25519.X25519(private[:], public[:])
	if err != nil {
		return sessionKey{}, err
	}
	h, _ := blake2s.New256(nil)
	h.Write([]byte("gamewire rendezvous v1"))
	h.Write(dh)
	h.Write(client[:])
	h.Write(server[:])
	var k sessionKey
	h.Sum(k[:0])
	return k, nil
}

func mac(k *sessionKey, b []byte) [macLen]byte {
	h, _ := blake2s.New128(k[:])
	h.Write(b)
	var m [macLen]byte
	h.Sum(m[:0])
	return m
}

// sealMAC appends the MAC of b.
func sealMAC(k *sessionKey, b []byte) []byte {
	m := mac(k, b)
	return append(b, m[:]...)
}

// checkMAC verifies the MAC at the end of b.
func checkMAC(k *sessionKey, b []byte) bool {
	if len(b) < macLen {
		return false
	}
	m := mac(k, b[:len(b)-macLen])
	return subtle.ConstantTimeCompare(m[:], b[len(b)-macLen:]) == 1
}

func putAddr(b []byte, a netip.AddrPort) {
	if !a.IsValid() {
		clear(b[:addrLen])
		return
	}
	ip := a.Addr().As16()
	copy(b, ip[:])
	binary.BigEndian.PutUint16(b[16:], a.Port())
}

func getAddr(b []byte) netip.AddrPort {
	var ip [16]byte
	copy(ip[:], b[:16])
	port := binary.BigEndian.Uint16(b[16:])
	a := netip.AddrFrom16(ip).Unmap()
	if a.IsUnspecified() && port == 0 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, port)
}

// Register is a client's registration: its PeerID, its host candidates and
// what it knows of its NAT, bound to a server cookie for its source address.
type Register struct {
	Peer       Key
	Timestamp  uint64 // strictly increasing per client: replays are refused
	Cookie     [cookieLen]byte
	Mapping    Mapping
	Candidates []netip.AddrPort
	// RelayAllowed: the client may be relayed, and wants TURN credentials.
	// Relay is its relayed address on a TURN server, once it has one.
	RelayAllowed bool
	Relay        netip.AddrPort
}

func (r *Register) size() int {
	n := registerFixed + min(len(r.Candidates), maxCandidates)*addrLen
	if r.Relay.IsValid() {
		n += addrLen
	}
	return n
}

func (r *Register) encode(k *sessionKey) []byte {
	n := min(len(r.Candidates), maxCandidates)
	b := make([]byte, r.size(), r.size()+macLen)
	b[0], b[1], b[2], b[3] = typeRegister, byte(r.Mapping)&registerFlagMap, version, byte(n)
	if r.RelayAllowed {
		b[1] |= registerFlagRelay
	}
	copy(b[4:], r.Peer[:])
	binary.BigEndian.PutUint64(b[36:], r.Timestamp)
	copy(b[44:], r.Cookie[:])
	for i, c := range r.Candidates[:n] {
		putAddr(b[registerFixed+i*addrLen:], c)
	}
	if r.Relay.IsValid() {
		b[1] |= registerFlagRelayAddr
		putAddr(b[registerFixed+n*addrLen:], r.Relay)
	}
	if k == nil {
		return append(b, make([]byte, macLen)...) // no server key yet: asks for a challenge
	}
	return sealMAC(k, b)
}

// decodeRegister parses a REGISTER without checking its MAC.
func decodeRegister(b []byte) (*Register, bool) {
	if len(b) < minRegisterLen || len(b) > maxRegisterLen || b[0] != typeRegister || b[2] != version {
		return nil, false
	}
	n := int(b[3])
	relayAt := registerFixed + n*addrLen
	end := relayAt
	if b[1]&registerFlagRelayAddr != 0 {
		end += addrLen
	}
	if n > maxCandidates || len(b) != end+macLen {
		return nil, false
	}
	r := &Register{Mapping: Mapping(b[1] & registerFlagMap), Timestamp: binary.BigEndian.Uint64(b[36:]),
		RelayAllowed: b[1]&registerFlagRelay != 0}
	if end > relayAt {
		r.Relay = getAddr(b[relayAt:])
	}
	copy(r.Peer[:], b[4:])
	copy(r.Cookie[:], b[44:])
	for i := range n {
		r.Candidates = append(r.Candidates, getAddr(b[registerFixed+i*addrLen:]))
	}
	return r, true
}

func encodeChallenge(cookie [cookieLen]byte, server Key) []byte {
	b := make([]byte, challengeLen)
	b[0] = typeChallenge
	copy(b[4:], cookie[:])
	copy(b[4+cookieLen:], server[:])
	return b
}

func decodeChallenge(b []byte) (cookie [cookieLen]byte, server Key, ok bool) {
	if len(b) != challengeLen || b[0] != typeChallenge {
		return cookie, server, false
	}
	copy(cookie[:], b[4:])
	copy(server[:], b[4+cookieLen:])
	return cookie, server, true
}

// Registered confirms a registration: the address the server saw the
// client at, for how long the registration holds, and the timestamp of the
// REGISTER it answers.
type Registered struct {
	Observed  netip.AddrPort
	TTL       uint16 // seconds
	Timestamp uint64
	// TURN is where and how this client may allocate a relay: sent to
	// clients that allow relay, when the server is configured with TURN.
	TURN *TURN
}

// TURN lists TURN servers and the credentials for them.
type TURN struct {
	Servers     []TURNServer
	Credentials relay.Credentials
}

// TURNServer is one TURN server and the transport to reach it by. An
// unspecified IP means the rendezvous server's own, as the client reaches
// it.
type TURNServer struct {
	Transport relay.Transport
	Addr      netip.AddrPort
}

func (r *Registered) encode(k *sessionKey) []byte {
	b := make([]byte, registeredLen-macLen, registeredLen+1+maxTURNServers*turnServerLen+2+2*maxCredLen)
	b[0] = typeRegistered
	putAddr(b[4:], r.Observed)
	binary.BigEndian.PutUint16(b[22:], r.TTL)
	binary.BigEndian.PutUint64(b[24:], r.Timestamp)
	if t := r.TURN; t != nil && len(t.Credentials.Username) <= maxCredLen && len(t.Credentials.Password) <= maxCredLen {
		b[1] |= registeredFlagTURN
		servers := t.Servers[:min(len(t.Servers), maxTURNServers)]
		b = append(b, byte(len(servers)))
		for _, srv := range servers {
			b = append(b, byte(srv.Transport))
			b = append(b, make([]byte, addrLen)...)
			putAddr(b[len(b)-addrLen:], srv.Addr)
		}
		b = append(b, byte(len(t.Credentials.Username)))
		b = append(b, t.Credentials.Username...)
		b = append(b, byte(len(t.Credentials.Password)))
		b = append(b, t.Credentials.Password...)
	}
	return sealMAC(k, b)
}

func decodeRegistered(b []byte, k *sessionKey) (*Registered, bool) {
	if len(b) < registeredLen || b[0] != typeRegistered || !checkMAC(k, b) {
		return nil, false
	}
	r := &Registered{Observed: getAddr(b[4:]), TTL: binary.BigEndian.Uint16(b[22:]), Timestamp: binary.BigEndian.Uint64(b[24:])}
	rest := b[registeredLen-macLen : len(b)-macLen]
	if b[1]&registeredFlagTURN == 0 {
		return r, len(rest) == 0
	}
	t, ok := decodeTURN(rest)
	r.TURN = t
	return r, ok
}

// decodeTURN parses REGISTERED's TURN section; it must use every byte.
func decodeTURN(b []byte) (*TURN, bool) {
	if len(b) < 1 || int(b[0]) > maxTURNServers || len(b) < 1+int(b[0])*turnServerLen {
		return nil, false
	}
	t := &TURN{}
	for i := range int(b[0]) {
		at := 1 + i*turnServerLen
		t.Servers = append(t.Servers, TURNServer{Transport: relay.Transport(b[at]), Addr: getAddr(b[at+1:])})
	}
	b = b[1+int(b[0])*turnServerLen:]
	user, b, ok := cutString(b)
	if !ok {
		return nil, false
	}
	pass, b, ok := cutString(b)
	if !ok || len(b) != 0 {
		return nil, false
	}
	t.Credentials = relay.Credentials{Username: user, Password: pass}
	return t, true
}

// cutString splits a length-prefixed string off b.
func cutString(b []byte) (string, []byte, bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, false
	}
	return string(b[1 : 1+int(b[0])]), b[1+int(b[0]):], true
}

// Introduce asks the server to introduce the sender to Target.
type Introduce struct {
	Peer, Target Key
	Timestamp    uint64
}

func (m *Introduce) encode(k *sessionKey) []byte {
	b := make([]byte, introduceLen-macLen, introduceLen)
	b[0] = typeIntroduce
	copy(b[4:], m.Peer[:])
	copy(b[36:], m.Target[:])
	binary.BigEndian.PutUint64(b[68:], m.Timestamp)
	return sealMAC(k, b)
}

// decodeIntroduce parses an INTRODUCE without checking its MAC.
func decodeIntroduce(b []byte) (*Introduce, bool) {
	if len(b) != introduceLen || b[0] != typeIntroduce {
		return nil, false
	}
	m := &Introduce{Timestamp: binary.BigEndian.Uint64(b[68:])}
	copy(m.Peer[:], b[4:])
	copy(m.Target[:], b[36:])
	return m, true
}

// Peer tells a client how to reach another: sent to both clients of an
// introduction at the same moment, once both asked for it.
type Peer struct {
	About     Key
	Timestamp uint64 // the timestamp of this client's INTRODUCE
	// Pushed: this client did not ask. The server no longer sets it (both
	// must ask, see Ask); it stays on the wire for older servers.
	Pushed     bool
	Mapping    Mapping
	Observed   netip.AddrPort
	Candidates []netip.AddrPort
	// RelayAllowed: the other peer allows relay; Relay is its relayed
	// address if it has one; TCP: it registered over TCP (its UDP is
	// blocked, so only a relay or TCP reaches it).
	RelayAllowed bool
	Relay        netip.AddrPort
	TCP          bool
}

func (p *Peer) encode(k *sessionKey) []byte {
	n := min(len(p.Candidates), maxCandidates)
	size := peerFixed + n*addrLen
	if p.Relay.IsValid() {
		size += addrLen
	}
	b := make([]byte, size, size+macLen)
	b[0] = typePeer
	b[1] = byte(p.Mapping) & registerFlagMap
	if p.Pushed {
		b[1] |= peerFlagPushed
	}
	if p.RelayAllowed {
		b[1] |= peerFlagRelay
	}
	if p.TCP {
		b[1] |= peerFlagTCP
	}
	if p.Relay.IsValid() {
		b[1] |= peerFlagRelayAddr
		putAddr(b[peerFixed+n*addrLen:], p.Relay)
	}
	b[3] = byte(n)
	copy(b[4:], p.About[:])
	binary.BigEndian.PutUint64(b[36:], p.Timestamp)
	putAddr(b[44:], p.Observed)
	for i, c := range p.Candidates[:n] {
		putAddr(b[peerFixed+i*addrLen:], c)
	}
	return sealMAC(k, b)
}

func decodePeer(b []byte, k *sessionKey) (*Peer, bool) {
	if len(b) < peerFixed+macLen || len(b) > maxPeerLen || b[0] != typePeer {
		return nil, false
	}
	n := int(b[3])
	relayAt := peerFixed + n*addrLen
	end := relayAt
	if b[1]&peerFlagRelayAddr != 0 {
		end += addrLen
	}
	if n > maxCandidates || len(b) != end+macLen || !checkMAC(k, b) {
		return nil, false
	}
	p := &Peer{
		Mapping:      Mapping(b[1] & registerFlagMap),
		Pushed:       b[1]&peerFlagPushed != 0,
		RelayAllowed: b[1]&peerFlagRelay != 0,
		TCP:          b[1]&peerFlagTCP != 0,
		Timestamp:    binary.BigEndian.Uint64(b[36:]),
		Observed:     getAddr(b[44:]),
	}
	if end > relayAt {
		p.Relay = getAddr(b[relayAt:])
	}
	copy(p.About[:], b[4:])
	for i := range n {
		p.Candidates = append(p.Candidates, getAddr(b[peerFixed+i*addrLen:]))
	}
	return p, true
}

// Unknown says the introduction's target is not registered.
type Unknown struct {
	Target    Key
	Timestamp uint64
}

func (u *Unknown) encode(k *sessionKey) []byte {
	b := make([]byte, unknownLen-macLen, unknownLen)
	b[0] = typeUnknown
	copy(b[4:], u.Target[:])
	binary.BigEndian.PutUint64(b[36:], u.Timestamp)
	return sealMAC(k, b)
}

func decodeUnknown(b []byte, k *sessionKey) (*Unknown, bool) {
	if len(b) != unknownLen || b[0] != typeUnknown || !checkMAC(k, b) {
		return nil, false
	}
	u := &Unknown{Timestamp: binary.BigEndian.Uint64(b[36:])}
	copy(u.Target[:], b[4:])
	return u, true
}

// Ask tells a client that another peer asks to be introduced to it. The
// server sends nothing about either peer to the other until the target
// consents by introducing itself to the asker in turn.
type Ask struct {
	Asker     Key
	Timestamp uint64         // the asker's INTRODUCE's timestamp
	Observed  netip.AddrPort // the asker's registered (cookie-verified) address
	Mapping   Mapping        // the asker's NAT mapping, as it registered it
}

func (a *Ask) encode(k *sessionKey) []byte {
	b := make([]byte, askLen-macLen, askLen)
	b[0], b[1] = typeAsk, byte(a.Mapping)&registerFlagMap
	copy(b[4:], a.Asker[:])
	binary.BigEndian.PutUint64(b[36:], a.Timestamp)
	putAddr(b[44:], a.Observed)
	return sealMAC(k, b)
}

func decodeAsk(b []byte, k *sessionKey) (*Ask, bool) {
	if len(b) != askLen || b[0] != typeAsk || !checkMAC(k, b) {
		return nil, false
	}
	a := &Ask{Timestamp: binary.BigEndian.Uint64(b[36:]), Observed: getAddr(b[44:]), Mapping: Mapping(b[1] & registerFlagMap)}
	copy(a.Asker[:], b[4:])
	return a, true
}
