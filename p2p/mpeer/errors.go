package mpeer

import "errors"

// Errors returned by Peer methods and carried by events and
// DisconnectReason. Match them with errors.Is: errors from the Node (such
// as p2p.ErrQueueFull or p2p.ErrClosed) come back wrapped.
var (
	// ErrNilNode: Create* was given a nil *p2p.Node.
	ErrNilNode = errors.New("mpeer: nil node")

	// ErrAlreadyActive: Create* on a Peer that is already a server, client
	// or mesh member; Close it first (Godot's ERR_ALREADY_IN_USE).
	ErrAlreadyActive = errors.New("mpeer: peer already active")

	// ErrWrongMode: the call does not apply to this Peer's mode (for
	// example AddMeshPeer on a server).
	ErrWrongMode = errors.New("mpeer: not valid in this mode")

	// ErrInvalidConfig: a negative Config field.
	ErrInvalidConfig = errors.New("mpeer: invalid config")

	// ErrNotConnected: PutPacket or DisconnectPeer while the connection
	// status is not Connected, as Godot and ENet refuse sends then.
	ErrNotConnected = errors.New("mpeer: not connected")

	// ErrTooLarge: the packet exceeds the transfer mode's limit
	// (MaxReliablePacketSize or MaxUnreliablePacketSize); nothing was sent.
	ErrTooLarge = errors.New("mpeer: packet too large for its transfer mode")

	// ErrInvalidChannel: transfer channels are 0 through 255.
	ErrInvalidChannel = errors.New("mpeer: transfer channel outside 0..255")

	// ErrInvalidMode: a TransferMode other than Unreliable,
	// UnreliableOrdered and Reliable.
	ErrInvalidMode = errors.New("mpeer: invalid transfer mode")

	// ErrInvalidTarget: the target peer is not 0 and its absolute value
	// is not a connected peer (this peer's own id included), as Godot's
	// "Invalid target peer".
	ErrInvalidTarget = errors.New("mpeer: invalid target peer")

	// ErrNoPacket: GetPacket with no packet available (Godot's
	// ERR_UNAVAILABLE).
	ErrNoPacket = errors.New("mpeer: no packet available")

	// ErrInvalidID: a peer id outside its range: clients 2..2^31-1, mesh
	// members 1..2^31-1. A server rejects such a join with it.
	ErrInvalidID = errors.New("mpeer: peer id out of range")

	// ErrIDInUse: the server already has a client with this id; or a mesh
	// peer with this id was already added.
	ErrIDInUse = errors.New("mpeer: peer id already in use")

	// ErrDuplicatePeer: AddMeshPeer with a node already in the mesh.
	ErrDuplicatePeer = errors.New("mpeer: node already added to the mesh")

	// ErrRefused: the server refuses new connections
	// (RefuseNewConnections), or its node refused the session.
	ErrRefused = errors.New("mpeer: server refused the connection")

	// ErrServerFull: the server has Config.MaxClients clients.
	ErrServerFull = errors.New("mpeer: server full")

	// ErrVersionMismatch: the other side speaks another version of this
	// package's protocol.
	ErrVersionMismatch = errors.New("mpeer: protocol version mismatch")

	// ErrIDMismatch: a mesh peer introduced itself with another id than
	// the one given to AddMeshPeer.
	ErrIDMismatch = errors.New("mpeer: mesh peer announced another id")

	// ErrRejected: the server rejected the join for a reason this version
	// does not know.
	ErrRejected = errors.New("mpeer: server rejected the connection")

	// ErrKicked: the server disconnected this client (DisconnectPeer).
	ErrKicked = errors.New("mpeer: disconnected by the server")

	// ErrTimeout: the join or the mesh introduction did not finish within
	// Config.JoinTimeout, or the node's session timed out (no path, or the
	// peer went silent).
	ErrTimeout = errors.New("mpeer: timed out")

	// ErrAppMismatch: the node's session failed because the other node
	// runs another AppID or protocol version (p2p.SessionErrorNotRunningApp).
	ErrAppMismatch = errors.New("mpeer: remote node runs another app")

	// ErrUnreachable: the other node is not registered at the rendezvous
	// server (p2p.SessionErrorDestinationNotLoggedOn).
	ErrUnreachable = errors.New("mpeer: remote node not reachable")
)
