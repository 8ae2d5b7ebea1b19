package p2p

import (
	"net/netip"
	"time"

	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/p2p/internal/path"
)

// PathKind says how a session's packets travel.
type PathKind int

// Path kinds.
const (
	PathNone   PathKind = iota // no transport yet
	PathDirect                 // UDP straight to the peer
	PathRelay                  // through a TURN relay
	PathTCP                    // TCP straight to the peer (its network or ours drops UDP)
)

func (k PathKind) String() string {
	switch k {
	case PathDirect:
		return "direct"
	case PathRelay:
		return "relay"
	case PathTCP:
		return "tcp"
	}
	return "none"
}

// SessionState is what GetP2PSessionState reports: Steam's P2PSessionState_t
// and more.
type SessionState struct {
	// ConnectionActive: the transport is up (both sides proved their
	// addresses) and the peer accepted the session. Connecting: this node is still trying (path, handshake, or
	// waiting for the peer to accept).
	ConnectionActive, Connecting bool
	// SessionError is the last error recorded: set when an attempt failed.
	SessionError SessionError
	// UsingRelay: packets go through a TURN relay now (Path is PathRelay).
	UsingRelay bool
	// BytesQueuedForSend and PacketsQueuedForSend count data not yet sent
	// (and reliable data not yet acknowledged).
	BytesQueuedForSend   int
	PacketsQueuedForSend int
	// RemoteAddr is where the peer's packets come from and ours go.
	RemoteAddr netip.AddrPort

	// Beyond Steam.
	Path PathKind
	// Accepted: this node accepts the peer. PeerAccepted: the peer accepts
	// this node.
	Accepted, PeerAccepted bool
	SmoothedRTT, MinRTT    time.Duration
	Jitter                 time.Duration
	LossPercent            float64 // over the last second
	SendRate               float64 // bytes per second sent, over the last second
	ReceiveRate            float64 // bytes per second received, over the last second
	BytesSent              uint64
	BytesReceived          uint64
	PacketsSent            uint64
	PacketsReceived        uint64
	// Traversal says how NAT traversal found the path, if it did.
	Traversal Traversal
}

// Traversal describes the path NAT traversal chose last for a session.
// The zero value means none did: the address came from AddPeerAddr or from
// the peer's own packets.
type Traversal struct {
	Punched   bool          // traversal found the path: checks validated it, or a handshake sent to the peer's candidates got through
	Candidate nat.Kind      // what the peer's answering address was: host (same LAN), server- or peer-reflexive
	Birthday  bool          // port prediction or the birthday approach found it
	Checks    int           // checks this node had sent toward the peer by then
	Sockets   int           // extra sockets this node opened for the birthday approach
	After     time.Duration // from the introduction to the validated path
	// Healed: the checks to the peer's public address went unanswered
	// (a NAT moved a mapping: the conntrack clash) and this node punched
	// again from a fresh port (Stalled), or the path came from such a port.
	Healed bool
}

// GetP2PSessionState reports the session with a peer; false when there is
// none.
func (n *Node) GetP2PSessionState(p PeerID) (SessionState, bool) {
	s := n.lookupSession(p)
	if s == nil {
		return SessionState{}, false
	}
	s.mu.Lock()
	defer s.unlock()
	if s.state == stClosed || (s.state == stEstablished && s.unseenLocked()) {
		return SessionState{}, false
	}
	st := SessionState{
		ConnectionActive: s.state == stEstablished && s.peerAccepted && s.confirmed.Load(),
		SessionError:     s.lastErr,
		Accepted:         s.accepted,
		PeerAccepted:     s.peerAccepted,
	}
	st.Connecting = !st.ConnectionActive && s.state != stFailed
	if addr, ok := s.remoteAddr(); ok && s.state != stFailed {
		st.RemoteAddr = addr
	}
	st.BytesQueuedForSend, st.PacketsQueuedForSend = s.preBytes, len(s.pre)
	if s.conn != nil {
		c := s.conn.Stats()
		st.Path = s.pathKind()
		st.UsingRelay = st.Path == PathRelay
		st.BytesQueuedForSend += c.QueuedBytes
		st.PacketsQueuedForSend += c.QueuedMessages
		st.SmoothedRTT, st.MinRTT, st.Jitter = c.SmoothedRTT, c.MinRTT, c.Jitter
		st.LossPercent = c.LossPercent
		st.SendRate, st.ReceiveRate = c.BytesSentPerSecond, c.BytesReceivedPerSecond
		st.BytesSent, st.BytesReceived = c.BytesSent, c.BytesReceived
		st.PacketsSent, st.PacketsReceived = c.PacketsSent, c.PacketsReceived
	}
	if n.trav != nil {
		var cur *path.Route
		if s.state == stEstablished {
			cur = s.current()
		}
		st.Traversal = n.trav.route(p, cur)
	}
	return st, true
}
