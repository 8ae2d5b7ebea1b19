package p2p

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v4/vnet"

	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/rendezvous"
)

// NAT traversal on pion's virtual network: two sites behind NATs of each
// RFC 4787 class, a rendezvous server with two addresses on the "internet",
// all in one process and, inside a synctest bubble, in simulated time. It
// needs no root; the real proof runs on Linux NATs (internal/netlab).

type vnatKind string

const (
	vFullCone  vnatKind = "full-cone"
	vAddrRestr vnatKind = "address-restricted"
	vPortRestr vnatKind = "port-restricted"
	vSymmetric vnatKind = "symmetric"
	vServerIP1          = "1.2.3.4"
	vServerIP2          = "1.2.3.5"
)

var vnatKinds = []vnatKind{vFullCone, vAddrRestr, vPortRestr, vSymmetric}

func vnatType(k vnatKind) *vnet.NATType {
	t := &vnet.NATType{MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointAddrPortDependent}
	switch k {
	case vFullCone:
		t.FilteringBehavior = vnet.EndpointIndependent
	case vAddrRestr:
		t.FilteringBehavior = vnet.EndpointAddrDependent
	case vSymmetric:
		t.MappingBehavior = vnet.EndpointAddrPortDependent
	}
	return t
}

type vsite struct {
	net  *vnet.Net
	ip   string
	node *Node
}

// vlab is a WAN with a rendezvous server and two NATed sites.
type vlab struct {
	wan    *vnet.Router
	server *rendezvous.Server
	sites  [2]*vsite
}

func newVLab(t *testing.T, a, b vnatKind, cfg Config) *vlab {
	t.Helper()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	wan, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "0.0.0.0/0", LoggerFactory: lf})
	if err != nil {
		t.Fatal(err)
	}
	srvNet, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vServerIP1, vServerIP2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := wan.AddNet(srvNet); err != nil {
		t.Fatal(err)
	}
	l := &vlab{wan: wan}
	for i, k := range []vnatKind{a, b} {
		lan, err := vnet.NewRouter(&vnet.RouterConfig{
			CIDR:          fmt.Sprintf("10.%d.0.0/24", i+1),
			StaticIPs:     []string{fmt.Sprintf("27.1.1.%d", i+1)},
			NATType:       vnatType(k),
			LoggerFactory: lf,
		})
		if err != nil {
			t.Fatal(err)
		}
		ip := fmt.Sprintf("10.%d.0.2", i+1)
		n, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
		if err != nil {
			t.Fatal(err)
		}
		if err := lan.AddNet(n); err != nil {
			t.Fatal(err)
		}
		if err := wan.AddRouter(lan); err != nil {
			t.Fatal(err)
		}
		l.sites[i] = &vsite{net: n, ip: ip}
	}
	if err := wan.Start(); err != nil {
		t.Fatal(err)
	}
	var conns []net.PacketConn
	for _, a := range []string{vServerIP1 + ":3478", vServerIP2 + ":3479", vServerIP1 + ":3479", vServerIP2 + ":3478"} {
		c, err := srvNet.ListenPacket("udp4", a)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if l.server, err = rendezvous.NewServer(rendezvous.ServerConfig{Conns: conns}); err != nil {
		t.Fatal(err)
	}
	for _, s := range l.sites {
		s.node = l.startNode(t, s, cfg)
	}
	t.Cleanup(l.close)
	return l
}

