package p2p

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/gamewire/gamewire/channels"
)

// SendP2PPacket sends data to a peer on a channel (0–65535) with one of
// Steam's send types (see SendType for the table). It opens a session if
// there is none and queues the data until the session connects, except
// SendUnreliableNoDelay, which is dropped then (not an error). It returns
// ErrTooLarge, ErrQueueFull, ErrInvalidChannel, ErrInvalidSendType, ErrSelf
// or ErrClosed; nil means queued or sent, not delivered. A session that
// cannot connect within Config.ConnectTimeout raises SessionConnectFail.
func (n *Node) SendP2PPacket(to PeerID, data []byte, t SendType, channel int) error {
	if t < SendUnreliable || t > SendReliableWithBuffering {
		return ErrInvalidSendType
	}
	return n.send(to, data, t.Flags(), channel, t == SendUnreliableNoDelay)
}

// Send is SendP2PPacket with netpacket flags: channels.Reliable,
// channels.Unsequenced and channels.FlushHint. Flags Unreliable (0) gives
// unreliable sequenced delivery, beyond Steam's send types.
func (n *Node) Send(to PeerID, data []byte, flags channels.Flags, channel int) error {
	if flags.Validate() != nil {
		return ErrInvalidFlags
	}
	return n.send(to, data, flags, channel, false)
}

func (n *Node) send(to PeerID, data []byte, flags channels.Flags, channel int, noDelay bool) error {
	switch {
	case channel < 0 || channel > 0xFFFF:
		return ErrInvalidChannel
	case len(data) > maxSize(flags):
		return ErrTooLarge
	case to == n.id.PeerID():
		return ErrSelf
	}
	now := time.Now()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	s := n.sessions[to]
	if s != nil {
		// A failed attempt restarts here, under Node.mu, so the maintenance
		// goroutine cannot forget the record while it comes back to life.
		s.mu.Lock()
		switch s.state {
		case stClosed:
			s.unlock()
			s = nil
		case stFailed:
			s.restartLocked(now)
			s.unlock()
		default:
			s.unlock()
		}
	}
	if s == nil {
		s = n.newSessionLocked(to, now)
	}
	n.mu.Unlock()
	return s.send(data, flags, channel, noDelay, now)
}

// Flush sends what is buffered for the peer now, as channels.FlushHint does.
func (n *Node) Flush(to PeerID) error {
	if n.isClosed() {
		return ErrClosed
	}
	s := n.lookupSession(to)
	if s == nil {
		return nil
	}
	s.mu.Lock()
	conn := s.conn
	s.unlock()
	if conn != nil {
		conn.Flush()
	}
	return nil
}

func (n *Node) lookupSession(p PeerID) *session {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sessions[p]
}

// IsP2PPacketAvailable reports whether a packet is waiting on channel, and
// its size.
func (n *Node) IsP2PPacketAvailable(channel int) (size int, ok bool) {
	return n.recvq.peek(channel)
}

// ReadP2PPacket returns the oldest packet waiting on channel, from any peer,
// without blocking.
func (n *Node) ReadP2PPacket(channel int) (Packet, bool) {
	return n.recvq.pop(channel)
}

// Receive waits for a packet on channel, from any peer, until ctx is done
// or the node closes (ErrClosed).
func (n *Node) Receive(ctx context.Context, channel int) (Packet, error) {
	if n.isClosed() {
		return Packet{}, ErrClosed
	}
	return n.recvq.wait(ctx, channel)
}

// AcceptP2PSessionWithUser accepts the session a peer opened: the data it
// sent is delivered and the peer is told. A peer that asked for us through
// the rendezvous server (SessionRequest before any path exists) is
// introduced now: traversal starts on both sides. It reports false when
// the peer neither opened a session nor asked. Sending to the peer accepts
// it too.
func (n *Node) AcceptP2PSessionWithUser(p PeerID) bool {
	if s := n.lookupSession(p); s != nil && s.acceptIfLive() {
		return true
	}
	return n.acceptAsked(p)
}

// CloseP2PSessionWithUser closes the session with a peer and frees what it
// holds, unread packets from the peer included. The peer is told: if it
// opened the session and this node never accepted it, the peer's attempt
// fails with SessionErrorNoRightsToApp. New data from the peer raises a new
// SessionRequest. A request that came through the rendezvous server is
// refused at no cost: the peer's attempt fails with SessionErrorTimeout, as
// an unanswered one does in Steam. It reports false when there was no
// session or request.
func (n *Node) CloseP2PSessionWithUser(p PeerID) bool {
	s := n.lookupSession(p)
	if s == nil {
		if n.trav == nil {
			return false
		}
		_, asked := n.trav.asks.take(p) // a request through the server, refused
		return asked
	}
	s.mu.Lock()
	open := s.state != stClosed
	s.unlock()
	if !open {
		return false
	}
	s.closeByApp(true)
	n.recvq.drop(p, 0, true)
	return true
}

