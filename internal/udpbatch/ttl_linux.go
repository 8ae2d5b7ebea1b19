package udpbatch

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ttlControl is an IP_TTL (IPv4 and IPv4-mapped destinations, whose
// datagrams leave as IPv4 even from an IPv6 socket) or IPV6_HOPLIMIT
// control message.
func ttlControl(to netip.AddrPort, ttl int) []byte {
	level, typ := unix.IPPROTO_IP, unix.IP_TTL
	if !to.Addr().Unmap().Is4() {
		level, typ = unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT
	}
	b := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(unix.CmsgLen(4))
	*(*int32)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = int32(ttl)
	return b
}