func (l *vlab) startNode(t *testing.T, s *vsite, cfg Config) *Node {
	t.Helper()
	pc, err := s.net.ListenPacket("udp4", s.ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.PacketConn = pc
	cfg.Rendezvous = vServerIP1 + ":3478"
	cfg.ListenPacket = s.net.ListenPacket
	ip := s.ip
	cfg.Interfaces = func() ([]netip.Prefix, error) {
		return []netip.Prefix{netip.MustParsePrefix(ip + "/24")}, nil
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (l *vlab) close() {
	for _, s := range l.sites {
		if s.node != nil {
			s.node.Close()
			s.node.pc.Close()
		}
	}
	l.server.Close()
	l.wan.Stop()
}

// connect makes both sides send (each accepts the other) and waits until
// both received; it reports the time to the first delivery, or false.
func (l *vlab) connect(t *testing.T, timeout time.Duration) (time.Duration, bool) {
	t.Helper()
	a, b := l.sites[0].node, l.sites[1].node
	start := time.Now()
	a.SendP2PPacket(b.PeerID(), []byte("ping"), SendReliable, 0)
	b.SendP2PPacket(a.PeerID(), []byte("pong"), SendReliable, 0)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var first time.Duration
	for i, n := range []*Node{b, a} {
		if _, err := n.Receive(ctx, 0); err != nil {
			return 0, false
		}
		if i == 0 {
			first = time.Since(start)
		}
	}
	return first, true
}

func registered(srv *rendezvous.Server, nodes ...*Node) bool {
	for _, n := range nodes {
		if !srv.IsRegistered(rendezvous.Key(n.PeerID())) {
			return false
		}
	}
	return true
}

// TestVNetMatrix runs every pair of NAT classes. Pairs where a direct path
// exists must connect: both endpoint-independent mappings, and symmetric
// against any endpoint-independent NAT (against port-restricted through
// port prediction or the birthday approach). Symmetric on both sides must
// fail cleanly with Timeout (relay is for later).
func TestVNetMatrix(t *testing.T) {
	for i, ka := range vnatKinds {
		for _, kb := range vnatKinds[i:] {
			t.Run(fmt.Sprintf("%s-%s", ka, kb), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					l := newVLab(t, ka, kb, Config{ConnectTimeout: 10 * time.Second})
					for !registered(l.server, l.sites[0].node, l.sites[1].node) {
						time.Sleep(100 * time.Millisecond)
					}
					for _, s := range l.sites {
						b := s.node.trav.Behaviour()
						wantMap := MappingOf(ka)
						if s == l.sites[1] {
							wantMap = MappingOf(kb)
						}
						if b.Mapping != wantMap {
							t.Errorf("%s discovered mapping %v, want %v", s.ip, b.Mapping, wantMap)
						}
					}
					time.Sleep(filteringTimeout) // fake time: the filtering tests are done
					for i, k := range []vnatKind{ka, kb} {
						if got, want := l.sites[i].node.trav.Behaviour().Filtering, FilteringOf(k); got != want {
							t.Errorf("%s: discovered filtering %v, want %v", k, got, want)
						}
					}
					d, ok := l.connect(t, 15*time.Second)
					both := ka == vSymmetric && kb == vSymmetric
					if both {
						if ok {
							t.Fatal("symmetric to symmetric connected directly")
						}
						e := nextEvent(t, l.sites[0].node, 20*time.Second, func(e Event) bool { _, ok := e.(SessionConnectFail); return ok })
						if f := e.(SessionConnectFail); f.Error != SessionErrorTimeout {
							t.Fatalf("failed with %v", f.Error)
						}
						return
					}
					if !ok {
						t.Fatal("no direct connection")
					}
					st, _ := l.sites[0].node.GetP2PSessionState(l.sites[1].node.PeerID())
					tr := st.Traversal
					t.Logf("connected in %v via %v (%+v)", d, st.RemoteAddr, tr)
					if !tr.Punched {
						t.Errorf("traversal not recorded: %+v", tr)
					}
					hard := (ka == vSymmetric) != (kb == vSymmetric) && (ka == vPortRestr || kb == vPortRestr)
					if tr.Birthday != hard {
						t.Errorf("birthday %v, want %v", tr.Birthday, hard)
					}
				})
			})
		}
	}
}

// MappingOf is the mapping behaviour each class has.
func MappingOf(k vnatKind) nat.Mapping {
	if k == vSymmetric {
		return nat.MappingEndpointDependent
	}
	return nat.MappingEndpointIndependent
}

// FilteringOf is the filtering behaviour each class has.
func FilteringOf(k vnatKind) nat.Filtering {
	switch k {
	case vFullCone:
		return nat.FilteringEndpointIndependent
	case vAddrRestr:
		return nat.FilteringAddressDependent
	}
	return nat.FilteringAddressPortDependent
}
