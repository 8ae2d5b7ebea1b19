package udpbatch

import (
	"net"
	"net/netip"
	"sync/atomic"
)

// Message is one datagram.
type Message struct {
	// Buf is, for a read, the buffer to fill (its len, not its cap, is the
	// room used) and, for a write, the datagram.
	Buf []byte

	// N is, for a read, the length of the datagram received. When it is
	// more than len(Buf) the datagram was truncated (see Truncated).
	N int

	// Addr is, for a read, the source (IPv4 sources are returned in their
	// 4-byte form even on an IPv6 socket) and, for a write, the
	// destination.
	Addr netip.AddrPort

	// Truncated reports, for a read, a datagram longer than Buf: Buf holds
	// its first len(Buf) bytes, N its real length, and it should be
	// dropped.
	Truncated bool
}

// Conn does batched reads and writes on a net.PacketConn. Only one goroutine
// may call ReadBatch at a time; WriteBatch, LocalAddr, Batching and
// SoftErrors are safe for concurrent use.
type Conn struct {
	pc    net.PacketConn
	udp   *net.UDPConn // pc when it is one, for the allocation-free fallback calls
	laddr netip.AddrPort
	fam   family
	sys   *batcher // non-nil when the recvmmsg/sendmmsg path is in use
	soft  atomic.Uint64

	// scratch receives a datagram in the fallback path when Buf might be
	// too short to tell its real length. Used by ReadBatch only.
	scratch []byte
}

// family is the address family of the socket, as far as it is known.
type family uint8

const (
	famUnknown family = iota // a PacketConn whose addresses are not IPv4 or IPv6
	famV4                    // AF_INET: IPv4 peers only
	famV6                    // AF_INET6: IPv6 peers, and IPv4 peers as v4-mapped
	famV6Only                // AF_INET6 with IPV6_V6ONLY: IPv6 peers only
)

// maxBatch is the most datagrams one recvmmsg or sendmmsg moves: Linux
// caps vlen at UIO_MAXIOV, so larger arrays would only waste memory.
const maxBatch = 1024

// New wraps pc. On Linux, when pc is a *net.UDPConn, it uses recvmmsg and
// sendmmsg on pc's socket through pc.SyscallConn, so goroutines still wait in
// the Go netpoller and pc's deadlines and Close apply. Otherwise (another
// system, or another PacketConn such as a simulated network) it moves one
// datagram per call with ReadFrom and WriteTo, through the same API.
//
// The Conn does not own pc: closing pc ends pending and later calls with an
// error matching net.ErrClosed.
func New(pc net.PacketConn) *Conn {
	c := &Conn{pc: pc}
	raw := addrPortOf(pc.LocalAddr())
	c.laddr = netip.AddrPortFrom(raw.Addr().Unmap(), raw.Port())
	c.fam = familyOf(raw)
	if udp, ok := pc.(*net.UDPConn); ok {
		c.udp = udp
		c.sys = newBatcher(c) // nil where batching is unavailable
		if c.sys != nil {
			c.fam = c.sys.fam
		}
	}
	return c
}

// Batching reports whether the recvmmsg/sendmmsg path is in use.
func (c *Conn) Batching() bool { return c.sys != nil }

// LocalAddr returns the socket's address, IPv4 unmapped. A dual-stack
// socket bound to the wildcard reports [::]:port.
func (c *Conn) LocalAddr() netip.AddrPort { return c.laddr }

// SoftErrors returns how many socket errors were skipped because they
// report ICMP messages about earlier datagrams (such as ECONNREFUSED after
// sending to a closed port) rather than a failure of the call itself.
func (c *Conn) SoftErrors() uint64 { return c.soft.Load() }

// ReadBatch blocks until at least one datagram is available, then fills
// msgs[:n] with up to len(msgs) datagrams (at most 1024) without blocking
// further; the fallback path returns exactly one. It sets N, Addr and
// Truncated and writes into Buf. Only one goroutine may call ReadBatch at a
// time.
//
// Soft errors (see SoftErrors) are skipped. Other errors are returned with
// n == 0: the socket's own as net reports them, so errors.Is(err,
// net.ErrClosed) and errors.Is(err, os.ErrDeadlineExceeded) work, and a
// failed recvmmsg as a *net.OpError wrapping an *os.SyscallError, as net
// reports a failed recvfrom.
func (c *Conn) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	if c.sys != nil {
		return c.sys.read(msgs)
	}
	if err := c.readOne(&msgs[0]); err != nil {
		return 0, err
	}
	return 1, nil
}

// WriteBatch sends msgs[i].Buf to msgs[i].Addr for every message, in order,
// looping over sendmmsg (up to 1024 messages a call) until all are sent,
// and returns how many were sent. On error, n is the index of the message
// that failed (all before it were sent): ErrAddrFamily or ErrInvalidAddr
// for that message's address, or the socket's error. A soft error (see
// SoftErrors) is counted and the message tried once more. Safe for
// concurrent use: each call's datagrams go out in order, but those of
// concurrent calls may interleave.
//
// The socket should be unconnected: on a connected one the fallback path
// fails (net refuses WriteTo on a connected UDPConn).
func (c *Conn) WriteBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	if c.sys != nil {
		return c.sys.write(msgs)
	}
	for i := range msgs {
		if err := c.writeOne(&msgs[i]); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

// familyOf guesses the socket family from its local address as the
// PacketConn reports it: Go reports an AF_INET socket's address in 4-byte
// form and an AF_INET6 one in 16-byte form.
func familyOf(raw netip.AddrPort) family {
	switch {
	case raw.Addr().Is4():
		return famV4
	case raw.Addr().Is6():
		return famV6
	}
	return famUnknown
}

// checkDest validates a destination for a socket of family f, returning it
// in the form that family sends to.
func checkDest(f family, ap netip.AddrPort) (netip.AddrPort, error) {
	a := ap.Addr()
	if !a.IsValid() {
		return ap, ErrInvalidAddr
	}
	if f == famV4 {
		if a = a.Unmap(); !a.Is4() {
			return ap, ErrAddrFamily
		}
		return netip.AddrPortFrom(a, ap.Port()), nil
	}
	if f == famV6Only && a.Unmap().Is4() {
		return ap, ErrAddrFamily
	}
	return ap, nil
}

// addrPortOf converts a net.Addr without losing the 4- or 16-byte form of
// the IP (familyOf relies on it). Other address types are parsed from their
// String; an unparsable one yields the zero AddrPort.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			return netip.AddrPort{}
		}
		if a.Zone != "" {
			ip = ip.WithZone(a.Zone)
		}
		return netip.AddrPortFrom(ip, uint16(a.Port))
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
