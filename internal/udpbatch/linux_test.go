//go:build linux

package udpbatch

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestMmsghdrLayout checks that the x/sys structs handed to the kernel have
// the sizes its headers say, and that a sockaddr_in fits where the package
// stores it.
func TestMmsghdrLayout(t *testing.T) {
	if s := unsafe.Sizeof(unix.Mmsghdr{}); s != unix.SizeofMmsghdr {
		t.Errorf("Mmsghdr is %d bytes, want %d", s, unix.SizeofMmsghdr)
	}
	if s := unsafe.Sizeof(unix.Msghdr{}); s != unix.SizeofMsghdr {
		t.Errorf("Msghdr is %d bytes, want %d", s, unix.SizeofMsghdr)
	}
	if unix.SizeofSockaddrInet4 > unsafe.Sizeof(unix.RawSockaddrInet6{}) {
		t.Error("sockaddr_in does not fit in sockaddr_in6 storage")
	}
}

func TestSockaddr(t *testing.T) {
	lo, err := net.InterfaceByIndex(1)
	if err != nil || lo.Flags&net.FlagLoopback == 0 {
		t.Skip("interface 1 is not loopback")
	}
	var z zoneCache
	v4 := netip.MustParseAddrPort("192.0.2.1:4660")
	v6 := netip.MustParseAddrPort("[2001:db8::1]:4660")
	tests := []struct {
		fam     family
		in      netip.AddrPort
		err     error
		namelen uint32
		out     netip.AddrPort // what decoding gives back
		scope   uint32
	}{
		{famV4, v4, nil, unix.SizeofSockaddrInet4, v4, 0},
		{famV4, netip.MustParseAddrPort("[::ffff:192.0.2.1]:4660"), nil, unix.SizeofSockaddrInet4, v4, 0},
		{famV4, v6, ErrAddrFamily, 0, netip.AddrPort{}, 0},
		{famV4, netip.AddrPort{}, ErrInvalidAddr, 0, netip.AddrPort{}, 0},
		{famV6, v4, nil, unix.SizeofSockaddrInet6, v4, 0},
		{famV6, v6, nil, unix.SizeofSockaddrInet6, v6, 0},
		{famV6, netip.MustParseAddrPort("[fe80::1%" + lo.Name + "]:1"), nil, unix.SizeofSockaddrInet6,
			netip.MustParseAddrPort("[fe80::1%" + lo.Name + "]:1"), 1},
		{famV6, netip.MustParseAddrPort("[fe80::1%1]:1"), nil, unix.SizeofSockaddrInet6,
			netip.MustParseAddrPort("[fe80::1%" + lo.Name + "]:1"), 1},
		{famV6, netip.MustParseAddrPort("[fe80::1%nosuchif0]:1"), ErrInvalidAddr, 0, netip.AddrPort{}, 0},
		{famV6, netip.AddrPort{}, ErrInvalidAddr, 0, netip.AddrPort{}, 0},
		{famV6Only, v6, nil, unix.SizeofSockaddrInet6, v6, 0},
		{famV6Only, v4, ErrAddrFamily, 0, netip.AddrPort{}, 0},
	}
	for _, tt := range tests {
		var sa unix.RawSockaddrInet6
		namelen, err := encodeSockaddr(&sa, tt.fam, tt.in, &z)
		if !errors.Is(err, tt.err) || namelen != tt.namelen {
			t.Errorf("encode %v on family %d: %d, %v; want %d, %v", tt.in, tt.fam, namelen, err, tt.namelen, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		raw := (*[unix.SizeofSockaddrInet6]byte)(unsafe.Pointer(&sa))
		if port := raw[2:4]; port[0] != byte(tt.in.Port()>>8) || port[1] != byte(tt.in.Port()) {
			t.Errorf("encode %v: port bytes %x, want network order", tt.in, port)
		}
		if tt.fam == famV6 && sa.Scope_id != tt.scope {
			t.Errorf("encode %v: scope id %d, want %d", tt.in, sa.Scope_id, tt.scope)
		}
		if got := decodeSockaddr(&sa, &z); got != tt.out {
			t.Errorf("decode of %v: %v, want %v", tt.in, got, tt.out)
		}
	}
}

// TestLinkLocal sends between two sockets bound to a link-local address of
// a real interface and checks that the zone survives both ways.
func TestLinkLocal(t *testing.T) {
	leakcheck.Check(t)
	ap, ok := linkLocalAddr()
	if !ok {
		t.Skip("no interface with a link-local IPv6 address")
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			a, _ := open(t, v, "udp6", ap.String())
			b, _ := open(t, v, "udp6", ap.String())
			if a.LocalAddr().Addr().Zone() == "" {
				t.Fatalf("LocalAddr %v has no zone", a.LocalAddr())
			}
			roundTrip(t, a, b, b.LocalAddr(), a.LocalAddr())
		})
	}
}

