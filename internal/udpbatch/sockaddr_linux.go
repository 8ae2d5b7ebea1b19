//go:build linux

package udpbatch

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// decodeSockaddr returns the address the kernel wrote into sa, which holds
// a sockaddr_in or a sockaddr_in6 depending on its family. It builds the
// netip.AddrPort from the raw bytes, so it does not allocate (a zone is an
// interned string, looked up in z).
func decodeSockaddr(sa *unix.RawSockaddrInet6, z *zoneCache) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), getPort(&sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if a.Is4In6() {
			a = a.Unmap()
		} else if sa.Scope_id != 0 {
			a = a.WithZone(z.name(sa.Scope_id))
		}
		return netip.AddrPortFrom(a, getPort(&sa.Port))
	}
	return netip.AddrPort{}
}

// encodeSockaddr writes ap into sa in the form a socket of family f sends
// to, and returns the sockaddr's length. A dual-stack AF_INET6 socket
// reaches IPv4 peers through IPv4-mapped addresses.
func encodeSockaddr(sa *unix.RawSockaddrInet6, f family, ap netip.AddrPort, z *zoneCache) (uint32, error) {
	ap, err := checkDest(f, ap)
	if err != nil {
		return 0, err
	}
	a := ap.Addr()
	if f == famV4 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		putPort(&sa4.Port, ap.Port())
		return unix.SizeofSockaddrInet4, nil
	}
	var scope uint32
	if zone := a.Zone(); zone != "" {
		var ok bool
		if scope, ok = z.index(zone); !ok {
			return 0, ErrInvalidAddr
		}
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16(), Scope_id: scope}
	putPort(&sa.Port, ap.Port())
	return unix.SizeofSockaddrInet6, nil
}

// getPort and putPort access a sockaddr port, which is in network byte
// order whatever the host's.
func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}
