package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/crypto/curve25519"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

// TestRelayPolicyFlags: --relay-allow (repeated, comma-separated, bare
// IPs) and --relay-max-per-ip reach the embedded relay's configuration;
// bad values and their use with --external-turn are refused; the status
// line reports denied peers and quota refusals.
func TestRelayPolicyFlags(t *testing.T) {
	f, err := parseServerFlags([]string{"--listen", "127.0.0.1:0", "--relay-allow", "10.0.0.0/8, 192.168.1.7",
		"--relay-allow", "fd00::/8", "--relay-max-per-ip", "5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("fd00::/8")}
	cfg, _, _, err := embeddedTURN(f, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:3478")})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.AllowPeers, want) || cfg.MaxPerIP != 5 {
		t.Fatalf("relay config AllowPeers %v MaxPerIP %d", cfg.AllowPeers, cfg.MaxPerIP)
	}
	for _, args := range [][]string{
		{"--relay-allow", "10.0.0.0/33"},
		{"--relay-allow", "intranet"},
		{"--relay-max-per-ip", "-1"},
		{"--relay-allow", "10.0.0.0/8", "--external-turn", "turn:192.0.2.1:3478", "--turn-secret", "s"},
		{"--relay-max-per-ip", "3", "--external-turn", "turn:192.0.2.1:3478", "--turn-secret", "s"},
	} {
		if _, err := parseServerFlags(args, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}

	st, err := startServer(f)
	if err != nil {
		t.Fatal(err)
	}
	defer st.srv.Close()
	line := statusLine(st.srv)
	if !strings.Contains(line, "0 peers denied, 0 refused over quota (0 user, 0 IP, 0 full)") {
		t.Fatalf("status line %q", line)
	}
}

// TestServerListenFlags: --listen and --listen2 take comma-separated
// IP:PORT lists, IPv6 in brackets; anything else is refused.
func TestServerListenFlags(t *testing.T) {
	f, err := parseServerFlags([]string{"--listen", "203.0.113.10:3478, [2001:db8::10]:3478", "--listen2", "203.0.113.11:3479,[2001:db8::11]:3479"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	if want := []netip.AddrPort{ap("203.0.113.10:3478"), ap("[2001:db8::10]:3478")}; !slices.Equal(f.listen, want) {
		t.Errorf("--listen %v, want %v", f.listen, want)
	}
	if want := []netip.AddrPort{ap("203.0.113.11:3479"), ap("[2001:db8::11]:3479")}; !slices.Equal(f.listen2, want) {
		t.Errorf("--listen2 %v, want %v", f.listen2, want)
	}
	if f, err := parseServerFlags(nil, io.Discard); err != nil || !slices.Equal(f.listen, []netip.AddrPort{ap("0.0.0.0:3478")}) || f.listen2 != nil {
		t.Errorf("defaults: %v %v, %v", f.listen, f.listen2, err)
	}
	for _, args := range [][]string{
		{"--listen", "2001:db8::10:3478"}, // no brackets: no port to be found
		{"--listen", "127.0.0.1:3478,"},
		{"--listen", ""},
		{"--listen", "localhost:3478"},
		{"--listen2", "127.0.0.2"},
	} {
		if _, err := parseServerFlags(args, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

// TestPeerHost: the banner's --server addresses are what a peer can
// dial: IPv6 in brackets, a placeholder for an unspecified address.
func TestPeerHost(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.10:3478":       "203.0.113.10:3478",
		"[2001:db8:100::10]:3478": "[2001:db8:100::10]:3478",
		"0.0.0.0:3478":            "THIS-HOST:3478",
		"[::]:3478":               "[THIS-HOST-IPV6]:3478",
		"[fe80::1%eth0]:3478":     "[fe80::1%eth0]:3478",
		"[::ffff:192.0.2.1]:3478": "[::ffff:192.0.2.1]:3478",
	} {
		if got := peerHost(netip.MustParseAddrPort(in)); got != want {
			t.Errorf("peerHost(%s) = %s, want %s", in, got, want)
		}
	}
}

// haveIPv6 skips without an IPv6 loopback.
func haveIPv6(t *testing.T) {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback (::1): %v", err)
	}
	c.Close()
}

// freeUDPPort is a port free for UDP and TCP on ip when asked.
func freeUDPPort(t *testing.T, ip string) uint16 {
	t.Helper()
	for range 20 {
		c, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Skipf("cannot bind %s: %v", ip, err)
		}
		p := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		if l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p))); err == nil {
			l.Close()
			return uint16(p)
		}
	}
	t.Skip("no free port")
	return 0
}

// TestServerDualStack: one server on 127.0.0.1 (RFC 5780 alternate
// 127.0.0.2) and [::1] at once, each address its own UDP socket and TCP
// listener. The banner lists both, brackets the IPv6 one in a usable
// --server line and names the alternate, and lists the embedded TURN at
// both, relaying over each family; STUN over each family answers with
// that family's mapped address, OTHER-ADDRESS only over IPv4.
func TestServerDualStack(t *testing.T) {
	haveIPv6(t)
	p4, p2 := freeUDPPort(t, "127.0.0.1"), freeUDPPort(t, "127.0.0.2")
	p6 := freeUDPPort(t, "::1")
	f, err := parseServerFlags([]string{
		"--listen", fmt.Sprintf("[::1]:%d,127.0.0.1:%d", p6, p4), // IPv6 first: IPv4 goes first for TURN
		"--listen2", fmt.Sprintf("127.0.0.2:%d", p2),
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	st, err := startServer(f)
	if err != nil {
		t.Fatal(err)
	}
	defer st.srv.Close()
	var out bytes.Buffer
	printServerBanner(&out, st)
	banner := out.String()
	key := p2p.PeerID(st.srv.PublicKey()).String()
	v4 := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p4)
	v6 := netip.AddrPortFrom(netip.IPv6Loopback(), p6)
	alt := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), p2)
	for _, want := range []string{
		fmt.Sprintf("listening on %v, %v (UDP and TCP)\n", v4, v6),
		fmt.Sprintf("RFC 5780 alternate for %v: %v (UDP)\n", v4, alt),
		fmt.Sprintf("peers connect with: p2pdemo peer --server %s@127.0.0.1:%d\n", key, p4),
		fmt.Sprintf("peers connect with: p2pdemo peer --server %s@[::1]:%d\n", key, p6),
		fmt.Sprintf("dual-stack peers connect with: p2pdemo peer --server %s@127.0.0.1:%d,[::1]:%d\n", key, p4, p6),
		fmt.Sprintf("TURN relay at %v (UDP and TCP), relayed addresses 127.0.0.1\n", v4),
		fmt.Sprintf("TURN relay at [::1]:%d (UDP and TCP), relayed addresses ::1\n", p6),
		fmt.Sprintf("  UDP and TCP %d (rendezvous, STUN, TURN)\n", p4),
		fmt.Sprintf("  UDP and TCP %d (rendezvous, STUN, TURN)\n", p6),
		fmt.Sprintf("  UDP %d (STUN, RFC 5780 NAT behaviour tests)\n", p2),
		"  UDP 49152-65535 (TURN relay allocations, IPv4 and IPv6)\n",
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner has no %q:\n%s", want, banner)
		}
	}
	// Every --server line is one p2p parses.
	for _, line := range strings.Split(banner, "\n") {
		_, line, _ = strings.Cut(line, "peers connect with: ")
		if arg, ok := strings.CutPrefix(line, "p2pdemo peer --server "); ok {
			n, err := p2p.New(p2p.Config{Rendezvous: arg, ListenAddr: "127.0.0.1:0"})
			if err != nil {
				t.Errorf("%q: %v", arg, err)
				continue
			}
			n.Close()
		}
	}

	for _, tc := range []struct {
		network string
		local   net.IP
		server  netip.AddrPort
		other   bool
	}{{"udp4", net.IPv4(127, 0, 0, 1), v4, true}, {"udp6", net.IPv6loopback, v6, false}} {
		c, err := net.ListenUDP(tc.network, &net.UDPAddr{IP: tc.local})
		if err != nil {
			t.Fatal(err)
		}
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		c.WriteToUDPAddrPort(req.Raw, tc.server)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		n, from, err := c.ReadFromUDPAddrPort(buf)
		me := c.LocalAddr().(*net.UDPAddr).AddrPort()
		c.Close()
		if err != nil {
			t.Fatalf("%s: no STUN answer from %v: %v", tc.network, tc.server, err)
		}
		m := &stun.Message{Raw: buf[:n]}
		var xa stun.XORMappedAddress
		var other stun.OtherAddress
		if m.Decode() != nil || xa.GetFrom(m) != nil || from != tc.server {
			t.Fatalf("%s: answer %v from %v", tc.network, m, from)
		}
		if !xa.IP.Equal(me.Addr().AsSlice()) || xa.Port != int(me.Port()) {
			t.Errorf("%s: mapped %v, client %v", tc.network, xa, me)
		}
		if got := other.GetFrom(m) == nil; got != tc.other {
			t.Errorf("%s: OTHER-ADDRESS present %v, want %v (%v)", tc.network, got, tc.other, other)
		}
		tcp := "tcp4"
		if tc.network == "udp6" {
			tcp = "tcp6"
		}
		if conn, err := net.DialTimeout(tcp, tc.server.String(), 5*time.Second); err != nil {
			t.Errorf("no TCP listener at %v: %v", tc.server, err)
		} else {
			conn.Close()
		}
	}
}

