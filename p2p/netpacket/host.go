package netpacket

import (
	"encoding/binary"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/p2p"
)

// Host is the netpacket host (client id 0) over a p2p.Node: it admits
// clients, gives them ids, delivers their packets and relays what they
// send to each other.
//
// A Host is not safe for concurrent use, like libretro's netpacket: call
// NewHost, Frame, Send, PollReceive and Close from one goroutine (the
// frontend loop); the callbacks run there. Stats may be called from any
// goroutine. The Host starts no goroutine of its own and reaches the node
// only through its methods, which are safe for concurrent use.
type Host struct {
	// Set by NewHost, then read-only.
	node *p2p.Node
	cb   Callbacks
	cfg  Config

	// Owned by the frontend goroutine.
	members   map[p2p.PeerID]*member // every peer the host deals with
	byID      []*member              // playing members by id; [0] (the host) stays nil
	toFlush   []p2p.PeerID           // recipients of relayed packets since the last flush
	held      []heldRelay            // reliable relays a recipient's send queue had no room for
	draining  bool                   // PollReceive is running: a core's nested call returns at once
	closed    bool
	nextSweep time.Time

	stats counters
}

// heldRelay is a reliable packet the host accepted for another client
// while its send queue to that client was full. It goes out first on the
// next PollReceive, and no reliable data is read until it has: the
// senders' receive windows, not a drop, hold them back, so a reliable
// packet is never lost at the host.
type heldRelay struct {
	msg []byte // the data message, sender's id in place
	to  *member
	ch  int
}

// memberState is where a peer stands with the host.
type memberState int

const (
	waiting  memberState = iota // session accepted, join not seen yet
	playing                     // joined: holds an id
	refusing                    // told why it was refused; its session closes soon
)

type member struct {
	peer  p2p.PeerID
	id    uint16 // while playing
	state memberState
	since time.Time // when state began
}

