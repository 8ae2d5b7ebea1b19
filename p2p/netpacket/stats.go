package netpacket

import (
	"sync/atomic"

	"github.com/gamewire/gamewire/p2p"
)

// Stats counts what a Host or Client sent, received and dropped. Every
// drop of a peer's message lands in exactly one of the drop counters.
type Stats struct {
	Sent     uint64 // packets handed to the node, one per recipient session (a broadcast from the host counts once per client)
	Received uint64 // packets passed to Callbacks.Receive
	Relayed  uint64 // host: packets forwarded from one client to another, once per recipient
	// RelayHeld counts reliable relays the host held back because its send
	// queue to the recipient was full; they go out once there is room.
	RelayHeld uint64

	// SentReliably counts unreliable packets over MaxUnreliableSize that
	// were sent reliably.
	SentReliably uint64

	// Drops.
	Malformed   uint64 // shorter than the header, over the size limit, fields that do not decode, or on a reserved channel this version does not use
	NotJoined   uint64 // data from a peer that holds no client id (host), or from a peer other than the host (client)
	BadID       uint64 // data whose client id is out of range, held by no one, or the receiver's own
	BadControl  uint64 // control messages of an unknown type, from the wrong side, or at the wrong time
	RelayFailed uint64 // host: relayed packets that could not go: an unreliable one over a full queue, or one for a client that left

	Refused  uint64 // host: joins refused (version, Connected false, full, malformed join)
	Rejected uint64 // sessions closed without a join: strangers (client), over the waiting bound or past JoinTimeout (host)
}

// counters are Stats as atomics: the frontend goroutine writes them and
// Stats may be read from any goroutine.
type counters struct {
	sent, received, relayed, sentReliably, held     atomic.Uint64
	malformed, notJoined, badID, badControl, relayF atomic.Uint64
	refused, rejected                               atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Sent:         c.sent.Load(),
		Received:     c.received.Load(),
		Relayed:      c.relayed.Load(),
		RelayHeld:    c.held.Load(),
		SentReliably: c.sentReliably.Load(),
		Malformed:    c.malformed.Load(),
		NotJoined:    c.notJoined.Load(),
		BadID:        c.badID.Load(),
		BadControl:   c.badControl.Load(),
		RelayFailed:  c.relayF.Load(),
		Refused:      c.refused.Load(),
		Rejected:     c.rejected.Load(),
	}
}

// sendData sends msg, a data message (header and packet), to peer. The
// node copies msg, so one message serves every recipient of a broadcast.
func sendData(node *p2p.Node, c *counters, peer p2p.PeerID, msg []byte, flags Flags) error {
	ch, cf, upgraded := route(flags, len(msg)-dataHeaderLen)
	if err := node.Send(peer, msg, cf, ch); err != nil {
		return err
	}
	c.sent.Add(1)
	if upgraded {
		c.sentReliably.Add(1)
	}
	return nil
}

// drainUnused reads and drops what arrives on the reserved channels this
// version does not use, so a peer cannot fill the node's queues there.
func drainUnused(node *p2p.Node, c *counters) {
	for ch := firstUnused; ch < ChannelBase+ChannelCount; ch++ {
		for range maxDrain {
			if _, ok := node.ReadP2PPacket(ch); !ok {
				break
			}
			c.malformed.Add(1)
		}
	}
}