// TestServerUnspecifiedBothFamilies: 0.0.0.0 and [::] at one port are two
// sockets and two listeners (IPv6-only), not one dual-stack socket that
// the second address would collide with. Without an IPv6 --relay-ip the
// embedded TURN at [::] relays over IPv4, and the banner says so.
func TestServerUnspecifiedBothFamilies(t *testing.T) {
	haveIPv6(t)
	p := freeUDPPort(t, "::")
	f, err := parseServerFlags([]string{"--listen", fmt.Sprintf("0.0.0.0:%d,[::]:%d", p, p), "--relay-ip", "127.0.0.1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	st, err := startServer(f)
	if err != nil {
		t.Fatalf("0.0.0.0 and [::] at %d: %v", p, err)
	}
	defer st.srv.Close()
	var out bytes.Buffer
	printServerBanner(&out, st)
	key := p2p.PeerID(st.srv.PublicKey()).String()
	for _, want := range []string{
		fmt.Sprintf("listening on 0.0.0.0:%d, [::]:%d (UDP and TCP)", p, p),
		fmt.Sprintf("--server %s@THIS-HOST:%d\n", key, p),
		fmt.Sprintf("--server %s@[THIS-HOST-IPV6]:%d\n", key, p),
		fmt.Sprintf("TURN relay at 0.0.0.0:%d (UDP and TCP), relayed addresses 127.0.0.1\n", p),
		fmt.Sprintf("TURN relay at [::]:%d (UDP and TCP), relayed addresses 127.0.0.1: its IPv6 clients are relayed over IPv4 (give --relay-ip a public IPv6 address for IPv6 ones)\n", p),
		"  UDP 49152-65535 (TURN relay allocations, IPv4)\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("banner has no %q:\n%s", want, out.String())
		}
	}
}

// TestServerPeerOverIPv6: the process end to end: a server on 127.0.0.1
// and [::1], and a peer given the banner's IPv6 --server line registers
// over IPv6.
func TestServerPeerOverIPv6(t *testing.T) {
	haveIPv6(t)
	srv := start(t, "server", "--listen", "127.0.0.1:0,[::1]:0", "--status", "100ms")
	line := srv.wait("peers connect with: p2pdemo peer --server ")
	key, _, _ := strings.Cut(strings.TrimPrefix(line, "peers connect with: p2pdemo peer --server "), "@")
	six := srv.wait("--server " + key + "@[::1]:")
	server := strings.TrimPrefix(six, "peers connect with: p2pdemo peer --server ")
	peer := start(t, "peer", "--server", server, "--listen", "[::1]:0", "--echo")
	peer.wait("registered with the rendezvous server")
	srv.wait("status: 1 peers registered")
}

// TestRelayIPFlag: --relay-ip takes one public IP per family, each going
// with the first --listen address of its family (relay sockets bind
// there); a listen address with an IP is its family's relay IP unless
// given one; 0.0.0.0 needs an IPv4 --relay-ip, [::] an IPv6 one or an
// IPv4 relay IP to relay its clients over; every misuse is refused.
func TestRelayIPFlag(t *testing.T) {
	ip := netip.MustParseAddr
	for _, tc := range []struct {
		listen, relayIP string
		ip4, ip6        string // want RelayIP, RelayIP6 ("" none)
		bind4, bind6    string
	}{
		{"203.0.113.7:3478", "", "203.0.113.7", "", "", ""},
		{"0.0.0.0:3478", "203.0.113.7", "203.0.113.7", "", "0.0.0.0", ""},
		{"[2001:db8::7]:3478", "", "", "2001:db8::7", "", ""},
		{"[::]:3478", "2001:db8::7", "", "2001:db8::7", "", "::"},
		{"10.0.0.7:3478,[2001:db8::7]:3478", "203.0.113.7", "203.0.113.7", "2001:db8::7", "10.0.0.7", ""},
		{"0.0.0.0:3478,[::]:3478", "2001:db8::7, 203.0.113.7", "203.0.113.7", "2001:db8::7", "0.0.0.0", "::"},
		{"0.0.0.0:3478,[::]:3478", "203.0.113.7", "203.0.113.7", "", "0.0.0.0", ""},
		{"0.0.0.0:3478,[::]:3478", "::ffff:203.0.113.7", "203.0.113.7", "", "0.0.0.0", ""},
	} {
		f, err := parseServerFlags([]string{"--listen", tc.listen, "--relay-ip", tc.relayIP}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _, _, err := embeddedTURN(f, f.listen)
		if err != nil {
			t.Errorf("--listen %s --relay-ip %q: %v", tc.listen, tc.relayIP, err)
			continue
		}
		want := func(s string) netip.Addr {
			if s == "" {
				return netip.Addr{}
			}
			return ip(s)
		}
		if cfg.RelayIP != want(tc.ip4) || cfg.RelayIP6 != want(tc.ip6) || cfg.RelayBind != tc.bind4 || cfg.RelayBind6 != tc.bind6 {
			t.Errorf("--listen %s --relay-ip %q: RelayIP %v RelayIP6 %v RelayBind %q RelayBind6 %q, want %s %s %q %q",
				tc.listen, tc.relayIP, cfg.RelayIP, cfg.RelayIP6, cfg.RelayBind, cfg.RelayBind6, tc.ip4, tc.ip6, tc.bind4, tc.bind6)
		}
	}
	for _, tc := range []struct{ listen, relayIP string }{
		{"0.0.0.0:3478", ""},
		{"[::]:3478", ""},
		{"[::]:3478", "203.0.113.7"},                 // no IPv4 listen address for it
		{"203.0.113.7:3478", "2001:db8::7"},          // no IPv6 one
		{"0.0.0.0:3478", "203.0.113.7,198.51.100.7"}, // two IPv4
		{"0.0.0.0:3478", "0.0.0.0"},
		{"0.0.0.0:3478", "somehost"},
	} {
		f, err := parseServerFlags([]string{"--listen", tc.listen, "--relay-ip", tc.relayIP}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := embeddedTURN(f, f.listen); err == nil {
			t.Errorf("--listen %s --relay-ip %q accepted", tc.listen, tc.relayIP)
		}
	}
}

// TestServerIPv6Only: --listen [::1]:PORT alone starts the server with
// the embedded TURN, which relays over IPv6; the banner says so, with the
// address in brackets; a client registered over IPv6 is told that TURN
// address and allocates an IPv6 relayed address there, over UDP and TCP.
func TestServerIPv6Only(t *testing.T) {
	leakcheck.Check(t)
	haveIPv6(t)
	p := freeUDPPort(t, "::1")
	f, err := parseServerFlags([]string{"--listen", fmt.Sprintf("[::1]:%d", p)}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	st, err := startServer(f)
	if err != nil {
		t.Fatalf("IPv6-only server: %v", err)
	}
	defer st.srv.Close()
	var out bytes.Buffer
	printServerBanner(&out, st)
	at := netip.AddrPortFrom(netip.IPv6Loopback(), p)
	for _, want := range []string{
		fmt.Sprintf("listening on [::1]:%d (UDP and TCP)\n", p),
		fmt.Sprintf("TURN relay at [::1]:%d (UDP and TCP), relayed addresses ::1\n", p),
		fmt.Sprintf("  UDP and TCP %d (rendezvous, STUN, TURN)\n", p),
		"  UDP 49152-65535 (TURN relay allocations, IPv6)\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("banner has no %q:\n%s", want, out.String())
		}
	}
	tr := registerForTURN(t, at)
	want := []rendezvous.TURNServer{{Transport: relay.UDP, Addr: at}, {Transport: relay.TCP, Addr: at}}
	if !slices.Equal(tr.Servers, want) {
		t.Fatalf("told TURN %v, want %v", tr.Servers, want)
	}
	for _, srv := range tr.Servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := relay.Allocate(ctx, relay.ClientConfig{Server: srv.Addr, Transport: srv.Transport, Credentials: tr.Credentials})
		cancel()
		if err != nil {
			t.Fatalf("allocate over %v at %v: %v", srv.Transport, srv.Addr, err)
		}
		if got := c.RelayedAddr(); got.Addr() != netip.IPv6Loopback() || got.Port() < 49152 {
			t.Errorf("over %v: relayed address %v, want ::1 in 49152-65535", srv.Transport, got)
		}
		c.Close()
	}
}

// registerForTURN registers a fresh identity, relay allowed, over UDP at
// srv and returns the TURN section of its registration.
func registerForTURN(t *testing.T, srv netip.AddrPort) *rendezvous.TURN {
	t.Helper()
	network := "udp4"
	if srv.Addr().Is6() {
		network = "udp6"
	}
	conn, err := net.ListenUDP(network, &net.UDPAddr{IP: srv.Addr().AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var priv [32]byte
	rand.Read(priv[:])
	pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *rendezvous.TURN, 1)
	c := rendezvous.NewClient(rendezvous.ClientConfig{Server: srv, Private: priv, Public: rendezvous.Key(pub),
		Send:         func(b []byte, to netip.AddrPort) { conn.WriteToUDPAddrPort(b, to) },
		RelayAllowed: func() bool { return true },
		OnTURN: func(tr *rendezvous.TURN) {
			select {
			case got <- tr:
			default:
			}
		}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.Handle(buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
		}
	}()
	defer func() { conn.Close(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.Tick(time.Now())
		select {
		case tr := <-got:
			return tr
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no TURN credentials in REGISTERED")
		}
	}
}
