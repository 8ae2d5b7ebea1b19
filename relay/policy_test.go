package relay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestPeerPolicyRanges checks the policy on every denied range, their
// IPv4-mapped and tunnelled forms, and public addresses. No traffic.
func TestPeerPolicyRanges(t *testing.T) {
	p := newPeerPolicy([]netip.Addr{netip.MustParseAddr("198.51.100.7")}, nil, nil)
	denied := []string{
		"0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.254",
		"127.0.0.1", "127.1.2.3", "169.254.169.254", "172.16.0.1", "172.31.255.255",
		"192.168.0.1", "192.168.255.255", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
		"::", "::1", "fe80::1", "fe80::1%eth0", "febf::1", "fec0::1", "fc00::1", "fd12:3456::1", "ff02::1", "ff0e::1",
		// IPv4-mapped, -compatible and -translated forms.
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0", "::ffff:255.255.255.255",
		"::127.0.0.1", "::10.0.0.1", "::8.8.8.8", "::ffff:0:10.0.0.1",
		// NAT64 (well-known and local-use), 6to4 and Teredo embeddings.
		"64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::808:808",
		"2002:7f00:1::1", "2002:a00:1::1", "2002:c0a8:101::1",
		"2001:0:4136:e378:8000:63bf:f5ff:fffe", // Teredo, client 10.0.0.1
		// The server's own public IP, in the same forms.
		"::ffff:198.51.100.7", "64:ff9b::c633:6407", "2002:c633:6407::1",
	}
	for _, s := range denied {
		a := netip.MustParseAddr(s)
		if p.permitIP(a) && s != "::ffff:198.51.100.7" {
			t.Errorf("permission to %s granted", s)
		}
		if p.writable(netip.AddrPortFrom(a, 9)) {
			t.Errorf("datagram to %s allowed", s)
		}
	}
	open := []string{"8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.0",
		"192.167.255.255", "192.169.0.0", "169.253.255.255", "223.255.255.255", "203.0.113.9", "11.0.0.0",
		"::ffff:8.8.8.8", "2606:4700::1111", "2001:db8::1", "64:ff9b::808:808", "2002:808:808::1",
		"2001:0:4136:e378:8000:63bf:f7f7:f7f7", // Teredo, client 8.8.8.8
	}
	for _, s := range open {
		a := netip.MustParseAddr(s)
		if !p.permitIP(a) || !p.writable(netip.AddrPortFrom(a, 9)) {
			t.Errorf("%s refused", s)
		}
	}
}

