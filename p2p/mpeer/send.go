package mpeer

import (
	"fmt"
	"time"

	"github.com/gamewire/gamewire/p2p"
)

// lingerTime is how long a REJECT or BYE may take to reach the other side
// (it is reliable) before we close the session ourselves; the other side
// normally closes it first, on receipt.
const lingerTime = 3 * time.Second

// PutPacket sends data to the target peer (SetTargetPeer) with the
// transfer mode and channel set. It fails with ErrNotConnected unless the
// status is Connected, ErrTooLarge past the mode's limit, ErrInvalidTarget
// when the target is not 0 and its absolute value is not a connected peer;
// then nothing is sent. A client sends every packet to the server, which
// delivers or relays it (see the package documentation). nil means sent,
// not delivered; an error from the node (such as p2p.ErrQueueFull) comes
// back wrapped, and a broadcast still goes to the other peers.
func (p *Peer) PutPacket(data []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status != Connected {
		return ErrNotConnected
	}
	mode := p.transferMode()
	if len(data) > maxPacketSize(mode) {
		return ErrTooLarge
	}
	dests, err := p.route(p.target)
	if err != nil {
		return err
	}
	// The node copies what it sends, so one buffer serves every peer.
	buf := appendHeader(make([]byte, 0, HeaderSize+len(data)), p.id, p.target)
	buf = append(buf, data...)
	ch := DataChannel(p.channel, mode)
	var first error
	for _, n := range dests {
		if err := p.node.Send(n, buf, mode.Flags(), ch); err != nil && first == nil {
			first = fmt.Errorf("mpeer: put packet: %w", err)
		}
	}
	if first == nil {
		p.stats.PacketsSent++
	}
	return first
}

// route returns the nodes a packet for target goes to.
func (p *Peer) route(target int32) ([]p2p.PeerID, error) {
	if !validTarget(target) {
		return nil, ErrInvalidTarget
	}
	if target != TargetPeerBroadcast && p.byID[abs(target)] == nil {
		return nil, ErrInvalidTarget // byID never holds our own id
	}
	if p.role == roleClient {
		return []p2p.PeerID{p.server}, nil // the server delivers or relays
	}
	if target > 0 {
		return []p2p.PeerID{p.byID[target].node}, nil
	}
	exclude := -target
	dests := make([]p2p.PeerID, 0, len(p.byID))
	for id, r := range p.byID {
		if id != exclude {
			dests = append(dests, r.node)
		}
	}
	return dests, nil
}

func abs(x int32) int32 {
	if x < 0 {
		return -x
	}
	return x
}

// sendControl sends a control message, reliable and flushed.
func (p *Peer) sendControl(to p2p.PeerID, c control) {
	if err := p.node.Send(to, c.append(nil), Reliable.Flags(), ControlChannel); err != nil {
		p.stats.ControlErrors++
	}
}

// DisconnectPeer disconnects peer id: a server its client, a client its
// server (id 1), a mesh member another member. Without force the peer is
// told (BYE, reliable) and PeerDisconnected follows in a later Poll, when
// the peer has closed the session or after 3 s. With force the session is
// closed now and no event is raised here, as Godot's
// disconnect_peer(id, true); a server still tells its other clients. A
// client still Connecting gives up at once, without an event. It fails
// with ErrInvalidTarget for an id that is not connected.
func (p *Peer) DisconnectPeer(id int32, force bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.role == roleNone {
		return ErrNotConnected
	}
	if p.role == roleClient {
		if id != TargetPeerServer {
			return ErrInvalidTarget
		}
		if force || p.status != Connected {
			p.deactivate(nil)
			return nil
		}
	}
	r := p.byID[id]
	if p.role == roleClient {
		r = p.byNode[p.server]
	}
	if r == nil {
		return ErrInvalidTarget
	}
	if force {
		p.forget(r, nil, false)
		p.node.CloseP2PSessionWithUser(r.node)
		return nil
	}
	p.sendControl(r.node, control{typ: msgBye})
	r.state, r.deadline = closing, time.Now().Add(lingerTime)
	return nil
}

// forget removes a directly connected remote; a member that leaves raises
// PeerDisconnected when emit is set, and a server tells its other clients.
// It does not close the session: callers do, except after SessionClosed,
// when a new session from the same node may already be waiting.
func (p *Peer) forget(r *remote, err error, emit bool) {
	delete(p.byNode, r.node)
	if !r.member {
		return
	}
	r.member = false
	delete(p.byID, r.id)
	if emit {
		p.emit(PeerDisconnected, r.id, err)
	}
	if p.role == roleServer {
		for _, o := range p.byID {
			p.sendControl(o.node, control{typ: msgDel, id: r.id})
		}
	}
}
