package netpacket

import (
	"errors"
	"fmt"
	"net"
)

// Errors returned by this package. Match them with errors.Is.
var (
	// ErrTooLarge: the packet is larger than MaxPacketSize (65536 bytes).
	ErrTooLarge = errors.New("netpacket: packet larger than 65536 bytes")

	// ErrInvalidFlags: flags has bits other than Reliable, Unsequenced and
	// FlushHint.
	ErrInvalidFlags = errors.New("netpacket: unknown flag bits")

	// ErrUnknownClient: the host sent to an id no client holds, or a
	// client to an id above the host's largest.
	ErrUnknownClient = errors.New("netpacket: no such client")

	// ErrNotStarted: a client sent before the host welcomed it (before
	// Start).
	ErrNotStarted = errors.New("netpacket: client not started yet")

	// ErrRefused: the host refused the client. The error is a
	// *RefusedError that says why.
	ErrRefused = errors.New("netpacket: refused by the host")

	// ErrVersionMismatch: the client's Callbacks.ProtocolVersion differs
	// from the host's. Such a *RefusedError matches ErrRefused as well.
	ErrVersionMismatch = errors.New("netpacket: protocol versions differ")

	// ErrJoinFailed: the client never reached the host's welcome: no
	// session (the wrapped p2p.SessionError says why: Timeout,
	// NotRunningApp for another AppID, NoRightsToApp when the host
	// refused the session) or the host closed it.
	ErrJoinFailed = errors.New("netpacket: could not join the host")

	// ErrHostGone: the host closed the session or went silent after the
	// client started; Stop was called.
	ErrHostGone = errors.New("netpacket: the host went away")

	// ErrMissingCallback: Callbacks.Start or Callbacks.Receive is nil.
	ErrMissingCallback = errors.New("netpacket: Callbacks.Start and Callbacks.Receive are required")

	// ErrVersionTooLong: Callbacks.ProtocolVersion is over MaxVersionLen
	// bytes.
	ErrVersionTooLong = errors.New("netpacket: ProtocolVersion longer than 255 bytes")

	// ErrBadConfig: a Config field is out of range.
	ErrBadConfig = errors.New("netpacket: invalid Config")

	// ErrClosed: Close was called. It matches net.ErrClosed.
	ErrClosed error = &closedError{}
)

type closedError struct{}

func (*closedError) Error() string        { return "netpacket: closed" }
func (*closedError) Is(target error) bool { return target == net.ErrClosed }

// Reason says why the host refused a player. It travels in the refusal
// message (one byte).
type Reason uint8

// Refusal reasons.
const (
	ReasonVersion  Reason = 1 // ProtocolVersion differs from the host's
	ReasonRefused  Reason = 2 // the host's core refused the player (Connected returned false)
	ReasonFull     Reason = 3 // every client id is taken
	ReasonProtocol Reason = 4 // the join was malformed or of another wire version of this package
)

func (r Reason) String() string {
	switch r {
	case ReasonVersion:
		return "protocol versions differ"
	case ReasonRefused:
		return "the host refused the player"
	case ReasonFull:
		return "the game is full"
	case ReasonProtocol:
		return "malformed join"
	}
	return fmt.Sprintf("reason %d", uint8(r))
}

// RefusedError says why the host refused a player. A client's Frame and
// Err return it; the host passes it to Config.OnRefuse. It matches
// ErrRefused, and ErrVersionMismatch for ReasonVersion.
type RefusedError struct {
	Reason Reason
	// LocalVersion and RemoteVersion are the two ProtocolVersions as seen
	// from the side holding the error, for ReasonVersion; else empty.
	LocalVersion, RemoteVersion string
}

func (e *RefusedError) Error() string {
	if e.Reason == ReasonVersion {
		return fmt.Sprintf("netpacket: refused: protocol versions differ (local %q, remote %q)", e.LocalVersion, e.RemoteVersion)
	}
	return "netpacket: refused: " + e.Reason.String()
}

// Is matches ErrRefused, and ErrVersionMismatch when the versions differ.
func (e *RefusedError) Is(target error) bool {
	return target == ErrRefused || (target == ErrVersionMismatch && e.Reason == ReasonVersion)
}