func linkLocalAddr() (netip.AddrPort, bool) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.AddrPort{}, false
	}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, _ := netip.AddrFromSlice(ipn.IP)
			if ip.Is6() && ip.IsLinkLocalUnicast() {
				return netip.AddrPortFrom(ip.WithZone(ifi.Name), 0), true
			}
		}
	}
	return netip.AddrPort{}, false
}

// TestRecvErr covers an unconnected socket with IP_RECVERR set, where the
// kernel both reports ICMP errors on reads and queues them on the error
// queue, which ReadBatch must empty.
func TestRecvErr(t *testing.T) {
	leakcheck.Check(t)
	u := listen(t, "udp4", "127.0.0.1:0")
	rc, _ := u.SyscallConn()
	var serr error
	rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVERR, 1)
	})
	if serr != nil {
		t.Fatal(serr)
	}
	c := New(u)
	closed := listen(t, "udp4", "127.0.0.1:0")
	dead := closed.LocalAddr().(*net.UDPAddr).AddrPort()
	closed.Close()
	msgs := []Message{{Buf: []byte("a"), Addr: dead}, {Buf: []byte("b"), Addr: dead}, {Buf: []byte("c"), Addr: dead}}
	if n, err := c.WriteBatch(msgs); n != 3 || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	got := make(chan error, 1)
	r := recvBufs(4, 64)
	go func() {
		_, err := c.ReadBatch(r)
		got <- err
	}()
	waitFor(t, "the refusal to be counted", func() bool { return c.SoftErrors() > 0 })
	// A read that would wait sees no error left behind.
	if n, err := c.WriteBatch([]Message{{Buf: []byte("self"), Addr: c.LocalAddr()}}); n != 1 || err != nil {
		t.Fatalf("WriteBatch to self = %d, %v", n, err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if string(r[0].Buf[:r[0].N]) != "self" {
		t.Fatalf("got %q", r[0].Buf[:r[0].N])
	}
	var queued int
	rc.Control(func(fd uintptr) {
		_, _, _, _, err := unix.Recvmsg(int(fd), nil, nil, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if err == nil {
			queued++
		}
	})
	if queued != 0 {
		t.Error("error queue not emptied")
	}
}

// TestAllocs checks that steady-state batches allocate nothing, on an IPv4
// socket and on a dual-stack one talking to an IPv4 peer (mapped addresses
// both ways).
func TestAllocs(t *testing.T) {
	leakcheck.Check(t)
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	const batch, runs = 32, 20
	for _, tc := range []struct{ name, network, addr string }{
		{"ipv4", "udp4", "127.0.0.1:0"},
		{"dualstack", "udp", "[::]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := open(t, variants[0], "udp4", "127.0.0.1:0")
			r, _ := open(t, variants[0], tc.network, tc.addr)
			out := make([]Message, batch)
			back := make([]Message, batch)
			for i := range out {
				out[i] = Message{Buf: payload(0, i, 64), Addr: loopback4(r)}
				back[i] = Message{Buf: payload(1, i, 64), Addr: s.LocalAddr()}
			}
			in := recvBufs(batch, 2048)
			write := func(c *Conn, msgs []Message) {
				if n, err := c.WriteBatch(msgs); n != len(msgs) || err != nil {
					t.Fatalf("WriteBatch = %d, %v", n, err)
				}
			}
			for range 3 { // warm up: grow arrays, fill the pool, resolve nothing
				write(s, out)
				readN(t, r, in)
				write(r, back)
				readN(t, s, in)
			}

			if a := testing.AllocsPerRun(runs, func() { write(r, back) }); a != 0 {
				t.Errorf("WriteBatch of %d: %v allocations", batch, a)
			}
			for range runs + 1 {
				readN(t, s, in)
			}

			for range runs + 1 { // AllocsPerRun runs the function once more to warm up
				write(s, out)
			}
			if a := testing.AllocsPerRun(runs, func() { readN(t, r, in) }); a != 0 {
				t.Errorf("ReadBatch of %d: %v allocations", batch, a)
			}
			if in[0].Addr != s.LocalAddr() {
				t.Errorf("source %v, want %v", in[0].Addr, s.LocalAddr())
			}
		})
	}
}

// TestDecodeZoneAllocs checks that a link-local source with a cached zone
// is decoded without allocating.
func TestDecodeZoneAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	var z zoneCache
	sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Scope_id: 1}
	sa.Addr[0], sa.Addr[1], sa.Addr[15] = 0xfe, 0x80, 1
	want := decodeSockaddr(&sa, &z)
	if want.Addr().Zone() == "" {
		t.Fatalf("decoded %v without zone", want)
	}
	a := testing.AllocsPerRun(100, func() {
		if decodeSockaddr(&sa, &z) != want {
			t.Fatal("decode changed")
		}
	})
	if a != 0 {
		t.Errorf("%v allocations per decode", a)
	}
	var out unix.RawSockaddrInet6
	a = testing.AllocsPerRun(100, func() {
		if _, err := encodeSockaddr(&out, famV6, want, &z); err != nil {
			t.Fatal(err)
		}
	})
	if a != 0 {
		t.Errorf("%v allocations per encode", a)
	}
}

