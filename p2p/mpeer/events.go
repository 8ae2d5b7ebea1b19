package mpeer

import "fmt"

// EventKind says what an Event reports.
type EventKind int

// The event kinds.
const (
	// PeerConnected: Peer is connected (Godot's peer_connected). A client
	// gets one for the server (1) once it is accepted, then one per other
	// client; a server one per client; a mesh member one per member whose
	// introduction arrived.
	PeerConnected EventKind = iota + 1
	// PeerDisconnected: Peer is gone (Godot's peer_disconnected). Err is
	// nil when it left or closed normally, ErrTimeout when it went silent,
	// ErrKicked on a client the server disconnected, an error matching
	// p2p.ErrClosed when this Peer's own node was closed. A client that
	// loses the server gets one for every other client, then one for 1.
	// DisconnectPeer with force raises none for the peer it drops.
	PeerDisconnected
	// ConnectionFailed: the connection to Peer never came up: a client's
	// join (Peer 1; Godot's connection_failed) or a mesh introduction. Err
	// says why: ErrRefused, ErrIDInUse, ErrServerFull, ErrTimeout...
	ConnectionFailed
)

func (k EventKind) String() string {
	switch k {
	case PeerConnected:
		return "PeerConnected"
	case PeerDisconnected:
		return "PeerDisconnected"
	case ConnectionFailed:
		return "ConnectionFailed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a peer connecting or going away. Poll queues events; Events
// returns them.
type Event struct {
	Kind EventKind
	Peer int32
	Err  error
}

// maxEvents bounds the events waiting for Events; past it new events are
// dropped and counted (Stats.EventsDropped).
const maxEvents = 4096

// Stats counts what a Peer sent, relayed and dropped. Drops never panic
// and never stop the Peer: each hostile or malformed message is counted
// here and ignored.
type Stats struct {
	PacketsSent     uint64 // PutPacket calls that sent (once however many peers)
	PacketsReceived uint64 // packets queued for GetPacket
	PacketsRelayed  uint64 // server: copies forwarded from one client to another
	RelayErrors     uint64 // server: forwards that could not go: unreliable ones over a full send queue, or any for a client that left
	RelaysHeld      uint64 // server: reliable forwards held because the recipient's send queue was full (they go once there is room)
	ControlErrors   uint64 // control messages the node refused to send

	DroppedMalformed     uint64 // data shorter than its header, unknown or truncated control messages, target -2^31
	DroppedUnexpected    uint64 // well-formed control messages that make no sense here (a JOIN to a client, a second ACCEPT)
	DroppedSpoofed       uint64 // a source id that is not the sender's, or a relayed one that is ours or out of range
	DroppedNotJoined     uint64 // data or control from a node that has not joined, was refused, or is not ours to hear
	DroppedMisrouted     uint64 // a unicast to an id that is not connected, or a packet whose target excludes us
	DroppedUnknownSender uint64 // packets held for a sender that did not connect within 5 s, or over the hold's bound
	DroppedBadID         uint64 // ADD or DEL of an id out of range or our own

	SessionsRefused uint64 // node sessions refused: refusing new connections, or too many joins under way
	JoinsRejected   uint64 // joins answered with REJECT
	JoinTimeouts    uint64 // server: accepted sessions that sent no JOIN in time
	EventsDropped   uint64 // events dropped: more than 4096 waiting
}