// NewHost makes node the host of a netpacket session and calls
// cb.Start(HostID, ...) before it returns. From now on the Host reads the
// node's events (Node.Events): the game must not call Node.RunCallbacks
// or Node.Events while the Host runs. The node stays the caller's: Close
// does not close it.
func NewHost(node *p2p.Node, cb Callbacks, cfg Config) (*Host, error) {
	if err := cb.validate(); err != nil {
		return nil, err
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &Host{
		node:    node,
		cb:      cb,
		cfg:     cfg,
		members: make(map[p2p.PeerID]*member),
		byID:    make([]*member, cfg.MaxClients+1),
	}
	cb.Start(HostID, h.Send, h.PollReceive)
	return h, nil
}

// Frame runs one frame of the frontend loop: it handles joins, delivers
// the packets that arrived (Callbacks.Receive), handles the node's session
// events (Callbacks.Disconnected for clients that left), closes sessions
// past their time, then calls Callbacks.Poll. It never blocks. It returns
// ErrClosed after Close, else nil.
func (h *Host) Frame() error {
	if h.closed {
		return ErrClosed
	}
	now := time.Now()
	// Events after the packets, so what a leaving client sent before it
	// left is delivered before its Disconnected.
	h.readControl(now)
	h.PollReceive()
	h.readEvents(now)
	h.expire(now)
	drainUnused(h.node, &h.stats)
	if !h.closed && h.cb.Poll != nil {
		h.cb.Poll()
	}
	if h.closed {
		return ErrClosed
	}
	return nil
}

// Close calls Callbacks.Stop and closes the session of every client (they
// get Stop in turn); Disconnected is not called. It does not close the
// node. It is idempotent.
func (h *Host) Close() error {
	if h.closed {
		return nil
	}
	h.closed = true
	for peer := range h.members {
		h.node.CloseP2PSessionWithUser(peer)
	}
	clear(h.members)
	clear(h.byID)
	if h.cb.Stop != nil {
		h.cb.Stop()
	}
	return nil
}

// Stats returns the host's counters. It is safe from any goroutine.
func (h *Host) Stats() Stats { return h.stats.snapshot() }

// Clients returns the ids of the clients that have joined, in order.
func (h *Host) Clients() []uint16 {
	var ids []uint16
	for id, m := range h.byID {
		if m != nil {
			ids = append(ids, uint16(id))
		}
	}
	return ids
}

// Peer returns the PeerID of the client holding id.
func (h *Host) Peer(id uint16) (p2p.PeerID, bool) {
	if m := h.client(id); m != nil {
		return m.peer, true
	}
	return p2p.PeerID{}, false
}

// ClientID returns the id of the client that is peer.
func (h *Host) ClientID(peer p2p.PeerID) (uint16, bool) {
	if m := h.members[peer]; m != nil && m.state == playing {
		return m.id, true
	}
	return 0, false
}

func (h *Host) client(id uint16) *member {
	if int(id) >= len(h.byID) {
		return nil
	}
	return h.byID[id]
}

// Send is the host's SendFunc (the one Start received). HostID does
// nothing (the host never sends to itself, as in RetroArch); Broadcast
// goes to every client, returning the first error after trying them all;
// an id no client holds fails with ErrUnknownClient.
func (h *Host) Send(flags Flags, data []byte, clientID uint16) error {
	if h.closed {
		return ErrClosed
	}
	if err := checkSend(flags, data); err != nil {
		return err
	}
	switch {
	case len(data) == 0:
		if flags&FlushHint != 0 {
			h.flushAll()
		}
		return nil
	case clientID == HostID:
		return nil
	}
	msg := appendData(make([]byte, 0, dataHeaderLen+len(data)), HostID, data)
	if clientID == Broadcast {
		return h.broadcast(msg, flags)
	}
	m := h.client(clientID)
	if m == nil {
		return ErrUnknownClient
	}
	return sendData(h.node, &h.stats, m.peer, msg, flags)
}

// broadcast sends msg to every client and returns the first error.
func (h *Host) broadcast(msg []byte, flags Flags) error {
	var first error
	for _, m := range h.byID {
		if m == nil {
			continue
		}
		if err := sendData(h.node, &h.stats, m.peer, msg, flags); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// flushAll sends what the node buffered for every client.
func (h *Host) flushAll() {
	for _, m := range h.byID {
		if m != nil {
			h.node.Flush(m.peer)
		}
	}
}

// PollReceive is the host's poll_receive_fn: it delivers the packets that
// have arrived (reliable, then sequenced, then unsequenced; each class in
// arrival order), relays what clients sent to other clients, and returns
// without waiting. A call from inside Receive returns at once.
func (h *Host) PollReceive() {
	if h.closed || h.draining {
		return
	}
	h.draining = true
	defer func() { h.draining = false }()
	h.retryHeld()
	for _, ch := range dataChannels {
		if ch == channelReliable && len(h.held) > 0 {
			continue // order: nothing overtakes a held reliable packet
		}
		for range maxDrain {
			p, ok := h.node.ReadP2PPacket(ch)
			if !ok {
				break
			}
			h.handleData(p, ch)
			if h.closed {
				return
			}
			if ch == channelReliable && len(h.held) > 0 {
				break // the rest waits in the node, in order
			}
		}
	}
	h.flushRelayed()
}

// handleData delivers and relays one data message from a client; the
// header holds the recipient.
func (h *Host) handleData(p p2p.Packet, ch int) {
	from := h.members[p.From]
	if from == nil || from.state != playing {
		h.drop(&h.stats.notJoined, p.From, "data from a peer that has not joined")
		return
	}
	to, payload, err := parseData(p.Data)
	if err != nil {
		h.drop(&h.stats.malformed, p.From, err.Error())
		return
	}
	switch {
	case to == HostID:
	case to == Broadcast:
		for _, m := range h.byID {
			if m != nil && m != from {
				h.relay(p.Data, m, from.id, ch)
			}
		}
	case to == from.id || h.client(to) == nil:
		h.drop(&h.stats.badID, p.From, "recipient out of range, unknown or the sender")
		return
	default:
		h.relay(p.Data, h.client(to), from.id, ch)
		return
	}
	h.stats.received.Add(1)
	h.cb.Receive(payload, from.id)
}

// relay forwards a client's data message to another client, with the
// sender's id in place of the recipient's (msg is rewritten in place: the
// node copies it on Send). It goes out on the class it came in on; the
// host flushes it at the end of PollReceive, so the extra hop adds no
// Nagle delay.
func (h *Host) relay(msg []byte, to *member, fromID uint16, ch int) {
	binary.BigEndian.PutUint16(msg, fromID)
	var err error
	if ch == channelReliable && h.holding(to) {
		err = p2p.ErrQueueFull // sending now would overtake the held one
	} else {
		err = h.node.Send(to.peer, msg, classFlags(ch), ch)
	}
	switch {
	case errors.Is(err, p2p.ErrQueueFull) && ch == channelReliable:
		h.held = append(h.held, heldRelay{msg: slices.Clone(msg), to: to, ch: ch})
		h.stats.held.Add(1)
		h.markFlush(to.peer)
		return
	case err != nil:
		h.drop(&h.stats.relayF, to.peer, "relay refused: "+err.Error())
		return
	}
	h.stats.relayed.Add(1)
	h.markFlush(to.peer)
}

// holding reports whether a relay to m is held.
func (h *Host) holding(m *member) bool {
	return slices.ContainsFunc(h.held, func(r heldRelay) bool { return r.to == m })
}

func (h *Host) markFlush(peer p2p.PeerID) {
	if !slices.Contains(h.toFlush, peer) {
		h.toFlush = append(h.toFlush, peer)
	}
}

// retryHeld sends the held relays the recipients have room for now. A
// relay to a client that left is dropped and counted: it has no one to
// reach.
func (h *Host) retryHeld() {
	kept := h.held[:0]
	for _, r := range h.held {
		if r.to.state != playing || h.members[r.to.peer] != r.to {
			h.drop(&h.stats.relayF, r.to.peer, "relay for a client that left")
			continue
		}
		if slices.ContainsFunc(kept, func(k heldRelay) bool { return k.to == r.to }) {
			kept = append(kept, r) // behind one that still waits: keep the order
			continue
		}
		err := h.node.Send(r.to.peer, r.msg, classFlags(r.ch), r.ch)
		switch {
		case errors.Is(err, p2p.ErrQueueFull):
			kept = append(kept, r)
		case err != nil:
			h.drop(&h.stats.relayF, r.to.peer, "relay refused: "+err.Error())
		default:
			h.stats.relayed.Add(1)
			h.markFlush(r.to.peer)
		}
	}
	clear(h.held[len(kept):])
	h.held = kept
}

func (h *Host) flushRelayed() {
	for _, peer := range h.toFlush {
		h.node.Flush(peer)
	}
	h.toFlush = h.toFlush[:0]
}

// readControl handles the control messages that arrived: joins.
func (h *Host) readControl(now time.Time) {
	for range maxDrain {
		p, ok := h.node.ReadP2PPacket(channelControl)
		if !ok || h.closed {
			return
		}
		h.handleControl(p, now)
	}
}

func (h *Host) handleControl(p p2p.Packet, now time.Time) {
	switch {
	case len(p.Data) == 0:
		h.drop(&h.stats.malformed, p.From, "empty control message")
		return
	case p.Data[0] != msgJoin:
		h.drop(&h.stats.badControl, p.From, "control message a host does not take")
		return
	}
	if m := h.members[p.From]; m != nil && m.state != waiting {
		h.drop(&h.stats.badControl, p.From, "join from a peer that joined or was refused")
		return
	}
	wire, version, err := parseJoin(p.Data)
	switch {
	case err != nil || wire != wireVersion:
		h.stats.malformed.Add(1)
		h.refuse(p.From, &RefusedError{Reason: ReasonProtocol}, now)
	case version != h.cb.ProtocolVersion:
		h.refuse(p.From, &RefusedError{Reason: ReasonVersion, LocalVersion: h.cb.ProtocolVersion, RemoteVersion: version}, now)
	default:
		h.admit(p.From, now)
	}
}

// admit gives a joining peer the lowest free id, if the core agrees, and
// welcomes it.
func (h *Host) admit(peer p2p.PeerID, now time.Time) {
	id := h.freeID()
	if id == 0 {
		h.refuse(peer, &RefusedError{Reason: ReasonFull}, now)
		return
	}
	if h.cb.Connected != nil && !h.cb.Connected(id) {
		h.refuse(peer, &RefusedError{Reason: ReasonRefused}, now)
		return
	}
	if h.closed { // the core closed the host from Connected
		return
	}
	m := &member{peer: peer, id: id, state: playing, since: now}
	h.members[peer] = m
	h.byID[id] = m
	msg := appendWelcome(nil, id, uint16(h.cfg.MaxClients))
	if err := h.node.Send(peer, msg, channels.Reliable|channels.FlushHint, channelControl); err != nil {
		h.cfg.Logger.Warn("netpacket: welcome not sent", "peer", peer, "id", id, "err", err)
	}
	h.cfg.Logger.Info("netpacket: client joined", "peer", peer, "id", id)
}

// freeID returns the lowest free client id, or 0 when all are taken.
func (h *Host) freeID() uint16 {
	for id := 1; id < len(h.byID); id++ {
		if h.byID[id] == nil {
			return uint16(id)
		}
	}
	return 0
}

// refuse tells peer why it is refused and keeps its session open for
// refuseGrace, so the refusal gets there before the close.
func (h *Host) refuse(peer p2p.PeerID, why *RefusedError, now time.Time) {
	msg := appendRefuse(nil, why.Reason, h.cb.ProtocolVersion)
	h.node.Send(peer, msg, channels.Reliable|channels.FlushHint, channelControl)
	h.members[peer] = &member{peer: peer, state: refusing, since: now}
	h.stats.refused.Add(1)
	h.cfg.Logger.Info("netpacket: player refused", "peer", peer, "err", why)
	if h.cfg.OnRefuse != nil {
		h.cfg.OnRefuse(peer, why)
	}
}

// readEvents handles the node's session events: requests (a peer wants to
// join), closes and failures (a client left or vanished).
func (h *Host) readEvents(now time.Time) {
	for range maxDrain {
		select {
		case e, ok := <-h.node.Events():
			if !ok {
				return // the node closed
			}
			h.handleEvent(e, now)
		default:
			return
		}
		if h.closed {
			return
		}
	}
}

func (h *Host) handleEvent(e p2p.Event, now time.Time) {
	switch e := e.(type) {
	case p2p.SessionRequest:
		h.request(e.Peer, now)
	case p2p.SessionConnectFail:
		h.closeStale(e.Peer)
		h.leave(e.Peer)
	case p2p.SessionClosed:
		h.leave(e.Peer)
	}
}

// request accepts a peer's session so its join can be read, within the
// bound on peers without an id.
func (h *Host) request(peer p2p.PeerID, now time.Time) {
	m := h.members[peer]
	if m != nil && m.state == playing {
		// Its old session ended and the event was lost: it left.
		h.leave(peer)
		m = nil
	}
	if m == nil && h.unjoined() >= maxWaiting {
		h.node.CloseP2PSessionWithUser(peer)
		h.drop(&h.stats.rejected, peer, "too many peers waiting to join")
		return
	}
	if !h.node.AcceptP2PSessionWithUser(peer) {
		return // it gave up meanwhile
	}
	if m == nil {
		h.members[peer] = &member{peer: peer, state: waiting, since: now}
	}
}

func (h *Host) unjoined() int {
	n := 0
	for _, m := range h.members {
		if m.state != playing {
			n++
		}
	}
	return n
}

// leave forgets peer; a client's id is freed and Callbacks.Disconnected
// called. It leaves the node's session alone: the peer may have opened a
// new one to join again.
func (h *Host) leave(peer p2p.PeerID) {
	m := h.members[peer]
	if m == nil {
		return
	}
	delete(h.members, peer)
	if m.state != playing {
		return
	}
	h.byID[m.id] = nil
	h.cfg.Logger.Info("netpacket: client left", "peer", peer, "id", m.id)
	if h.cb.Disconnected != nil {
		h.cb.Disconnected(m.id)
	}
}

// closeStale closes the node's session with peer unless it is up: a
// failed session that a send restarted toward a vanished client, say. An
// active one is a new session the peer opened to join again.
func (h *Host) closeStale(peer p2p.PeerID) {
	if st, ok := h.node.GetP2PSessionState(peer); ok && !st.ConnectionActive {
		h.node.CloseP2PSessionWithUser(peer)
	}
}

// expire closes the sessions of peers past their time: no join within
// JoinTimeout, or refused refuseGrace ago. Every sweepEvery it also
// checks that each client's session is still up, in case the node's
// event queue overflowed and its close was lost.
func (h *Host) expire(now time.Time) {
	for peer, m := range h.members {
		switch {
		case m.state == waiting && now.Sub(m.since) >= h.cfg.JoinTimeout:
			h.stats.rejected.Add(1)
			h.node.CloseP2PSessionWithUser(peer)
			h.leave(peer)
		case m.state == refusing && now.Sub(m.since) >= refuseGrace:
			h.node.CloseP2PSessionWithUser(peer)
			h.leave(peer)
		}
	}
	if now.Before(h.nextSweep) {
		return
	}
	h.nextSweep = now.Add(sweepEvery)
	for _, m := range h.byID {
		if m == nil {
			continue
		}
		if st, ok := h.node.GetP2PSessionState(m.peer); !ok || !st.ConnectionActive {
			h.closeStale(m.peer)
			h.leave(m.peer)
		}
		if h.closed {
			return
		}
	}
}

// drop counts a dropped message or session and logs it.
func (h *Host) drop(counter *atomic.Uint64, peer p2p.PeerID, why string) {
	counter.Add(1)
	h.cfg.Logger.Debug("netpacket: dropped", "peer", peer, "why", why)
}
