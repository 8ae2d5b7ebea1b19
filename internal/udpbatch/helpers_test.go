package udpbatch

import (
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
)

// hidden wraps a UDPConn so that New does not see its type and takes the
// ReadFrom/WriteTo fallback path.
type hidden struct{ net.PacketConn }

// variant is a way of wrapping a socket: through the batch path where the
// system has one, or through the fallback.
type variant struct {
	name string
	wrap func(*net.UDPConn) net.PacketConn
}

var variants = []variant{
	{"direct", func(c *net.UDPConn) net.PacketConn { return c }},
	{"fallback", func(c *net.UDPConn) net.PacketConn { return hidden{c} }},
}

// socketBuf is the buffer size asked for on test sockets; Linux doubles
// it, capped by net.core.rmem_max and wmem_max.
const socketBuf = 4 << 20

// listen opens a UDP socket with 4 MiB buffers, closed when the test ends.
func listen(t testing.TB, network, addr string) *net.UDPConn {
	t.Helper()
	la, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP(network, la)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetReadBuffer(socketBuf); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWriteBuffer(socketBuf); err != nil {
		t.Fatal(err)
	}
	// A generous deadline turns a lost datagram into a failure, not a hang.
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

// open returns a Conn on a new socket, wrapped as v says, and the socket.
func open(t testing.TB, v variant, network, addr string) (*Conn, *net.UDPConn) {
	t.Helper()
	u := listen(t, network, addr)
	c := New(v.wrap(u))
	if want := v.name == "direct" && runtime.GOOS == "linux"; c.Batching() != want {
		t.Fatalf("Batching() = %v for %s on %s", c.Batching(), v.name, runtime.GOOS)
	}
	return c, u
}

// haveIPv6 reports whether ::1 can be bound.
func haveIPv6() bool {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// loopback4 is 127.0.0.1 with c's port: where to reach a socket bound to
// 127.0.0.1 or to the wildcard.
func loopback4(c *Conn) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), c.LocalAddr().Port())
}

func loopback6(c *Conn) netip.AddrPort {
	return netip.AddrPortFrom(netip.IPv6Loopback(), c.LocalAddr().Port())
}

// recvBufs returns n messages with buffers of size bytes each.
func recvBufs(n, size int) []Message {
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i].Buf = make([]byte, size)
	}
	return msgs
}

// readN reads exactly n datagrams into msgs[:n], however they are batched.
func readN(t testing.TB, c *Conn, msgs []Message) {
	t.Helper()
	for got := 0; got < len(msgs); {
		k, err := c.ReadBatch(msgs[got:])
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d: %v", got, len(msgs), err)
		}
		if k < 1 || k > len(msgs)-got {
			t.Fatalf("ReadBatch returned %d for %d messages", k, len(msgs)-got)
		}
		got += k
	}
}

// waitFor polls cond without sleeping until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// waitParked waits until a goroutine is parked in the netpoller inside
// ReadBatch, so that what the test does next happens to a blocked reader.
func waitParked(t testing.TB) {
	t.Helper()
	buf := make([]byte, 1<<20)
	waitFor(t, "ReadBatch to block", func() bool {
		s := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(s, "\n\n") {
			if strings.Contains(g, "[IO wait") && strings.Contains(g, "udpbatch.(*Conn).ReadBatch") {
				return true
			}
		}
		return false
	})
}
