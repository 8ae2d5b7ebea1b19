package relay

import "errors"

var (
	// ErrQueueFull: the client's send queue is full; the datagram was
	// dropped and counted.
	ErrQueueFull = errors.New("relay: send queue full")
	// ErrClosed matches net.ErrClosed: the client is closed.
	ErrClosed = errClosed{}
	// ErrNoCredentials: a client or server has no username, password or
	// secret.
	ErrNoCredentials = errors.New("relay: no TURN credentials")
	// ErrTooLarge: a datagram larger than MaxDatagram.
	ErrTooLarge = errors.New("relay: datagram too large")
	// ErrDead: the client's allocation is gone from its server, or the
	// server is out of reach (Client.Dead); Client.Err wraps the cause.
	ErrDead = errors.New("relay: allocation dead")

	errNonceRefused = errors.New("relay: the server refused every nonce")

	errBadTransport = errors.New("relay: unknown transport")
	errNoTCPRelay   = errors.New("relay: TCP relay allocations are not served")
	errNoPort       = errors.New("relay: no free relay port in range")
)

type errClosed struct{}

func (errClosed) Error() string { return "relay: closed" }

// Is makes ErrClosed match net.ErrClosed.
func (errClosed) Is(target error) bool { return target == netErrClosed }
