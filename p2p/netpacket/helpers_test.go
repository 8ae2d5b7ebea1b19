package netpacket_test

import (
	"bytes"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/p2p/netpacket"
)

const testApp = "netpacket-test"

// recorder is a core: it records what the adapter calls. Everything runs
// on the test goroutine (the frontend), so it needs no lock.
type recorder struct {
	id           uint16
	starts       int
	stops        int
	polls        int
	send         netpacket.SendFunc
	pollReceive  func()
	got          []received
	connected    []uint16
	disconnected []uint16
	refuse       map[int]bool // Connected calls (counted from 0) to answer false
}

type received struct {
	from uint16
	data []byte
}

func (r *recorder) callbacks(version string) netpacket.Callbacks {
	return netpacket.Callbacks{
		ProtocolVersion: version,
		Start: func(id uint16, send netpacket.SendFunc, pollReceive func()) {
			r.id, r.send, r.pollReceive = id, send, pollReceive
			r.starts++
		},
		Receive: func(data []byte, from uint16) {
			r.got = append(r.got, received{from, data})
		},
		Stop: func() { r.stops++ },
		Poll: func() { r.polls++ },
		Connected: func(id uint16) bool {
			n := len(r.connected)
			r.connected = append(r.connected, id)
			return !r.refuse[n]
		},
		Disconnected: func(id uint16) { r.disconnected = append(r.disconnected, id) },
	}
}

// has reports whether a packet with data arrived from id.
func (r *recorder) has(from uint16, data string) bool {
	return r.count(from, data) > 0
}

func (r *recorder) count(from uint16, data string) int {
	n := 0
	for _, p := range r.got {
		if p.from == from && bytes.Equal(p.data, []byte(data)) {
			n++
		}
	}
	return n
}

// withPrefix returns the packets whose data starts with prefix.
func (r *recorder) withPrefix(prefix string) []received {
	var out []received
	for _, p := range r.got {
		if bytes.HasPrefix(p.data, []byte(prefix)) {
			out = append(out, p)
		}
	}
	return out
}

// player is one node with its adapter and core.
type player struct {
	node   *p2p.Node
	rec    *recorder
	host   *netpacket.Host
	client *netpacket.Client
	err    error // the last Frame's result
}

func (p *player) frame() {
	switch {
	case p.host != nil:
		p.err = p.host.Frame()
	case p.client != nil:
		p.err = p.client.Frame()
	}
}

// rig is a host and the players that joined it, framed together by the
// test goroutine as a frontend loop would.
type rig struct {
	t       *testing.T
	host    *player
	players []*player // the host first
}

func newNode(t *testing.T, cfg p2p.Config) *p2p.Node {
	t.Helper()
	if cfg.AppID == "" {
		cfg.AppID = testApp
	}
	if cfg.PacketConn == nil {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	n, err := p2p.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func addrOf(n *p2p.Node) netip.AddrPort {
	return n.LocalAddr().(*net.UDPAddr).AddrPort()
}

// newRig starts a host with version "v1".
func newRig(t *testing.T, nodeCfg p2p.Config, cfg netpacket.Config) *rig {
	t.Helper()
	p := &player{node: newNode(t, nodeCfg), rec: &recorder{}}
	h, err := netpacket.NewHost(p.node, p.rec.callbacks("v1"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.host = h
	t.Cleanup(func() { h.Close() })
	return &rig{t: t, host: p, players: []*player{p}}
}

// join adds a client running version and sends its join.
func (r *rig) join(nodeCfg p2p.Config, version string) *player {
	r.t.Helper()
	p := &player{node: newNode(r.t, nodeCfg), rec: &recorder{}}
	p.node.AddPeerAddr(r.host.node.PeerID(), addrOf(r.host.node))
	c, err := netpacket.Join(p.node, r.host.node.PeerID(), p.rec.callbacks(version), netpacket.Config{})
	if err != nil {
		r.t.Fatal(err)
	}
	p.client = c
	r.t.Cleanup(func() { c.Close() })
	r.players = append(r.players, p)
	return p
}

// joinStarted adds a client and frames until it has started.
func (r *rig) joinStarted() *player {
	r.t.Helper()
	p := r.join(p2p.Config{}, "v1")
	r.until("client start", func() bool { return p.rec.starts == 1 })
	return p
}

// startRig starts a host and n clients, each started, with ids 1..n.
func startRig(t *testing.T, n int) (*rig, []*player) {
	t.Helper()
	r := newRig(t, p2p.Config{}, netpacket.Config{})
	var clients []*player
	for i := range n {
		c := r.joinStarted()
		if c.rec.id != uint16(i+1) {
			t.Fatalf("client %d got id %d", i+1, c.rec.id)
		}
		clients = append(clients, c)
	}
	return r, clients
}

// until frames every player until cond holds, failing after 10 s.
func (r *rig) until(what string, cond func() bool) {
	r.t.Helper()
	r.untilWithin(10*time.Second, what, cond)
}

func (r *rig) untilWithin(d time.Duration, what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, p := range r.players {
			p.frame()
		}
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond) // the frontend's frame pacing
	}
}

// dropConn is a socket that can go silent: once drop is set it swallows
// every datagram both ways, as a player whose network vanished.
type dropConn struct {
	net.PacketConn
	drop atomic.Bool
}

func newDropConn(t *testing.T) *dropConn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() }) // after the node's Close: cleanups run last first
	return &dropConn{PacketConn: pc}
}

func (c *dropConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.drop.Load() {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

func (c *dropConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.drop.Load() {
			return n, addr, err
		}
	}
}
