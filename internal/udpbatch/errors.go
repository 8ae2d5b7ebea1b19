package udpbatch

import "errors"

// Errors for one message of a WriteBatch. WriteBatch returns the index of
// the message that failed as its count, having sent every message before it;
// match these with errors.Is.
var (
	// ErrAddrFamily reports a destination the socket's address family
	// cannot reach: an IPv6 destination on an IPv4 socket or, on Linux's
	// batch path, an IPv4 destination on an IPv6-only socket (the fallback
	// path leaves that case to the system, which returns its own error).
	ErrAddrFamily = errors.New("udpbatch: destination of the wrong address family for the socket")

	// ErrInvalidAddr reports a destination that is the zero
	// netip.AddrPort, or whose zone names no interface.
	ErrInvalidAddr = errors.New("udpbatch: invalid destination address")

	// ErrTTLUnsupported: WriteToTTL cannot set one datagram's TTL on this
	// platform or socket.
	ErrTTLUnsupported = errors.New("udpbatch: per-datagram TTL not supported")
)

// ErrQueueClosed is returned by a Queue's Write after its Close.
var ErrQueueClosed = errors.New("udpbatch: queue closed")