// TestSoftErrorOnWrite: a pending ICMP report makes the next send fail
// with it, though the report is about an earlier datagram. WriteBatch must
// count it and send the message anyway.
func TestSoftErrorOnWrite(t *testing.T) {
	leakcheck.Check(t)
	closed := listen(t, "udp4", "127.0.0.1:0")
	dead := closed.LocalAddr().(*net.UDPAddr)
	closed.Close()
	u, err := net.DialUDP("udp4", nil, dead)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	c := New(u)
	if _, err := u.Write([]byte("to nobody")); err != nil {
		t.Fatal(err)
	}
	rc, _ := u.SyscallConn()
	waitFor(t, "the refusal to be pending", func() bool {
		var pending bool
		rc.Control(func(fd uintptr) {
			// poll reports POLLERR for a pending error without consuming it.
			fds := []unix.PollFd{{Fd: int32(fd)}}
			n, _ := unix.Poll(fds, 0)
			pending = n == 1 && fds[0].Revents&unix.POLLERR != 0
		})
		return pending
	})
	live, _ := open(t, variants[0], "udp4", "127.0.0.1:0")
	if n, err := c.WriteBatch([]Message{{Buf: []byte("hello"), Addr: live.LocalAddr()}}); n != 1 || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	if c.SoftErrors() != 1 {
		t.Errorf("SoftErrors() = %d, want 1", c.SoftErrors())
	}
	r := recvBufs(1, 64)
	readN(t, live, r)
	if string(r[0].Buf[:r[0].N]) != "hello" || r[0].Addr != c.LocalAddr() {
		t.Fatalf("got %q from %v", r[0].Buf[:r[0].N], r[0].Addr)
	}
}