// CloseP2PChannelWithUser drops the unread packets on channel from a peer
// and closes that channel of the session; closing the last open channel
// closes the session. It reports false when there is no such session or
// channel.
func (n *Node) CloseP2PChannelWithUser(p PeerID, channel int) bool {
	s := n.lookupSession(p)
	if s == nil {
		return false
	}
	s.mu.Lock()
	_, open := s.openChans[channel]
	delete(s.openChans, channel)
	last := open && len(s.openChans) == 0 && s.state != stClosed
	s.unlock()
	if !open {
		return false
	}
	n.recvq.drop(p, channel, false)
	if last {
		n.CloseP2PSessionWithUser(p)
	}
	return true
}

// AllowP2PPacketRelay allows or forbids relaying sessions created after the
// call through a TURN server, and returns true, as Steam does. Either side
// forbidding relay forbids it for the session (see Config.DisableRelay).
// The node's next registration tells the rendezvous server, which issues
// TURN credentials only to nodes that allow relay.
func (n *Node) AllowP2PPacketRelay(allow bool) bool {
	if n.relayAllowed.Swap(allow) != allow && n.trav != nil {
		n.trav.reregister(time.Now())
	}
	return true
}

// Registered reports whether the rendezvous server holds the node's
// registration (over UDP, or TCP when UDP is blocked): peers can reach it
// by its PeerID now. A session toward a peer that has not registered yet
// fails with SessionErrorDestinationNotLoggedOn. Always false without
// Config.Rendezvous. Steam's BLoggedOn.
func (n *Node) Registered() bool {
	return n.trav != nil && n.trav.registered()
}

// AddPeerAddr tells the node where a peer can be reached, for LAN play and
// tests without a server. A session waiting for an address starts its
// handshake at once.
func (n *Node) AddPeerAddr(p PeerID, addr netip.AddrPort) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	n.tabMu.Lock()
	n.peerAddrs[p] = addr
	n.tabMu.Unlock()
	s := n.lookupSession(p)
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.state == stConnecting && s.hs == nil {
		s.startHandshakeLocked(time.Now())
	}
	s.unlock()
}

// Events returns the channel of session events. It shares one bounded
// queue with RunCallbacks: use one or the other. Events that do not fit are
// dropped and counted (NodeStats.EventsDropped). Close closes the channel
// once the node has stopped, after the events still waiting, so
// `for e := range node.Events()` ends.
func (n *Node) Events() <-chan Event { return n.events.ch }

// RunCallbacks calls the Config callbacks for the events waiting, on the
// caller's goroutine (a game loop), and returns when none is left. No lock
// of the node is held while a callback runs, so callbacks may call any
// method.
func (n *Node) RunCallbacks() {
	for {
		select {
		case e, ok := <-n.events.ch:
			if !ok {
				return // closed: Close ran
			}
			n.dispatch(e)
		default:
			return
		}
	}
}

func (n *Node) dispatch(e Event) {
	switch e := e.(type) {
	case SessionRequest:
		if f := n.cfg.OnSessionRequest; f != nil {
			f(e.Peer)
		}
	case SessionConnectFail:
		if f := n.cfg.OnSessionConnectFail; f != nil {
			f(e.Peer, e.Error)
		}
	case SessionClosed:
		if f := n.cfg.OnSessionClosed; f != nil {
			f(e.Peer)
		}
	case PathChanged:
		if f := n.cfg.OnPathChanged; f != nil {
			f(e)
		}
	case RegistrationChanged:
		if f := n.cfg.OnRegistrationChanged; f != nil {
			f(e)
		}
	case LANPeerFound:
		if f := n.cfg.OnLANPeerFound; f != nil {
			f(e)
		}
	}
}

// SendContext is Send that waits for room instead of returning
// ErrQueueFull: when the channel's share of the peer's send queue is full
// it blocks until the peer has acknowledged enough
// (channels.Conn.WaitChannelQueue), the session ends, or ctx is done, and
// returns ctx's error then. Other errors return at once.
// Before the session connects, the wait is for the pre-connect queue to be
// sent, checked every 20 ms.
func (n *Node) SendContext(ctx context.Context, to PeerID, data []byte, flags channels.Flags, channel int) error {
	for {
		err := n.Send(to, data, flags, channel)
		if !errors.Is(err, ErrQueueFull) {
			return err
		}
		if err := n.waitRoom(ctx, to, channel); err != nil {
			return err
		}
	}
}

// waitRoom waits until a send to peer on channel may find room
// (channels.Conn.WaitChannelQueue) or the Conn ended, or, before the
// session connected, 20 ms passed. It returns only ctx's error or
// ErrClosed.
func (n *Node) waitRoom(ctx context.Context, peer PeerID, channel int) error {
	var conn *channels.Conn
	if s := n.lookupSession(peer); s != nil {
		s.mu.Lock()
		if s.state == stEstablished && s.confirmed.Load() {
			conn = s.conn
		}
		s.unlock()
	}
	if conn != nil {
		conn.WaitChannelQueue(ctx, uint16(channel)) // a Conn that ended returns at once: the next send restarts the session
	} else {
		t := time.NewTimer(20 * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-n.done:
		}
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case n.isClosed():
		return ErrClosed
	}
	return nil
}
