package p2p

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-reuseport"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/netlab"
)

// lanLabNode starts a LAN-discovering node on lab host h, on the real
// discovery port (each namespace has its own), whose rendezvous server is
// an address of the lab nobody answers at. Its socket listens at listen:
// "" is every address, IPv4 and IPv6, so beacons leave per interface
// (IP_PKTINFO, zones).
func lanLabNode(t *testing.T, h *netlab.Host, app, listen string) *Node {
	t.Helper()
	cfg := Config{
		AppID:            app,
		LANDiscovery:     true,
		ListenAddr:       listen,
		ListenPacket:     h.ListenPacket,
		Interfaces:       func() ([]netip.Prefix, error) { return []netip.Prefix{netip.PrefixFrom(h.IP, 24)}, nil },
		Rendezvous:       "203.0.113.10:9", // the lab's server address; nothing listens there
		DisableDirectTCP: true,
		Dial:             noTCP,
		Gateway:          labGateway(h),
		lan: &lanNet{
			port: lanPort,
			listen: func(network, address string) (pc net.PacketConn, err error) {
				err = h.Do(func() (err error) {
					pc, err = reuseport.ListenPacket(network, address)
					return err
				})
				return pc, err
			},
			interfaces: func() (ifs []lanIface, err error) {
				err = h.Do(func() (err error) {
					ifs, err = systemLANIfaces() // the namespace's, not this process's
					return err
				})
				return ifs, err
			},
		},
	}
	if os.Getenv("GW_DEBUG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", h.Name)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestLabLANDiscovery: hosts on one LAN behind a NAT, with no server that
// answers. Two nodes of one AppID share a host (both listen on the
// discovery port), a third of that AppID and one of another run on the
// other hosts. Each node of the AppID lists the other two at their LAN
// addresses and no one else; the other AppID's lists nobody. A reliable
// message goes both ways on a session straight to the beacon's address.
func TestLabLANDiscovery(t *testing.T) {
	leakcheck.Check(t)
	lab := netlab.NewForTest(t, netlab.Options{Name: "lan"})
	site, err := lab.AddSite("lan", netlab.SiteConfig{NAT: netlab.NATPortRestricted, Hosts: 3})
	if err != nil {
		t.Fatal(err)
	}
	h := site.Hosts
	a := lanLabNode(t, h[0], "lan", "")
	a2 := lanLabNode(t, h[0], "lan", "")
	b := lanLabNode(t, h[1], "lan", "")
	c := lanLabNode(t, h[2], "another game", "")
	ours := []*Node{a, a2, b}

	host := map[PeerID]netip.Addr{a.PeerID(): h[0].IP, a2.PeerID(): h[0].IP, b.PeerID(): h[1].IP}
	for _, n := range ours {
		waitFor(t, 10*time.Second, "every node of the AppID listed", func() bool { return len(n.LANPeers()) == 2 })
		for _, p := range n.LANPeers() {
			ip, ok := host[p.Peer]
			if !ok || p.Peer == n.PeerID() {
				t.Fatalf("%v lists %v", n.PeerID(), p.Peer)
			}
			if p.Addrs[0].Addr() != ip {
				t.Errorf("%v lists %v at %v, want its LAN address %v", n.PeerID(), p.Peer, p.Addrs, ip)
			}
		}
	}
	waitFor(t, 10*time.Second, "another AppID's beacons dropped", func() bool {
		return slices.IndexFunc(ours, func(n *Node) bool { return n.Stats().LANDropped == 0 }) < 0
	})
	if got := c.LANPeers(); len(got) != 0 {
		t.Fatalf("another AppID lists %+v", got)
	}
	for _, n := range append(ours, c) {
		st := n.Stats()
		t.Logf("%v: sent %d heard %d dropped %d refused %d errors %d", n.LocalAddr(), st.LANSent, st.LANHeard, st.LANDropped, st.LANRefused, st.LANErrors)
		if st.LANErrors != 0 || st.LANSent == 0 {
			t.Fatalf("stats %+v", st)
		}
	}

	if err := a.SendP2PPacket(b.PeerID(), []byte("hello"), SendReliable, 0); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, b, 5*time.Second, isRequest(a.PeerID()))
	b.AcceptP2PSessionWithUser(a.PeerID())
	if p := recvData(t, b, 0, 5*time.Second); string(p.Data) != "hello" {
		t.Fatalf("b got %q", p.Data)
	}
	b.SendP2PPacket(a.PeerID(), []byte("welcome"), SendReliable, 0)
	if p := recvData(t, a, 0, 5*time.Second); string(p.Data) != "welcome" {
		t.Fatalf("a got %q", p.Data)
	}
	if st, _ := a.GetP2PSessionState(b.PeerID()); !st.ConnectionActive || st.RemoteAddr.Addr() != h[1].IP || a.Registered() {
		t.Fatalf("state %+v, registered %v", st, a.Registered())
	}
	for _, n := range append(ours, c) {
		n.Close()
	}
}

