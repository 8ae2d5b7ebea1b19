package portmap

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// Test doubles for PCP and NAT-PMP: memConn is an in-memory connected
// datagram socket (channels and timers only, so it works inside a
// testing/synctest bubble), and fakeGW a gateway speaking both protocols
// behind it.

var (
	testGW    = netip.MustParseAddr("10.9.0.1")
	testLocal = netip.MustParseAddr("10.9.0.2")
	testExtIP = netip.MustParseAddr("203.0.113.77")
)

type memConn struct {
	gw     *fakeGW
	in     chan []byte
	closed chan struct{}
	once   sync.Once

	mu    sync.Mutex
	dl    chan struct{} // closed when the read deadline passes
	timer *time.Timer
}

func (c *memConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	dl := c.dl
	c.mu.Unlock()
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	select {
	case p := <-c.in:
		return copy(b, p), nil
	case <-dl:
		return 0, os.ErrDeadlineExceeded
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func (c *memConn) Write(b []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	for _, r := range c.gw.handle(append([]byte(nil), b...)) {
		select {
		case c.in <- r:
		default:
		}
	}
	return len(b), nil
}

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.dl = make(chan struct{})
	if t.IsZero() {
		return nil
	}
	if d := time.Until(t); d <= 0 {
		close(c.dl)
	} else {
		ch := c.dl
		c.timer = time.AfterFunc(d, func() { close(ch) })
	}
	return nil
}

func (c *memConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.mu.Lock()
		if c.timer != nil {
			c.timer.Stop()
		}
		c.mu.Unlock()
	})
	return nil
}

func (c *memConn) LocalAddr() net.Addr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(testLocal, 40001))
}
func (c *memConn) RemoteAddr() net.Addr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(testGW, pcpPort))
}
func (c *memConn) SetDeadline(t time.Time) error    { return c.SetReadDeadline(t) }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// fakeGW is a PCP and NAT-PMP gateway. Its fields are guarded by mu.
type fakeGW struct {
	mu      sync.Mutex
	pcp     bool // speaks PCP
	pmp     bool // speaks NAT-PMP
	silent  bool // answers nothing
	drop    int  // drops this many requests, then answers
	ext     netip.Addr
	epoch   uint32
	maxLife uint32                // grants at most this lifetime (0: what is asked)
	result  int                   // answers every MAP with this result code
	strays  func([]byte) [][]byte // datagrams sent before each answer
	nextExt uint16                // the external port of the next new mapping (0: the suggested one)

	maps     map[uint16]*fakeMapping // by internal port
	requests []fakeRequest
}

type fakeMapping struct {
	ext      uint16
	nonce    [12]byte
	lifetime uint32
	proto    Protocol
}

type fakeRequest struct {
	proto    Protocol
	op       byte
	nonce    [12]byte
	internal uint16
	suggest  uint16
	lifetime uint32
	at       time.Time
}

func newFakeGW() *fakeGW {
	return &fakeGW{pcp: true, pmp: true, ext: testExtIP, epoch: 1000, maps: map[uint16]*fakeMapping{}}
}

func (g *fakeGW) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if network != "udp4" || address != netip.AddrPortFrom(testGW, pcpPort).String() {
		return nil, fmt.Errorf("fake: dial %s %s", network, address)
	}
	return &memConn{gw: g, in: make(chan []byte, 64), closed: make(chan struct{}), dl: make(chan struct{})}, nil
}

func (g *fakeGW) set(f func(g *fakeGW)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

func (g *fakeGW) reqs() []fakeRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]fakeRequest(nil), g.requests...)
}

func (g *fakeGW) mapping(internal uint16) (fakeMapping, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.maps[internal]
	if !ok {
		return fakeMapping{}, false
	}
	return *m, true
}

func (g *fakeGW) handle(req []byte) [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.silent {
		return nil
	}
	if g.drop > 0 {
		g.drop--
		return nil
	}
	var out [][]byte
	if g.strays != nil {
		out = g.strays(req)
	}
	var ans []byte
	switch {
	case len(req) >= 2 && req[0] == pmpVersion:
		ans = g.handlePMP(req)
	case len(req) >= 2 && req[0] == pcpVersion:
		ans = g.handlePCP(req)
	}
	if ans != nil {
		out = append(out, ans)
	}
	return out
}

func (g *fakeGW) grant(asked uint32) uint32 {
	if g.maxLife != 0 && asked > g.maxLife {
		return g.maxLife
	}
	return asked
}

func (g *fakeGW) newExt(suggest, internal uint16) uint16 {
	if g.nextExt != 0 {
		p := g.nextExt
		g.nextExt = 0
		return p
	}
	if suggest != 0 {
		return suggest
	}
	return internal
}

