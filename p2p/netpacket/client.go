package netpacket

import (
	"fmt"
	"sync/atomic"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/p2p"
)

// Client is a netpacket client over a p2p.Node: it joins a host, and once
// the host has welcomed it with an id, sends through the host and receives
// what the host delivers or relays.
//
// A Client is not safe for concurrent use, like libretro's netpacket: call
// Join, Frame, Send, PollReceive and Close from one goroutine (the
// frontend loop); the callbacks run there. Stats may be called from any
// goroutine. The Client starts no goroutine of its own and reaches the
// node only through its methods, which are safe for concurrent use.
type Client struct {
	// Set by Join, then read-only.
	node *p2p.Node
	host p2p.PeerID
	cb   Callbacks
	cfg  Config

	// Owned by the frontend goroutine.
	state    clientState
	id       uint16 // ours, once started
	maxID    uint16 // the host's largest client id, once started
	err      error  // why it ended
	closed   bool
	draining bool // PollReceive is running: a core's nested call returns at once

	stats counters
}

type clientState int

const (
	joining clientState = iota // join sent, no welcome yet
	started                    // welcomed: Start was called
	ended                      // refused, failed, host gone or closed
)

// Join sends a join request to the host, the node with PeerID host, which
// the node finds through its rendezvous server or an address given with
// Node.AddPeerAddr. Frame then carries the join on: when the host welcomes
// the client, Frame calls cb.Start with the client's id; when it refuses,
// Frame returns a *RefusedError and Start is never called. From now on the
// Client reads the node's events (Node.Events): the game must not call
// Node.RunCallbacks or Node.Events while the Client runs. The node stays
// the caller's: Close does not close it.
func Join(node *p2p.Node, host p2p.PeerID, cb Callbacks, cfg Config) (*Client, error) {
	if err := cb.validate(); err != nil {
		return nil, err
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Client{node: node, host: host, cb: cb, cfg: cfg}
	msg := appendJoin(nil, cb.ProtocolVersion)
	if err := node.Send(host, msg, channels.Reliable|channels.FlushHint, channelControl); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJoinFailed, err)
	}
	return c, nil
}

// Frame runs one frame of the frontend loop: it handles the host's
// welcome (Callbacks.Start) or refusal, delivers the packets that arrived
// (Callbacks.Receive), handles the node's session events
// (Callbacks.Stop when the host went away), then calls Callbacks.Poll.
// It never blocks. It returns nil while the client is joining or playing,
// and once it has ended, why: a *RefusedError (ErrRefused,
// ErrVersionMismatch), ErrJoinFailed, ErrHostGone, or ErrClosed after
// Close.
func (c *Client) Frame() error {
	if c.state == ended {
		return c.Err()
	}
	// Control first: a welcome starts the client before the packets sent
	// after it are read, and a refusal is read before the close that
	// follows it.
	c.readControl()
	c.PollReceive()
	c.readEvents()
	drainUnused(c.node, &c.stats)
	if c.state == started && c.cb.Poll != nil {
		c.cb.Poll()
	}
	return c.Err()
}

// Err returns why the client ended, or nil while it is joining or
// playing.
func (c *Client) Err() error {
	if c.closed {
		return ErrClosed
	}
	return c.err
}

// Close calls Callbacks.Stop if Start was called and closes the session
// with the host (the host's core gets Disconnected). It does not close the
// node. It is idempotent.
func (c *Client) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	c.end(ErrClosed)
	return nil
}

// ID returns the client's id, once the host has welcomed it.
func (c *Client) ID() (uint16, bool) { return c.id, c.state == started }

// Host returns the host's PeerID.
func (c *Client) Host() p2p.PeerID { return c.host }

// Stats returns the client's counters. It is safe from any goroutine.
func (c *Client) Stats() Stats { return c.stats.snapshot() }

// Send is the client's SendFunc (the one Start received). Everything goes
// to the host, which delivers it (HostID), relays it to one client, or
// both (Broadcast). The client's own id does nothing, as in RetroArch. It
// returns ErrNotStarted before Start and the reason the client ended
// after.
func (c *Client) Send(flags Flags, data []byte, clientID uint16) error {
	switch c.state {
	case joining:
		return ErrNotStarted
	case ended:
		return c.Err()
	}
	if err := checkSend(flags, data); err != nil {
		return err
	}
	switch {
	case len(data) == 0:
		if flags&FlushHint != 0 {
			return c.node.Flush(c.host)
		}
		return nil
	case clientID == c.id:
		return nil
	case clientID != Broadcast && clientID > c.maxID:
		return ErrUnknownClient
	}
	msg := appendData(make([]byte, 0, dataHeaderLen+len(data)), clientID, data)
	return sendData(c.node, &c.stats, c.host, msg, flags)
}

