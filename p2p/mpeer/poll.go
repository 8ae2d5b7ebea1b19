package mpeer

import (
	"errors"
	"fmt"
	"time"

	"github.com/gamewire/gamewire/p2p"
)

// Bounds of the receive side.
const (
	// maxInBytes and maxInPackets bound the GetPacket queue: past either,
	// Poll leaves packets in the node until GetPacket makes room (reliable
	// ones then push back on their senders, the node bounds the rest).
	maxInBytes   = 8 << 20
	maxInPackets = 1 << 16
	// maxControlPerPoll and maxDataPerPoll bound one Poll's work, so a
	// flooding peer cannot keep it from returning.
	maxControlPerPoll = 256
	maxDataPerPoll    = 16384
	// maxPendingJoins bounds a server's accepted sessions still waiting for
	// their JOIN; more session requests are refused.
	maxPendingJoins = 64
	// Held packets: data from a sender whose connection is not known yet,
	// because its announcement travels on the control channel and a loss
	// there can let the data overtake it.
	holdTime     = 5 * time.Second
	maxHeld      = 256
	maxHeldBytes = 4 << 20
)

// heldPacket is a packet waiting for its sender to be known.
type heldPacket struct {
	packet
	node p2p.PeerID
	at   time.Time
}

// Poll does the Peer's work, on the caller's goroutine: it takes the
// node's session events (accepting, refusing and ending sessions), reads
// control messages (joins, peer lists, introductions), reads data packets
// into the queue GetPacket reads, relays clients' packets on a server, and
// runs timeouts. Call it every frame, as Godot's poll; events it raises
// are read with Events. It does nothing when Disconnected.
func (p *Peer) Poll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.role == roleNone {
		return
	}
	now := time.Now()
	// The node has no "is closed" query; flushing a peer that cannot
	// exist (the zero key) does nothing but report ErrClosed.
	if errors.Is(p.node.Flush(p2p.PeerID{}), p2p.ErrClosed) {
		p.nodeClosed()
		return
	}
	p.pollNodeEvents(now)
	p.pollControl(now)
	p.releaseHeld(now)
	p.pollData(now)
	p.checkDeadlines(now)
}

// nodeClosed ends a Peer whose node was closed under it: every peer is
// gone.
func (p *Peer) nodeClosed() {
	err := fmt.Errorf("mpeer: node closed: %w", p2p.ErrClosed)
	if p.role == roleClient {
		p.lose(err)
		return
	}
	for id := range p.byID {
		p.emit(PeerDisconnected, id, err)
	}
	p.deactivate(err)
}

// pollNodeEvents handles the node's session events; the adapter owns the
// node's event stream.
func (p *Peer) pollNodeEvents(now time.Time) {
	for p.role != roleNone {
		select {
		case e, ok := <-p.node.Events():
			if !ok {
				return // the node closed
			}
			p.nodeEvent(e, now)
		default:
			return
		}
	}
}

func (p *Peer) nodeEvent(e p2p.Event, now time.Time) {
	switch e := e.(type) {
	case p2p.SessionRequest:
		p.sessionRequest(e.Peer, now)
	case p2p.SessionConnectFail:
		// The send that follows a failure restarts a session, so close it:
		// the remote is gone for this Peer.
		if p.byNode[e.Peer] != nil {
			p.node.CloseP2PSessionWithUser(e.Peer)
		}
		p.sessionEnded(e.Peer, sessionErr(e.Error), now)
	case p2p.SessionClosed:
		// Not closed here: a new session from the same node may already
		// be waiting behind this event.
		p.sessionEnded(e.Peer, nil, now)
	}
}

func sessionErr(e p2p.SessionError) error {
	switch e {
	case p2p.SessionErrorNoRightsToApp:
		return ErrRefused
	case p2p.SessionErrorNotRunningApp:
		return ErrAppMismatch
	case p2p.SessionErrorDestinationNotLoggedOn:
		return ErrUnreachable
	}
	return ErrTimeout
}

// sessionRequest answers a node that opened a session with us.
func (p *Peer) sessionRequest(n p2p.PeerID, now time.Time) {
	if p.byNode[n] != nil {
		p.node.AcceptP2PSessionWithUser(n) // one we talk to, on a new session
		return
	}
	switch p.role {
	case roleMesh:
		// Left unanswered: AddMeshPeer accepts it by sending our HELLO, and
		// the node times it out otherwise.
		return
	case roleClient:
		p.refuseSession(n) // a client talks to its server only
		return
	}
	if p.refusing || p.pendingJoins() >= maxPendingJoins {
		p.refuseSession(n)
		return
	}
	p.node.AcceptP2PSessionWithUser(n)
	p.byNode[n] = &remote{node: n, deadline: now.Add(p.cfg.JoinTimeout)}
}

func (p *Peer) refuseSession(n p2p.PeerID) {
	p.node.CloseP2PSessionWithUser(n)
	p.stats.SessionsRefused++
}

func (p *Peer) pendingJoins() int {
	k := 0
	for _, r := range p.byNode {
		if r.state == pending {
			k++
		}
	}
	return k
}

// sessionEnded handles the end of a node's session (err nil: it closed).
func (p *Peer) sessionEnded(n p2p.PeerID, err error, now time.Time) {
	r := p.byNode[n]
	if r == nil {
		return
	}
	if p.role == roleClient {
		// What the server said before closing (a REJECT and its reason, a
		// BYE) is still readable and explains the end better.
		p.pollControl(now)
		if p.role != roleNone {
			p.lose(err)
		}
		return
	}
	if p.role == roleMesh && !r.member && r.state == pending {
		p.failMesh(r, orRefused(err))
		return
	}
	p.forget(r, err, true)
}

