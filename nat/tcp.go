package nat

import (
	"context"
	"net"

	"github.com/libp2p/go-reuseport"
)

// ListenTCP listens with SO_REUSEADDR and SO_REUSEPORT (go-reuseport), so
// DialTCP can dial from the listener's own port. TCP hole punching needs
// that: the SYN must leave from the port whose NAT mapping the peer
// learnt, and when both peers dial each other at once the SYNs cross
// inside the two NATs and open one connection (TCP simultaneous open).
func ListenTCP(network, address string) (net.Listener, error) {
	return reuseport.Listen(network, address)
}

// DialTCP dials raddr from laddr, which may be a ListenTCP listener's
// address.
func DialTCP(ctx context.Context, network, laddr, raddr string) (net.Conn, error) {
	la, err := net.ResolveTCPAddr(network, laddr)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Control: reuseport.Control, LocalAddr: la}
	return d.DialContext(ctx, network, raddr)
}
