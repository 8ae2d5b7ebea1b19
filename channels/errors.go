package channels

import (
	"errors"
	"net"
)

// Errors returned by Conn. Match them with errors.Is.
var (
	// ErrInvalidFlags is returned for Reliable|Unsequenced and for bits
	// outside Reliable, Unsequenced and FlushHint.
	ErrInvalidFlags = errors.New("channels: invalid flags (Reliable|Unsequenced is not a valid combination)")

	// ErrTooLarge is returned when a message exceeds Config.MaxReliableSize
	// or Config.MaxUnreliableSize.
	ErrTooLarge = errors.New("channels: message too large")

	// ErrQueueFull is returned when a message would take the send queue
	// past Config.SendQueueBytes. Nothing was queued; retry after the peer
	// has acknowledged data (see Conn.WaitSendQueue).
	ErrQueueFull = errors.New("channels: send queue full")

	// ErrInvalidPriority is returned for a Priority whose weight is out of
	// range.
	ErrInvalidPriority = errors.New("channels: invalid channel priority")

	// ErrClosed reports a Conn closed by its own side. It matches
	// net.ErrClosed.
	ErrClosed = &closedError{msg: "channels: connection closed"}

	// ErrTimeout reports a Conn closed because the peer sent nothing for
	// Config.IdleTimeout. It matches net.ErrClosed.
	ErrTimeout = &closedError{msg: "channels: peer timed out"}

	// ErrPeerClosed reports a Conn closed by the peer. It matches
	// net.ErrClosed.
	ErrPeerClosed = &closedError{msg: "channels: connection closed by peer"}

	// ErrMalformed is returned by HandleDatagram for a datagram that does not
	// parse. The datagram was dropped and counted.
	ErrMalformed = errors.New("channels: malformed datagram")

	// ErrDuplicate is returned by HandleDatagram for a datagram already
	// received (or too old to tell). It was dropped and counted.
	ErrDuplicate = errors.New("channels: duplicate datagram")

	// ErrFlowControl is returned by HandleDatagram when the peer sent
	// reliable data beyond the receive window it was given. The datagram was
	// dropped unacknowledged and counted.
	ErrFlowControl = errors.New("channels: peer exceeded the receive window")
)

// closedError is the type of the errors that end a Conn. Each one matches
// net.ErrClosed, so callers that only care whether the Conn is usable can
// test for that.
type closedError struct{ msg string }

func (e *closedError) Error() string { return e.msg }

func (e *closedError) Is(target error) bool { return target == net.ErrClosed }