// enableIPv6 turns IPv6 on inside h's namespace (the lab turns it off),
// without duplicate address detection, so link-local addresses are usable
// at once.
func enableIPv6(t *testing.T, h *netlab.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	script := `for f in /proc/sys/net/ipv6/conf/*/accept_dad; do echo 0 > "$f"; done
sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0`
	if out, err := h.Command(ctx, "sh", "-c", script).CombinedOutput(); err != nil {
		t.Skipf("cannot turn IPv6 on in the lab: %v: %s", err, out)
	}
}

// linkLocal returns h's IPv6 link-local address with its zone (the
// interface index, as the namespace numbers it).
func linkLocal(t *testing.T, h *netlab.Host) netip.Addr {
	t.Helper()
	var found netip.Addr
	waitFor(t, 5*time.Second, "a link-local address on "+h.Name, func() bool {
		var ifs []lanIface
		if err := h.Do(func() (err error) { ifs, err = systemLANIfaces(); return err }); err != nil {
			t.Fatal(err)
		}
		for _, f := range ifs {
			for _, a := range f.addrs {
				if a.IsLinkLocalUnicast() && a.Is6() && !f.is(net.FlagLoopback) {
					found = a.WithZone(strconv.Itoa(f.index))
					return true
				}
			}
		}
		return false
	})
	return found
}

// TestLabLANDiscoveryIPv6: a LAN with IPv6 on. A dual-stack node beacons
// to ff12::4757 on its interface beside IPv4; a node whose socket is bound
// to its link-local address beacons, listens and is reached over IPv6
// alone: each hears the other at its link-local address, and a session
// between them runs over it.
func TestLabLANDiscoveryIPv6(t *testing.T) {
	leakcheck.Check(t)
	lab := netlab.NewForTest(t, netlab.Options{Name: "lan6"})
	site, err := lab.AddSite("lan6", netlab.SiteConfig{NAT: netlab.NATPortRestricted, Hosts: 2})
	if err != nil {
		t.Fatal(err)
	}
	h := site.Hosts
	enableIPv6(t, h[0])
	enableIPv6(t, h[1])
	ll := linkLocal(t, h[1])
	a := lanLabNode(t, h[0], "lan", "")
	b := lanLabNode(t, h[1], "lan", netip.AddrPortFrom(ll, 0).String())

	heardOver6 := func(n *Node, p PeerID) bool {
		got := n.LANPeers()
		return len(got) == 1 && got[0].Peer == p && slices.ContainsFunc(got[0].Addrs, func(a netip.AddrPort) bool {
			return a.Addr().Is6() && a.Addr().IsLinkLocalUnicast()
		})
	}
	waitFor(t, 10*time.Second, "a hearing b over IPv6", func() bool { return heardOver6(a, b.PeerID()) })
	waitFor(t, 10*time.Second, "b hearing a over IPv6", func() bool { return heardOver6(b, a.PeerID()) })
	if got := a.LANPeers()[0].Addrs; len(got) != 1 || got[0].Addr().WithZone("") != ll.WithZone("") {
		t.Fatalf("a heard b at %v, want only %v", got, ll)
	}

	a.SendP2PPacket(b.PeerID(), []byte("hello"), SendReliable, 0)
	nextEvent(t, b, 5*time.Second, isRequest(a.PeerID()))
	b.AcceptP2PSessionWithUser(a.PeerID())
	if p := recvData(t, b, 0, 5*time.Second); string(p.Data) != "hello" {
		t.Fatalf("b got %q", p.Data)
	}
	b.SendP2PPacket(a.PeerID(), []byte("welcome"), SendReliable, 0)
	if p := recvData(t, a, 0, 5*time.Second); string(p.Data) != "welcome" {
		t.Fatalf("a got %q", p.Data)
	}
	if st, _ := a.GetP2PSessionState(b.PeerID()); !st.ConnectionActive || st.RemoteAddr.Addr().WithZone("") != ll.WithZone("") {
		t.Fatalf("state %+v, want a session to %v", st, ll)
	}
	for _, n := range []*Node{a, b} {
		st := n.Stats()
		t.Logf("%v: sent %d heard %d dropped %d errors %d", n.LocalAddr(), st.LANSent, st.LANHeard, st.LANDropped, st.LANErrors)
		if st.LANErrors != 0 {
			t.Errorf("%d errors", st.LANErrors)
		}
		n.Close()
	}
}
