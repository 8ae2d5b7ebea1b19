package path

import (
	"net/netip"

	"github.com/gamewire/gamewire/internal/udpbatch"
)

// Kind is how a socket reaches peers.
type Kind uint8

// Socket kinds.
const (
	Direct Kind = iota // UDP straight to the peer: the main socket or an extra one
	TCP                // a TCP link straight to the peer
	Relay              // a TURN allocation
)

func (k Kind) String() string {
	switch k {
	case Direct:
		return "direct"
	case TCP:
		return "tcp"
	case Relay:
		return "relay"
	}
	return "unknown"
}

// Socket is one of a node's ways to send, as wireguard-go's conn.Bind is:
// the main UDP socket, an extra UDP socket, a TURN allocation or a TCP
// link. Each has a reader of its own that hands what it receives to the
// node together with the Socket it came in on; replies go out on that
// Socket. Implementations are safe for concurrent use and never block on a
// lock of the caller's.
type Socket interface {
	// WriteTo sends one datagram to to. The relay and a TCP link ignore
	// to's port where it means nothing to them (a link has one peer).
	WriteTo(b []byte, to netip.AddrPort) error
	// WriteBatch sends datagrams, each to its own address.
	WriteBatch(msgs []udpbatch.Message) error
	// Kind says how the socket reaches peers.
	Kind() Kind
	// Closed reports whether the socket was closed: a route over it is
	// dead and sessions on it fall back to the main socket.
	Closed() bool
}

// Route is where a session sends: the peer's address and the socket that
// reaches it. A Route is immutable; a move stores a new one, so readers
// never see the address of one path with the socket of another.
type Route struct {
	Remote netip.AddrPort
	Sock   Socket
	// Gen is the session attempt the route belongs to: a route left from
	// an earlier attempt is not used for a new one.
	Gen uint64
}

// Kind is the route's socket kind.
func (r *Route) Kind() Kind { return r.Sock.Kind() }

// Same reports whether a and b are one path: the same socket, and the same
// peer address, where an IPv4-mapped address is the IPv4 address and ::1 and
// an IPv4 loopback address with the same port are the same host.
// Two dual-stack nodes on one machine hear each other over 127.0.0.1 and
// [::1]; counting those as two paths made them switch on every packet.
func Same(a, b *Route) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Sock == b.Sock && sameAddr(a.Remote, b.Remote)
}

// sameAddr reports whether two peer addresses reach the same endpoint (see
// Same).
func sameAddr(a, b netip.AddrPort) bool {
	if a.Port() != b.Port() {
		return false
	}
	x, y := a.Addr().Unmap(), b.Addr().Unmap()
	if x == y {
		return true
	}
	// ::1 and an IPv4 loopback address are one host when a dual-stack
	// socket holds the port; two IPv4 loopback addresses may be two nodes.
	return x.IsLoopback() && y.IsLoopback() && x.Is4() != y.Is4()
}
