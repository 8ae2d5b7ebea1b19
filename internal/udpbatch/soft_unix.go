//go:build unix && !linux

package udpbatch

import (
	"errors"
	"syscall"
)

// isSoftErr reports errors that a UDP socket returns for ICMP messages
// about an earlier datagram, which say nothing about the current call.
func isSoftErr(err error) bool {
	var e syscall.Errno
	if !errors.As(err, &e) {
		return false
	}
	switch e {
	case syscall.ECONNREFUSED, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.EHOSTDOWN:
		return true
	}
	return false
}