// orRefused names the end of a connection the other side closed before
// it came up.
func orRefused(err error) error {
	if err == nil {
		return ErrRefused
	}
	return err
}

// pollControl handles waiting control messages.
func (p *Peer) pollControl(now time.Time) {
	for range maxControlPerPoll {
		if p.role == roleNone {
			return
		}
		pk, ok := p.node.ReadP2PPacket(ControlChannel)
		if !ok {
			return
		}
		p.handleControl(pk.From, pk.Data, now)
	}
}

func (p *Peer) handleControl(from p2p.PeerID, data []byte, now time.Time) {
	c, err := parseControl(data)
	if err != nil {
		p.stats.DroppedMalformed++
		return
	}
	if p.role == roleServer {
		p.serverControl(from, c, now)
		return
	}
	r := p.byNode[from]
	if r == nil {
		p.stats.DroppedNotJoined++
		return
	}
	if p.role == roleClient {
		p.clientControl(r, c)
	} else {
		p.meshControl(r, c)
	}
}

// pollData moves data packets from the node into the GetPacket queue,
// starting at a channel that rotates each Poll so none is starved when
// the queue fills.
func (p *Peer) pollData(now time.Time) {
	p.retryRelays()
	budget := maxDataPerPoll
	for i := 0; i < numDataChannels && budget > 0; i++ {
		idx := (p.scan + i) % numDataChannels
		if _, m := splitDataChannel(idx); m == Reliable && len(p.relays) > 0 {
			continue // reliable data waits in the node while a forward is held
		}
		for ; budget > 0 && p.inRoom(); budget-- {
			if p.role == roleNone {
				return
			}
			pk, ok := p.node.ReadP2PPacket(DataChannelBase + idx)
			if !ok {
				break
			}
			p.handleData(pk.From, idx, pk.Data, now)
			if _, m := splitDataChannel(idx); m == Reliable && len(p.relays) > 0 {
				break
			}
		}
	}
	p.scan = (p.scan + 1) % numDataChannels
}

func (p *Peer) inRoom() bool {
	return p.inBytes < maxInBytes && len(p.in)-p.inHead < maxInPackets
}

// handleData checks a data packet's header against its sender and
// delivers, relays, holds or drops it.
func (p *Peer) handleData(from p2p.PeerID, idx int, data []byte, now time.Time) {
	src, dst, payload, ok := parseHeader(data)
	if !ok || !validTarget(dst) {
		p.stats.DroppedMalformed++
		return
	}
	ch, mode := splitDataChannel(idx)
	pk := packet{data: payload, from: src, channel: ch, mode: mode}
	switch p.role {
	case roleServer:
		p.serverData(from, idx, data, pk, dst)
	case roleClient:
		p.clientData(from, pk, dst, now)
	case roleMesh:
		p.meshData(from, pk, dst, now)
	}
}

// meant reports whether a packet with target dst is for this peer.
func (p *Peer) meant(dst int32) bool {
	return dst == TargetPeerBroadcast || dst == p.id || (dst < 0 && dst != -p.id)
}

func (p *Peer) deliver(pk packet) {
	p.in = append(p.in, pk)
	p.inBytes += len(pk.data)
	p.stats.PacketsReceived++
}

func (p *Peer) hold(n p2p.PeerID, pk packet, now time.Time) {
	if len(p.held) >= maxHeld || p.heldBytes+len(pk.data) > maxHeldBytes {
		p.stats.DroppedUnknownSender++
		return
	}
	p.held = append(p.held, heldPacket{packet: pk, node: n, at: now})
	p.heldBytes += len(pk.data)
}

// releaseHeld delivers held packets whose sender is now connected, in
// arrival order, and drops those that waited too long.
func (p *Peer) releaseHeld(now time.Time) {
	kept := p.held[:0]
	for _, h := range p.held {
		switch {
		case p.senderKnown(h):
			p.deliver(h.packet)
		case now.Sub(h.at) > holdTime:
			p.stats.DroppedUnknownSender++
		default:
			kept = append(kept, h)
			continue
		}
		p.heldBytes -= len(h.data)
	}
	clear(p.held[len(kept):])
	p.held = kept
}

func (p *Peer) senderKnown(h heldPacket) bool {
	if p.role == roleClient {
		return p.status == Connected && p.byID[h.from] != nil
	}
	r := p.byNode[h.node]
	return r != nil && r.member && r.id == h.from
}

// checkDeadlines runs the join, introduction and linger timeouts.
func (p *Peer) checkDeadlines(now time.Time) {
	if p.role == roleClient && p.status == Connecting && now.After(p.joinBy) {
		p.lose(ErrTimeout)
		return
	}
	for n, r := range p.byNode {
		if r.deadline.IsZero() || now.Before(r.deadline) {
			continue
		}
		switch {
		case p.role == roleClient:
			p.lose(nil) // our BYE had no answer
			return
		case p.role == roleMesh && r.state == pending:
			p.failMesh(r, ErrTimeout)
		default:
			if r.state == pending {
				p.stats.JoinTimeouts++
			}
			p.forget(r, nil, true)
			p.node.CloseP2PSessionWithUser(n)
		}
	}
}
