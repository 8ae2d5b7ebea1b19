//go:build linux

package udpbatch

import (
	"errors"
	"syscall"
)

// isSoftErrno reports the errors Linux turns ICMP messages into
// (icmp_err_convert, icmpv6_err_convert). On a UDP socket they come from an
// earlier datagram's ICMP report, pending on the socket and consumed by
// being returned: on an unconnected socket only when IP_RECVERR is set, on
// a connected one always. They say nothing about the current call.
func isSoftErrno(e syscall.Errno) bool {
	switch e {
	case syscall.ECONNREFUSED, syscall.EHOSTUNREACH, syscall.ENETUNREACH,
		syscall.EHOSTDOWN, syscall.ENONET, syscall.ENOPROTOOPT,
		syscall.EPROTO, syscall.EMSGSIZE, syscall.EACCES:
		return true
	}
	return false
}

// isSoftErr applies isSoftErrno to an error from ReadFrom or WriteTo.
func isSoftErr(err error) bool {
	var e syscall.Errno
	return errors.As(err, &e) && isSoftErrno(e)
}
