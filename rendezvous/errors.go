package rendezvous

import "errors"

// Why a client is not registered (Client.Status). Match them with
// errors.Is.
var (
	// ErrServerKey: the server answered with a key other than the pinned
	// one (ClientConfig.ServerKey): another server, or the server's key
	// changed. The client keeps trying; it never registers with that key.
	ErrServerKey = errors.New("rendezvous: the server's key is not the one pinned")

	// ErrUnreachable: no answer from the server for unreachableAfter while
	// trying to register (no route, a firewall, a server that is down or
	// refusing this source).
	ErrUnreachable = errors.New("rendezvous: no answer from the server")
)

// ErrListen: Listen was given addresses it cannot make the server's
// sockets of: none, or an alternate address that does not pair with its
// primary one. Listen's error wraps it with the details.
var ErrListen = errors.New("rendezvous: bad listen addresses")