// TestPeerPolicyOwnAddrs: the server's own addresses are refused except
// the relay IP at CreatePermission, which then passes only the relayed
// ports of live allocations.
func TestPeerPolicyOwnAddrs(t *testing.T) {
	relayIP := netip.MustParseAddr("198.51.100.7")
	own := []netip.Addr{netip.MustParseAddr("198.51.100.8"), netip.MustParseAddr("2001:db8::8"), netip.IPv4Unspecified()}
	p := newPeerPolicy([]netip.Addr{relayIP}, own, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")})
	if !p.permitIP(relayIP) || !p.permitIP(netip.MustParseAddr("::ffff:198.51.100.7")) {
		t.Fatal("permission to the relay's own IP refused: relay to relay needs it")
	}
	for _, s := range []string{"198.51.100.8", "::ffff:198.51.100.8", "2001:db8::8"} {
		if p.permitIP(netip.MustParseAddr(s)) {
			t.Errorf("permission to own address %s granted (AllowPeers does not open those)", s)
		}
	}
	if !p.permitIP(netip.MustParseAddr("198.51.100.9")) {
		t.Error("198.51.100.9 refused")
	}
	relayed := netip.AddrPortFrom(relayIP, 50000)
	for _, ap := range []netip.AddrPort{relayed, netip.AddrPortFrom(relayIP, 3478), netip.MustParseAddrPort("[::ffff:198.51.100.7]:50000")} {
		if p.writable(ap) {
			t.Errorf("datagram to %v allowed with no allocation there", ap)
		}
	}
	p.addLive(relayed)
	if !p.writable(relayed) || !p.writable(netip.MustParseAddrPort("[::ffff:198.51.100.7]:50000")) {
		t.Error("datagram to a live relayed address refused")
	}
	if p.writable(netip.AddrPortFrom(relayIP, 3478)) || p.writable(netip.AddrPortFrom(relayIP, 50001)) {
		t.Error("datagram to the relay IP at another port allowed")
	}
	p.removeLive(relayed)
	if p.writable(relayed) {
		t.Error("datagram to a closed allocation's address allowed")
	}
}

// TestPeerPolicyAllowPeers: AllowPeers opens denied ranges, written in
// IPv4 or IPv4-mapped form, and what embeds them.
func TestPeerPolicyAllowPeers(t *testing.T) {
	p := newPeerPolicy([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil,
		[]netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104"), netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("fd00::/8")})
	for _, s := range []string{"10.1.2.3", "::ffff:10.1.2.3", "2002:a01:203::1", "127.0.0.5", "fd00::1"} {
		if !p.writable(netip.AddrPortFrom(netip.MustParseAddr(s), 9)) {
			t.Errorf("%s refused though allowed", s)
		}
	}
	for _, s := range []string{"192.168.1.1", "172.16.0.1", "fc00::1", "127.0.0.1"} {
		if p.writable(netip.AddrPortFrom(netip.MustParseAddr(s), 9)) {
			t.Errorf("%s allowed", s)
		}
	}
}

// recordingConn is a PacketConn that counts what is written to it.
type recordingConn struct {
	net.PacketConn
	writes atomic.Int32
}

func (c *recordingConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.writes.Add(1)
	return len(b), nil
}

func (c *recordingConn) Close() error { return nil }

// TestRelayConnRefusesWrites: the relay socket writes nothing to a denied
// address, and counts it.
func TestRelayConnRefusesWrites(t *testing.T) {
	p := newPeerPolicy([]netip.Addr{netip.MustParseAddr("198.51.100.7")}, nil, nil)
	srv := &Server{policy: p, relays: map[netip.AddrPort]*relayConn{}, owned: map[string][]*relayConn{}}
	stats := &srv.stats
	rec := &recordingConn{}
	c := &relayConn{PacketConn: rec, srv: srv, relayed: netip.MustParseAddrPort("198.51.100.7:50000")}
	p.addLive(c.relayed)
	for _, to := range []string{"10.0.0.1:9", "127.0.0.1:9", "[::ffff:192.168.0.1]:9", "198.51.100.7:3478", "[fe80::1]:9"} {
		if _, err := c.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to))); !errors.Is(err, errDeniedPeer) {
			t.Errorf("write to %s: %v", to, err)
		}
	}
	if _, err := c.WriteTo([]byte("x"), nil); !errors.Is(err, errDeniedPeer) {
		t.Errorf("write to nil: %v", err)
	}
	if n := rec.writes.Load(); n != 0 {
		t.Fatalf("%d datagrams written", n)
	}
	if d := stats.deniedPeers.Load(); d != 6 {
		t.Fatalf("denied %d, want 6", d)
	}
	for _, to := range []string{"8.8.8.8:53", "198.51.100.7:50000"} {
		if _, err := c.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to))); err != nil {
			t.Errorf("write to %s: %v", to, err)
		}
	}
	c.Close()
	if _, err := c.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(c.relayed)); !errors.Is(err, errDeniedPeer) {
		t.Errorf("write to its own closed address: %v", err)
	}
}

// TestAllowPeersLoopback: a server with AllowPeers 127.0.0.0/8 relays to a
// loopback peer that is not its own address; without it the permission
// is refused and counted.
func TestAllowPeersLoopback(t *testing.T) {
	leakcheck.Check(t)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 5)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	to := peer.LocalAddr().(*net.UDPAddr).AddrPort()

	closed := startServer(t, nil)
	c, _ := allocate(t, closed.udp, UDP, NewCredentials(testSecret, "x", time.Hour, time.Now()))
	if err := c.Permit(to); err == nil {
		t.Fatal("permission to 127.0.0.5 granted by default")
	}
	if st := closed.Stats(); st.DeniedPeers != 1 {
		t.Fatalf("stats %+v: want 1 denied", st)
	}

	open := startServer(t, func(cfg *ServerConfig) { cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	c, ch := allocate(t, open.udp, UDP, NewCredentials(testSecret, "x", time.Hour, time.Now()))
	if err := c.Permit(to); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteTo([]byte("hello"), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := peer.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hello" || from != c.RelayedAddr() {
		t.Fatalf("peer read %q from %v, %v", buf[:n], from, err)
	}
	if _, err := peer.WriteToUDPAddrPort([]byte("back"), from); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case r := <-ch:
		if string(r.data) != "back" || r.from != to {
			t.Fatalf("got %q from %v", r.data, r.from)
		}
	case <-ctx.Done():
		t.Fatal("the peer's answer never arrived")
	}
	// The server's own address stays closed: 127.0.0.1 is RelayIP.
	if err := c.Permit(open.udp); err != nil {
		t.Fatal(err)
	}
	before := open.Stats().DeniedPeers
	c.WriteTo([]byte("x"), open.udp)
	deadline := time.Now().Add(5 * time.Second)
	for open.Stats().DeniedPeers == before {
		if time.Now().After(deadline) {
			t.Fatal("a datagram to the server's own port was not refused")
		}
		time.Sleep(time.Millisecond)
	}
}
