package mpeer

import (
	"time"

	"github.com/gamewire/gamewire/p2p"
)

// clientControl handles a control message from the server.
func (p *Peer) clientControl(server *remote, c control) {
	switch c.typ {
	case msgAccept:
		p.accepted(server, c)
	case msgReject:
		if p.status != Connecting {
			p.stats.DroppedUnexpected++
			return
		}
		p.lose(reasonErr(c.reason))
	case msgAdd:
		p.added(c.id)
	case msgDel:
		p.deleted(c.id)
	case msgBye:
		p.lose(ErrKicked)
	default:
		p.stats.DroppedUnexpected++
	}
}

func (p *Peer) accepted(server *remote, c control) {
	switch {
	case p.status != Connecting:
		p.stats.DroppedUnexpected++
	case c.version != protocolVersion:
		p.lose(ErrVersionMismatch)
	default:
		server.state, server.member = joined, true
		p.byID[TargetPeerServer] = server
		p.status = Connected
		p.emit(PeerConnected, TargetPeerServer, nil)
	}
}

// added records another client the server announced.
func (p *Peer) added(id int32) {
	switch {
	case id < 2 || id == p.id:
		p.stats.DroppedBadID++
	case p.status != Connected || p.byID[id] != nil:
		p.stats.DroppedUnexpected++ // ADDs follow the ACCEPT, once per client
	default:
		p.byID[id] = &remote{id: id, state: joined, member: true, relayed: true}
		p.emit(PeerConnected, id, nil)
	}
}

// deleted forgets another client the server says has left.
func (p *Peer) deleted(id int32) {
	r := p.byID[id]
	switch {
	case id < 2 || id == p.id:
		p.stats.DroppedBadID++
	case r == nil || !r.relayed:
		p.stats.DroppedUnexpected++
	default:
		delete(p.byID, id)
		p.emit(PeerDisconnected, id, nil)
	}
}

// lose ends the client's connection: ConnectionFailed while Connecting,
// else PeerDisconnected for every other client and then the server.
func (p *Peer) lose(err error) {
	if p.status == Connecting {
		p.emit(ConnectionFailed, TargetPeerServer, orRefused(err))
		p.deactivate(orRefused(err))
		return
	}
	for id, r := range p.byID {
		if r.relayed {
			p.emit(PeerDisconnected, id, nil)
		}
	}
	p.emit(PeerDisconnected, TargetPeerServer, err)
	p.deactivate(err)
}

// clientData handles a packet from the server: its own or relayed from
// another client. A sender the client has not heard of yet is held
// until its ADD arrives.
func (p *Peer) clientData(from p2p.PeerID, pk packet, dst int32, now time.Time) {
	switch {
	case from != p.server:
		p.stats.DroppedNotJoined++
	case pk.from < 1 || pk.from == p.id:
		p.stats.DroppedSpoofed++
	case !p.meant(dst):
		p.stats.DroppedMisrouted++
	case p.status != Connected || p.byID[pk.from] == nil:
		p.hold(from, pk, now)
	default:
		p.deliver(pk)
	}
}
