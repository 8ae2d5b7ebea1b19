package netpacket

import (
	"strings"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/p2p"
)

// Flags are libretro's RETRO_NETPACKET_* send flags, with libretro's
// values, so a core's flags pass through unchanged.
type Flags int

// The flags. Unreliable is the zero value: unreliable and sequenced.
const (
	Unreliable  Flags = 0      // RETRO_NETPACKET_UNRELIABLE: may be lost; never delivered after a newer one from the same sender
	Reliable    Flags = 1 << 0 // RETRO_NETPACKET_RELIABLE: arrives exactly once, in order
	Unsequenced Flags = 1 << 1 // RETRO_NETPACKET_UNSEQUENCED: unreliable, in any order; ignored with Reliable
	FlushHint   Flags = 1 << 2 // RETRO_NETPACKET_FLUSH_HINT: send this and what is buffered now

	flagsMask = Reliable | Unsequenced | FlushHint
)

// Client ids.
const (
	// HostID is the host's client id, as in libretro.
	HostID uint16 = 0
	// Broadcast as a client id sends to every other player, from the host
	// or from a client (RETRO_NETPACKET_BROADCAST).
	Broadcast uint16 = 0xFFFF
)

// Size limits.
const (
	// MaxPacketSize is the largest packet send takes: libretro's "up to 64
	// KB", read as 64 KiB. Larger ones fail with ErrTooLarge.
	MaxPacketSize = 64 << 10

	// MaxUnreliableSize is the largest packet sent unreliably: what p2p
	// sends in one unreliable message, less this package's header.
	// Unreliable packets above it are sent reliably, as libretro.h allows
	// ("Reliable transmission will be used instead").
	MaxUnreliableSize = p2p.MaxUnreliableSize - dataHeaderLen
)

// SendFunc is libretro's send_fn: it sends data to clientID (HostID, a
// client, or Broadcast) with flags. It returns nil when the packet was
// queued or sent, not delivered. An empty data sends nothing: with
// FlushHint it only flushes what was buffered, as libretro's NULL/0 buffer
// does. Sending to oneself does nothing, as in RetroArch.
type SendFunc func(flags Flags, data []byte, clientID uint16) error

// Callbacks are libretro's retro_netpacket_callback: what a core gives the
// frontend. Start and Receive are required; the others may be nil. They
// all run on the goroutine that calls Frame, Send or PollReceive.
type Callbacks struct {
	// Start begins a session: clientID is HostID on the host (no one has
	// joined yet), or the client's id once the host has welcomed it. send
	// and pollReceive stay valid until Stop.
	Start func(clientID uint16, send SendFunc, pollReceive func())

	// Receive gets one packet and the id of its original sender. data
	// belongs to the callee.
	Receive func(data []byte, fromClientID uint16)

	// Stop ends the session started by Start: the host closed, the host
	// went away, or Close was called.
	Stop func()

	// Poll runs once per Frame, after the packets that arrived were
	// received: a good place to send.
	Poll func()

	// Connected (host only) is asked before a new player gets clientID;
	// false refuses the player, whose session is closed and whose Start
	// is never called. The id becomes a recipient once Connected returns
	// true. Nil accepts every player while ids are free.
	Connected func(clientID uint16) bool

	// Disconnected (host only) says clientID left: its session closed or
	// failed (the peer went silent). The id is free again.
	Disconnected func(clientID uint16)

	// ProtocolVersion is compared like an AppID: a client whose version
	// differs from the host's is refused, and both sides are told why (see
	// RefusedError). At most MaxVersionLen bytes.
	ProtocolVersion string
}

// MaxVersionLen bounds Callbacks.ProtocolVersion.
const MaxVersionLen = 255

func (cb *Callbacks) validate() error {
	switch {
	case cb.Start == nil || cb.Receive == nil:
		return ErrMissingCallback
	case len(cb.ProtocolVersion) > MaxVersionLen:
		return ErrVersionTooLong
	}
	return nil
}

// String returns the flags joined by "|", e.g. "Reliable|FlushHint".
func (f Flags) String() string {
	parts := []string{"Unreliable"}
	if f&Reliable != 0 {
		parts[0] = "Reliable"
	}
	if f&Unsequenced != 0 {
		parts = append(parts, "Unsequenced")
	}
	if f&FlushHint != 0 {
		parts = append(parts, "FlushHint")
	}
	if f&^flagsMask != 0 {
		parts = append(parts, "Invalid")
	}
	return strings.Join(parts, "|")
}

// checkSend refuses what send_fn cannot carry.
func checkSend(flags Flags, data []byte) error {
	switch {
	case flags&^flagsMask != 0:
		return ErrInvalidFlags
	case len(data) > MaxPacketSize:
		return ErrTooLarge
	}
	return nil
}

// route picks the p2p channel and channels flags for a packet of size
// bytes (the payload, without header). Reliable wins over Unsequenced
// (libretro calls the pair invalid; ENet ignores Unsequenced there too),
// and unreliable packets too large for one unreliable p2p message go
// reliably. upgraded reports that last case.
func route(flags Flags, size int) (channel int, cf channels.Flags, upgraded bool) {
	switch {
	case flags&Reliable != 0:
		channel, cf = channelReliable, channels.Reliable
	case size > MaxUnreliableSize:
		channel, cf, upgraded = channelReliable, channels.Reliable, true
	case flags&Unsequenced != 0:
		channel, cf = channelUnsequenced, channels.Unreliable|channels.Unsequenced
	default:
		channel, cf = channelSequenced, channels.Unreliable
	}
	if flags&FlushHint != 0 {
		cf |= channels.FlushHint
	}
	return channel, cf, upgraded
}

// classFlags are the channels flags a relayed packet keeps: those of the
// channel it arrived on. The host flushes relayed packets itself.
func classFlags(channel int) channels.Flags {
	switch channel {
	case channelReliable:
		return channels.Reliable
	case channelUnsequenced:
		return channels.Unreliable | channels.Unsequenced
	}
	return channels.Unreliable
}
