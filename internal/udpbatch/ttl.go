package udpbatch

import (
	"net"
	"net/netip"
)

// msgWriter is a socket that takes ancillary data with a datagram, as
// *net.UDPConn does.
type msgWriter interface {
	WriteMsgUDPAddrPort(b, oob []byte, addr netip.AddrPort) (n, oobn int, err error)
}

// WriteToTTL sends one datagram from pc with the given TTL (IPv4) or hop
// limit (IPv6), for that datagram only: it rides in the sendmsg call's
// ancillary data, so concurrent writes on the same socket keep the
// socket's own TTL. NAT traversal sends such datagrams to open its own
// NAT toward a peer without reaching the peer's. It fails with
// ErrTTLUnsupported where the platform or pc cannot do it (then nothing
// was sent).
func WriteToTTL(pc net.PacketConn, b []byte, to netip.AddrPort, ttl int) error {
	w, ok := pc.(msgWriter)
	if !ok || ttl < 1 || ttl > 255 {
		return ErrTTLUnsupported
	}
	oob := ttlControl(to, ttl)
	if oob == nil {
		return ErrTTLUnsupported
	}
	_, _, err := w.WriteMsgUDPAddrPort(b, oob, to)
	return err
}
