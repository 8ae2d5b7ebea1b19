package p2p

import (
	"errors"
	"net"

	"github.com/gamewire/gamewire/rendezvous"
)

// Errors returned by Node methods. Match them with errors.Is.
var (
	// ErrTooLarge: the message exceeds its send type's limit (1200 bytes
	// unreliable, 1 MiB reliable).
	ErrTooLarge = errors.New("p2p: message too large for its send type")

	// ErrQueueFull: too many bytes are queued for this peer; nothing was
	// queued. Steam's SendP2PPacket returns false in this case.
	ErrQueueFull = errors.New("p2p: send queue full")

	// ErrNotConnected: reserved for operations that need an established
	// session. (Sends before a session connects are queued or, for
	// SendUnreliableNoDelay, dropped without error, as in Steam.)
	ErrNotConnected = errors.New("p2p: no connected session")

	// ErrInvalidChannel: channels are 0 through 65535.
	ErrInvalidChannel = errors.New("p2p: channel outside 0..65535")

	// ErrInvalidSendType: a SendType outside 0..3.
	ErrInvalidSendType = errors.New("p2p: invalid send type")

	// ErrInvalidFlags: flags the channels engine refuses (Reliable|Unsequenced).
	ErrInvalidFlags = errors.New("p2p: invalid flags")

	// ErrSelf: a Node cannot open a session with itself.
	ErrSelf = errors.New("p2p: peer is this node")

	// ErrClosed: the Node is closed. It matches net.ErrClosed.
	ErrClosed = &closedError{}

	// errTooManySockets: the birthday approach hit the node's bound on
	// extra sockets.
	errTooManySockets = errors.New("p2p: too many extra sockets open")

	// Direct TCP: the listener did not open, a datagram exceeds a frame,
	// a link's send queue is full, a peer sent a malformed frame.
	errTCPListen   = errors.New("p2p: no TCP listener")
	errTCPTooLarge = errors.New("p2p: datagram too large for a TCP frame")
	errTCPBacklog  = errors.New("p2p: TCP link backlogged: datagram dropped")
	errTCPFrame    = errors.New("p2p: malformed TCP frame")

	// ErrServerKey: the rendezvous server answered with a key other than
	// the one pinned in Config.Rendezvous ("peerid@host:port"), or its key
	// changed since the node first trusted it. The node keeps trying, and
	// never registers under that key. It is rendezvous.ErrServerKey.
	ErrServerKey = rendezvous.ErrServerKey

	// ErrServerUnreachable: the rendezvous server has not answered the
	// node's registration for a few seconds. It is
	// rendezvous.ErrUnreachable.
	ErrServerUnreachable = rendezvous.ErrUnreachable

	// ErrNoRendezvous: the node has no rendezvous server (Config.Rendezvous
	// is empty).
	ErrNoRendezvous = errors.New("p2p: no rendezvous server configured")

	// ErrBadPeerID: the text is not a PeerID.
	ErrBadPeerID = errors.New("p2p: malformed peer ID")

	// ErrBadIdentity: the text or file is not an identity.
	ErrBadIdentity = errors.New("p2p: malformed identity")
)

type closedError struct{}

func (*closedError) Error() string        { return "p2p: node closed" }
func (*closedError) Is(target error) bool { return target == net.ErrClosed }
