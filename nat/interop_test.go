package nat_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/netlab"
	"github.com/gamewire/gamewire/nat"
)

// lookTool finds a program of a Debian package. It skips without it, and
// fails where GAMEWIRE_REQUIRE_LAB=1 (CI installs it). /usr/sbin is tried
// too: stund lives there, and a user's PATH often lacks it.
func lookTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/" + name); serr == nil {
			return "/usr/sbin/" + name
		}
		if os.Getenv(netlab.RequireEnv) == "1" {
			t.Fatalf("%s not found (apt-get install %s; %s=1: interop tests are mandatory here): %v", name, pkg, netlab.RequireEnv, err)
		}
		t.Skipf("%s not found (apt-get install %s)", name, pkg)
	}
	return p
}

// startStund runs Debian's stund (package stun-server, the RFC 3489
// server of the Vovida code) on 127.0.0.1 and 127.0.0.2, and returns its
// primary and changed addresses once it answers.
func startStund(t *testing.T) (primary, changed netip.AddrPort) {
	t.Helper()
	stund := lookTool(t, "stund", "stun-server")
	if c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}); err != nil {
		t.Skipf("no 127.0.0.2: %v", err)
	} else {
		c.Close()
	}
	for range 10 {
		// stund takes two ports on each address: find two free on both.
		p1, p2 := freePortPair(t)
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, stund, "-h", "127.0.0.1", "-a", "127.0.0.2",
			"-p", strconv.Itoa(int(p1)), "-o", strconv.Itoa(int(p2)))
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatalf("stund: %v", err)
		}
		exited := make(chan struct{})
		go func() {
			cmd.Wait()
			close(exited)
		}()
		stop := func() {
			cancel() // kills this stund, and only it
			<-exited
		}
		primary = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p1)
		if answers(primary, 5*time.Second) {
			t.Cleanup(stop)
			return primary, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), p2)
		}
		stop() // a port was taken after all, or it did not start: again
	}
	t.Fatal("stund did not start answering")
	return
}

// answers reports whether a plain Binding request (no padding: what any
// server takes, so this does not depend on the client under test) to
// server is answered within d, asking every 100 ms.
func answers(server netip.AddrPort, d time.Duration) bool {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return false
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	buf := make([]byte, 1500)
	for end := time.Now().Add(d); time.Now().Before(end); {
		c.WriteToUDPAddrPort(req.Raw, server)
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := c.ReadFromUDPAddrPort(buf); err == nil && nat.IsSTUN(buf[:n]) {
			return true
		}
	}
	return false
}

// freePortPair returns two UDP ports free on both 127.0.0.1 and
// 127.0.0.2 at the time of asking.
func freePortPair(t *testing.T) (uint16, uint16) {
	t.Helper()
	var ports []uint16
	for len(ports) < 2 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		c2, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: int(p)})
		if err == nil {
			c2.Close()
			ports = append(ports, p)
		}
		c.Close()
	}
	return ports[0], ports[1]
}

// TestInteropStund runs our client against stund, an RFC 3489 server:
// it ignores padded requests (PADDING is unknown to it), so every answer
// here is to an unpadded retransmission, and it names its other address in
// CHANGED-ADDRESS. Query, Discover with stund as the primary (mapping) and
// as an extra server beside a primary with no second address
// (Config.STUNServers), and DiscoverFiltering (its CHANGE-REQUEST) all
// learn what they should on loopback: no NAT.
func TestInteropStund(t *testing.T) {
	leakcheck.Check(t)
	primary, changed := startStund(t)
	st, me := stunClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	r, err := st.Query(ctx, primary, nat.ChangeNone)
	if err != nil || r.Mapped != me || r.Other != changed || r.From != primary {
		t.Fatalf("Query: %+v, %v; want mapped %v, other %v, from %v", r, err, me, changed, primary)
	}

	b, err := nat.Discover(ctx, st, primary, nil)
	if err != nil || b.Mapped != me || b.Alternate != changed || b.Mapping != nat.MappingEndpointIndependent {
		t.Fatalf("Discover against stund: %+v, %v", b, err)
	}

	b, err = nat.Discover(ctx, st, singleAddressServer(t), []netip.AddrPort{primary})
	if err != nil || b.Mapped != me || b.Mapping != nat.MappingEndpointIndependent {
		t.Fatalf("Discover with stund as an extra server: %+v, %v", b, err)
	}

	fc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	if f := nat.DiscoverFiltering(ctx, fc, primary); f != nat.FilteringEndpointIndependent {
		t.Fatalf("DiscoverFiltering against stund: %v, want %v", f, nat.FilteringEndpointIndependent)
	}
}
