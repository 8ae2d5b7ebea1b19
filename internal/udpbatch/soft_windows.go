//go:build windows

package udpbatch

import (
	"errors"
	"syscall"
)

// Winsock errors for ICMP reports about an earlier datagram. Go turns off
// SIO_UDP_CONNRESET on its UDP sockets, which silences port unreachable,
// but WSAENETRESET (time to live exceeded) and the others can still come.
const (
	wsaENETUNREACH  syscall.Errno = 10051
	wsaENETRESET    syscall.Errno = 10052
	wsaECONNRESET   syscall.Errno = 10054
	wsaECONNREFUSED syscall.Errno = 10061
	wsaEHOSTUNREACH syscall.Errno = 10065
)

// isSoftErr reports errors that a UDP socket returns for ICMP messages
// about an earlier datagram, which say nothing about the current call.
func isSoftErr(err error) bool {
	var e syscall.Errno
	if !errors.As(err, &e) {
		return false
	}
	switch e {
	case wsaENETUNREACH, wsaENETRESET, wsaECONNRESET, wsaECONNREFUSED, wsaEHOSTUNREACH:
		return true
	}
	return false
}
