package mpeer

import (
	"time"

	"github.com/gamewire/gamewire/p2p"
)

// meshControl handles a control message from a mesh member's node.
func (p *Peer) meshControl(r *remote, c control) {
	switch c.typ {
	case msgHello:
		p.hello(r, c)
	case msgBye:
		if !r.member {
			p.failMesh(r, ErrRefused)
			return
		}
		p.forget(r, nil, true)
		p.node.CloseP2PSessionWithUser(r.node)
	default:
		p.stats.DroppedUnexpected++
	}
}

// hello connects a member whose introduction names the id it was added
// with.
func (p *Peer) hello(r *remote, c control) {
	switch {
	case r.state != pending:
		p.stats.DroppedUnexpected++
	case c.version != protocolVersion:
		p.failMesh(r, ErrVersionMismatch)
	case c.id != r.id:
		p.stats.DroppedSpoofed++
		p.failMesh(r, ErrIDMismatch)
	default:
		r.state, r.member, r.deadline = joined, true, time.Time{}
		p.byID[r.id] = r
		p.emit(PeerConnected, r.id, nil)
	}
}

// failMesh gives up on a member that never connected.
func (p *Peer) failMesh(r *remote, err error) {
	delete(p.byNode, r.node)
	p.node.CloseP2PSessionWithUser(r.node)
	p.emit(ConnectionFailed, r.id, err)
}

// meshData handles a member's packet; one whose HELLO is still on its way
// is held.
func (p *Peer) meshData(from p2p.PeerID, pk packet, dst int32, now time.Time) {
	r := p.byNode[from]
	switch {
	case r == nil:
		p.stats.DroppedNotJoined++
	case pk.from != r.id:
		p.stats.DroppedSpoofed++
	case !p.meant(dst):
		p.stats.DroppedMisrouted++
	case r.member:
		p.deliver(pk)
	case r.state == pending:
		p.hold(from, pk, now)
	default:
		p.stats.DroppedNotJoined++
	}
}
