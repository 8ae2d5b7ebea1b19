package p2p

import (
	"net"
	"net/netip"
	"testing"
)

// Tests never ask the real network's router for a mapping: only nodes
// given a Config.Gateway (a lab router) map ports.
func init() { systemGateway = false }

// TestPortMapSkip: nodes that cannot use a mapping, or that would only
// reach this machine, do not ask for one.
func TestPortMapSkip(t *testing.T) {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	server := netip.MustParseAddrPort("203.0.113.10:3478")
	public := netip.MustParseAddrPort("0.0.0.0:4000")
	for _, tc := range []struct {
		name   string
		cfg    Config
		pc     net.PacketConn
		local  netip.AddrPort
		server netip.AddrPort
		skip   bool
	}{
		{"wildcard", Config{}, udp, public, server, false},
		{"LAN address", Config{}, udp, netip.MustParseAddrPort("192.168.1.5:4000"), server, false},
		{"disabled", Config{DisablePortMapping: true}, udp, public, server, true},
		{"not a UDP socket", Config{}, otherConn{udp}, public, server, true},
		{"a wrapped UDP socket", Config{}, newDelayConn(udp, 0), public, server, false},
		{"bound to loopback", Config{}, udp, netip.MustParseAddrPort("127.0.0.1:4000"), server, true},
		{"server on loopback", Config{}, udp, public, netip.MustParseAddrPort("127.0.0.1:3478"), true},
		{"bound to IPv6", Config{}, udp, netip.MustParseAddrPort("[2001:db8::5]:4000"), server, true},
		{"dual-stack wildcard", Config{}, udp, netip.MustParseAddrPort("[::]:4000"), server, false},
	} {
		why := portMapSkip(tc.cfg, tc.pc, tc.local, tc.server)
		if (why != "") != tc.skip {
			t.Errorf("%s: skip %q, want skip %v", tc.name, why, tc.skip)
		}
	}
}

// otherConn is a PacketConn with no UDP address.
type otherConn struct{ net.PacketConn }

func (otherConn) LocalAddr() net.Addr { return &net.IPAddr{IP: net.IPv4(127, 0, 0, 1)} }