func (g *fakeGW) handlePMP(req []byte) []byte {
	if !g.pmp {
		return nil
	}
	op := req[1]
	ans := make([]byte, 16)
	ans[1] = pmpReply + op
	binary.BigEndian.PutUint32(ans[4:8], g.epoch)
	switch {
	case op == pmpOpExternal:
		g.requests = append(g.requests, fakeRequest{proto: NATPMP, op: op, at: time.Now()})
		copy(ans[8:12], g.ext.AsSlice())
		return ans[:12]
	case op == pmpOpMapUDP && len(req) == 12:
		r := fakeRequest{proto: NATPMP, op: op, at: time.Now(),
			internal: binary.BigEndian.Uint16(req[4:6]), suggest: binary.BigEndian.Uint16(req[6:8]),
			lifetime: binary.BigEndian.Uint32(req[8:12])}
		g.requests = append(g.requests, r)
		binary.BigEndian.PutUint16(ans[8:10], r.internal)
		if g.result != 0 {
			binary.BigEndian.PutUint16(ans[2:4], uint16(g.result))
			return ans
		}
		if r.lifetime == 0 {
			delete(g.maps, r.internal)
			return ans
		}
		m := g.maps[r.internal]
		if m == nil {
			m = &fakeMapping{ext: g.newExt(r.suggest, r.internal), proto: NATPMP}
			g.maps[r.internal] = m
		}
		m.lifetime = g.grant(r.lifetime)
		binary.BigEndian.PutUint16(ans[10:12], m.ext)
		binary.BigEndian.PutUint32(ans[12:16], m.lifetime)
		return ans
	default:
		binary.BigEndian.PutUint16(ans[2:4], pmpUnsuppOpcode)
		return ans[:8]
	}
}

func (g *fakeGW) handlePCP(req []byte) []byte {
	if !g.pcp {
		if g.pmp { // RFC 6886 §3.5: version 0 "unsupported version"
			ans := make([]byte, 8)
			ans[1] = pmpReply + req[1]
			binary.BigEndian.PutUint16(ans[2:4], pmpUnsuppVersion)
			binary.BigEndian.PutUint32(ans[4:8], g.epoch)
			return ans
		}
		return nil
	}
	if len(req) < pcpHeaderLen {
		return nil
	}
	op := req[1]
	lifetime := binary.BigEndian.Uint32(req[4:8])
	if client := netip.AddrFrom16([16]byte(req[8:24])).Unmap(); client != testLocal {
		return g.pcpAnswer(req, 12, 0) // ADDRESS_MISMATCH
	}
	switch {
	case op == pcpOpAnnounce:
		g.requests = append(g.requests, fakeRequest{proto: PCP, op: op, at: time.Now()})
		return g.pcpAnswer(req[:pcpHeaderLen], 0, 0)
	case op == pcpOpMap && len(req) == pcpMapLen:
		m := req[pcpHeaderLen:]
		r := fakeRequest{proto: PCP, op: op, at: time.Now(), nonce: [12]byte(m[0:12]),
			internal: binary.BigEndian.Uint16(m[16:18]), suggest: binary.BigEndian.Uint16(m[18:20]), lifetime: lifetime}
		g.requests = append(g.requests, r)
		if g.result != 0 {
			return g.pcpAnswer(req, byte(g.result), 0)
		}
		cur := g.maps[r.internal]
		if cur != nil && cur.nonce != r.nonce {
			return g.pcpAnswer(req, 2, 0) // NOT_AUTHORIZED: another client's mapping
		}
		if lifetime == 0 {
			delete(g.maps, r.internal)
			ans := g.pcpAnswer(req, 0, 0)
			return ans
		}
		if cur == nil {
			cur = &fakeMapping{ext: g.newExt(r.suggest, r.internal), nonce: r.nonce, proto: PCP}
			g.maps[r.internal] = cur
		}
		cur.lifetime = g.grant(lifetime)
		ans := g.pcpAnswer(req, 0, cur.lifetime)
		binary.BigEndian.PutUint16(ans[pcpHeaderLen+18:], cur.ext)
		putAddr16(ans[pcpHeaderLen+20:], g.ext)
		return ans
	default:
		return g.pcpAnswer(req[:pcpHeaderLen], pcpUnsuppOpcode, 0)
	}
}

// pcpAnswer turns a request into its answer: R bit, result, lifetime,
// epoch, reserved bytes zeroed, the opcode's fields copied.
func (g *fakeGW) pcpAnswer(req []byte, result byte, lifetime uint32) []byte {
	ans := append([]byte(nil), req...)
	ans[1] |= pcpReply
	ans[2], ans[3] = 0, result
	binary.BigEndian.PutUint32(ans[4:8], lifetime)
	binary.BigEndian.PutUint32(ans[8:12], g.epoch)
	clear(ans[12:24])
	return ans
}

// testClient returns a Client talking to g.
func testClient(g *fakeGW, cfg Config) *Client {
	cfg.LocalPort = 40000
	cfg.Gateway = testGW
	cfg.Dial = g.dial
	if cfg.ListenPacket == nil {
		// UPnP is tested against a fake IGD on loopback (upnp_test.go);
		// here it must never send a real SSDP search.
		cfg.ListenPacket = func(context.Context, string, string) (net.PacketConn, error) { return nil, errTest }
	}
	c, err := New(cfg)
	if err != nil {
		panic(err)
	}
	return c
}

var errTest = errors.New("test")