// PollReceive is the client's poll_receive_fn: it delivers the packets
// that have arrived (reliable, then sequenced, then unsequenced; each
// class in arrival order) and returns without waiting. Before Start it
// does nothing: what the host sent waits in the node until the welcome
// is read. A call from inside Receive returns at once.
func (c *Client) PollReceive() {
	if c.state != started || c.draining {
		return
	}
	c.draining = true
	defer func() { c.draining = false }()
	for _, ch := range dataChannels {
		for range maxDrain {
			p, ok := c.node.ReadP2PPacket(ch)
			if !ok {
				break
			}
			c.handleData(p)
			if c.state != started {
				return
			}
		}
	}
}

// handleData delivers one data message from the host; the header holds
// the original sender.
func (c *Client) handleData(p p2p.Packet) {
	if p.From != c.host {
		c.drop(&c.stats.notJoined, p.From, "data from a peer other than the host")
		return
	}
	from, payload, err := parseData(p.Data)
	switch {
	case err != nil:
		c.drop(&c.stats.malformed, p.From, err.Error())
	case from == c.id || from > c.maxID:
		c.drop(&c.stats.badID, p.From, "sender out of range or this client")
	default:
		c.stats.received.Add(1)
		c.cb.Receive(payload, from)
	}
}

// readControl handles the host's welcome or refusal.
func (c *Client) readControl() {
	for range maxDrain {
		if c.state == ended {
			return
		}
		p, ok := c.node.ReadP2PPacket(channelControl)
		if !ok {
			return
		}
		c.handleControl(p)
	}
}

func (c *Client) handleControl(p p2p.Packet) {
	switch {
	case p.From != c.host:
		c.drop(&c.stats.badControl, p.From, "control message from a peer other than the host")
	case len(p.Data) == 0:
		c.drop(&c.stats.malformed, p.From, "empty control message")
	case c.state != joining:
		c.drop(&c.stats.badControl, p.From, "control message after the welcome")
	case p.Data[0] == msgWelcome:
		c.welcome(p.Data)
	case p.Data[0] == msgRefuse:
		c.refused(p.Data)
	default:
		c.drop(&c.stats.badControl, p.From, "control message a client does not take")
	}
}

func (c *Client) welcome(msg []byte) {
	id, maxID, err := parseWelcome(msg)
	if err != nil {
		c.drop(&c.stats.malformed, c.host, "welcome: "+err.Error())
		return
	}
	c.id, c.maxID, c.state = id, maxID, started
	c.cfg.Logger.Info("netpacket: joined", "host", c.host, "id", id)
	c.cb.Start(id, c.Send, c.PollReceive)
}

func (c *Client) refused(msg []byte) {
	r, version, err := parseRefuse(msg)
	if err != nil {
		c.drop(&c.stats.malformed, c.host, "refusal: "+err.Error())
		return
	}
	why := &RefusedError{Reason: r}
	if r == ReasonVersion {
		why.LocalVersion, why.RemoteVersion = c.cb.ProtocolVersion, version
	}
	c.cfg.Logger.Info("netpacket: refused", "host", c.host, "err", why)
	c.end(why)
}

// readEvents handles the node's session events: the host's session closed
// or failed; any other peer's session is refused (clients talk only to
// the host).
func (c *Client) readEvents() {
	for range maxDrain {
		if c.state == ended {
			return
		}
		select {
		case e, ok := <-c.node.Events():
			if !ok {
				return // the node closed
			}
			c.handleEvent(e)
		default:
			return
		}
	}
}

func (c *Client) handleEvent(e p2p.Event) {
	switch e := e.(type) {
	case p2p.SessionRequest:
		c.node.CloseP2PSessionWithUser(e.Peer)
		c.drop(&c.stats.rejected, e.Peer, "session from a peer other than the host")
	case p2p.SessionConnectFail:
		if e.Peer == c.host {
			c.lost(e.Error.String())
		}
	case p2p.SessionClosed:
		if e.Peer == c.host {
			c.lost("the host closed the session")
		}
	}
}

// lost ends the client when its session with the host ended.
func (c *Client) lost(why string) {
	if c.state == joining {
		c.end(fmt.Errorf("%w: %s", ErrJoinFailed, why))
		return
	}
	c.end(fmt.Errorf("%w: %s", ErrHostGone, why))
}

// end records why the client ended, closes its session with the host and
// calls Stop if Start was called.
func (c *Client) end(why error) {
	if c.state == ended {
		return
	}
	wasStarted := c.state == started
	c.state, c.err = ended, why
	c.node.CloseP2PSessionWithUser(c.host)
	if wasStarted && c.cb.Stop != nil {
		c.cb.Stop()
	}
}

// drop counts a dropped message or session and logs it.
func (c *Client) drop(counter *atomic.Uint64, peer p2p.PeerID, why string) {
	counter.Add(1)
	c.cfg.Logger.Debug("netpacket: dropped", "peer", peer, "why", why)
}
