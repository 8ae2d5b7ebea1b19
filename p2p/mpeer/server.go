package mpeer

import (
	"errors"
	"slices"
	"time"

	"github.com/gamewire/gamewire/p2p"
)

// serverControl handles a control message from a client's node.
func (p *Peer) serverControl(from p2p.PeerID, c control, now time.Time) {
	if c.typ == msgJoin {
		p.join(from, c, now)
		return
	}
	r := p.byNode[from]
	switch {
	case r == nil:
		p.stats.DroppedNotJoined++
	case c.typ != msgBye:
		p.stats.DroppedUnexpected++
	default: // the client leaves
		p.forget(r, nil, true)
		p.node.CloseP2PSessionWithUser(from)
	}
}

// join admits a client or rejects it with a reason it learns.
func (p *Peer) join(from p2p.PeerID, c control, now time.Time) {
	// The node raised the end of an earlier session from this node before
	// it delivered this JOIN: take such events first, so they cannot be
	// read later as the end of the new membership.
	p.pollNodeEvents(now)
	r := p.byNode[from]
	switch {
	case r == nil:
		// The session came up without a request: we had sent to the node
		// (a relay to its earlier membership) and so accepted it.
		if p.pendingJoins() >= maxPendingJoins {
			p.refuseSession(from)
			return
		}
		r = &remote{node: from}
		p.byNode[from] = r
	case r.member:
		// A second JOIN on a live membership: the client started over.
		p.forget(r, nil, true)
		r = &remote{node: from}
		p.byNode[from] = r
	case r.state == closing:
		p.stats.DroppedUnexpected++ // rejected already
		return
	}
	if reason := p.joinRefusal(c); reason != 0 {
		p.sendControl(from, control{typ: msgReject, reason: reason})
		r.state, r.deadline = closing, now.Add(lingerTime)
		p.stats.JoinsRejected++
		return
	}
	r.id, r.state, r.member, r.deadline = c.id, joined, true, time.Time{}
	// ACCEPT, then the other clients, on the one ordered control channel;
	// the others hear of the newcomer.
	p.sendControl(from, control{typ: msgAccept, version: protocolVersion})
	for id, o := range p.byID {
		p.sendControl(from, control{typ: msgAdd, id: id})
		p.sendControl(o.node, control{typ: msgAdd, id: c.id})
	}
	p.byID[c.id] = r
	p.emit(PeerConnected, c.id, nil)
}

// joinRefusal returns why a JOIN is refused, or 0. Godot's ENet server
// refuses ids below 2 and ids in use.
func (p *Peer) joinRefusal(c control) byte {
	switch {
	case c.version != protocolVersion:
		return reasonVersion
	case c.id < 2:
		return reasonInvalidID
	case p.byID[c.id] != nil:
		return reasonIDInUse
	case p.refusing:
		return reasonRefused
	case len(p.byID) >= p.cfg.MaxClients:
		return reasonFull
	}
	return 0
}

// serverData handles a client's data packet: checks that it joined and
// names itself as the source, delivers it here when the target includes
// the server, and relays it to the other clients the target names,
// unchanged, so they see the original sender.
func (p *Peer) serverData(from p2p.PeerID, idx int, data []byte, pk packet, dst int32) {
	r := p.byNode[from]
	switch {
	case r == nil || !r.member:
		p.stats.DroppedNotJoined++
		return
	case pk.from != r.id:
		p.stats.DroppedSpoofed++
		return
	}
	if dst > TargetPeerServer {
		t := p.byID[dst]
		if t == nil || dst == r.id {
			p.stats.DroppedMisrouted++
			return
		}
		p.relay(t, idx, data, pk.mode)
		return
	}
	if dst != -TargetPeerServer {
		p.deliver(pk) // the server, the broadcast, or all but another client
	}
	if dst == TargetPeerServer {
		return
	}
	for id, t := range p.byID {
		if id != r.id && id != -dst {
			p.relay(t, idx, data, pk.mode)
		}
	}
}

// heldRelay is a reliable packet the server accepted for another client
// while its send queue to that client was full. Poll sends it first, and
// reads no reliable data until it has gone: the senders' receive windows,
// not a drop, hold them back, so no reliable packet is lost at the server.
type heldRelay struct {
	to   *remote
	idx  int
	data []byte
}

func (p *Peer) relay(t *remote, idx int, data []byte, mode TransferMode) {
	var err error
	if mode == Reliable && p.relaying(t) {
		err = p2p.ErrQueueFull // sending now would overtake the held one
	} else {
		err = p.node.Send(t.node, data, mode.Flags(), DataChannelBase+idx)
	}
	switch {
	case errors.Is(err, p2p.ErrQueueFull) && mode == Reliable:
		p.relays = append(p.relays, heldRelay{to: t, idx: idx, data: slices.Clone(data)})
		p.stats.RelaysHeld++
	case err != nil:
		p.stats.RelayErrors++
	default:
		p.stats.PacketsRelayed++
	}
}

// relaying reports whether a reliable forward to t is held.
func (p *Peer) relaying(t *remote) bool {
	return slices.ContainsFunc(p.relays, func(r heldRelay) bool { return r.to == t })
}

// retryRelays sends the held forwards their recipients have room for, in
// order per recipient; one for a client that left is dropped and counted.
func (p *Peer) retryRelays() {
	kept := p.relays[:0]
	for _, r := range p.relays {
		if p.byID[r.to.id] != r.to {
			p.stats.RelayErrors++
			continue
		}
		if slices.ContainsFunc(kept, func(k heldRelay) bool { return k.to == r.to }) {
			kept = append(kept, r) // behind one that still waits
			continue
		}
		err := p.node.Send(r.to.node, r.data, Reliable.Flags(), DataChannelBase+r.idx)
		switch {
		case errors.Is(err, p2p.ErrQueueFull):
			kept = append(kept, r)
		case err != nil:
			p.stats.RelayErrors++
		default:
			p.stats.PacketsRelayed++
		}
	}
	clear(p.relays[len(kept):])
	p.relays = kept
}
