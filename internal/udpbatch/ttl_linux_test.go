package udpbatch

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// TestWriteToTTL: the datagram arrives with the TTL (hop limit) asked for,
// and the socket's next ordinary datagram with its default one.
func TestWriteToTTL(t *testing.T) {
	// The last: a dual-stack IPv6 socket sending to an IPv4 address.
	for _, tc := range []struct{ network, addr, from string }{{"udp4", "127.0.0.1:0", "127.0.0.1:0"}, {"udp6", "[::1]:0", "[::1]:0"}, {"udp", "127.0.0.1:0", ":0"}} {
		rcv, err := net.ListenPacket(tc.network, tc.addr)
		if err != nil {
			t.Logf("%s: %v (skipped)", tc.network, err)
			continue
		}
		defer rcv.Close()
		snd, err := net.ListenPacket(tc.network, tc.from)
		if err != nil {
			t.Fatal(err)
		}
		defer snd.Close()
		to := rcv.LocalAddr().(*net.UDPAddr).AddrPort()
		to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
		read := readTTL(t, rcv, to.Addr().Is4())
		if err := WriteToTTL(snd, []byte("low"), to, 3); err != nil {
			t.Fatalf("%s: %v", tc.network, err)
		}
		if got := read(); got != 3 {
			t.Errorf("%s: TTL %d, want 3", tc.network, got)
		}
		if _, err := snd.WriteTo([]byte("plain"), net.UDPAddrFromAddrPort(to)); err != nil {
			t.Fatal(err)
		}
		if got := read(); got <= 3 {
			t.Errorf("%s: the next datagram has TTL %d: the low TTL stuck to the socket", tc.network, got)
		}
	}
	if err := WriteToTTL(nil, nil, netip.AddrPort{}, 0); err != ErrTTLUnsupported {
		t.Errorf("TTL 0: %v, want ErrTTLUnsupported", err)
	}
}

func readTTL(t *testing.T, c net.PacketConn, v4 bool) func() int {
	buf := make([]byte, 64)
	if v4 {
		p := ipv4.NewPacketConn(c)
		if err := p.SetControlMessage(ipv4.FlagTTL, true); err != nil {
			t.Fatal(err)
		}
		return func() int {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, cm, _, err := p.ReadFrom(buf)
			if err != nil || cm == nil {
				t.Fatalf("read: %v", err)
			}
			return cm.TTL
		}
	}
	p := ipv6.NewPacketConn(c)
	if err := p.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
		t.Fatal(err)
	}
	return func() int {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, cm, _, err := p.ReadFrom(buf)
		if err != nil || cm == nil {
			t.Fatalf("read: %v", err)
		}
		return cm.HopLimit
	}
}
