package p2p

import (
	"fmt"

	"github.com/gamewire/gamewire/channels"
)

// SendType is Steam's EP2PSend. The send-type table:
//
//	send type                      flags                          max size  before the session connects
//	SendUnreliable (0)             Unreliable|Unsequenced|Flush   1200 B    queued
//	SendUnreliableNoDelay (1)      Unreliable|Unsequenced|Flush   1200 B    dropped (not an error)
//	SendReliable (2)               Reliable|Flush                 1 MiB     queued
//	SendReliableWithBuffering (3)  Reliable                       1 MiB     queued
//	(Send with flags Unreliable)   Unreliable (sequenced)         1200 B    queued
//
// Unreliable messages may be lost or reordered and are sent at once.
// Reliable ones arrive exactly once, in order per (peer, channel); a
// stalled message on one channel never delays another. Reliable sends flush
// what was buffered before them; ReliableWithBuffering waits up to
// Config.NagleDelay (5 ms) to share a datagram. The last row is beyond
// Steam: unreliable sequenced, never delivered after a newer message on its
// channel (Godot's UNRELIABLE_ORDERED).
type SendType int

// The send types, with Steam's values.
const (
	SendUnreliable            SendType = 0 // k_EP2PSendUnreliable
	SendUnreliableNoDelay     SendType = 1 // k_EP2PSendUnreliableNoDelay
	SendReliable              SendType = 2 // k_EP2PSendReliable
	SendReliableWithBuffering SendType = 3 // k_EP2PSendReliableWithBuffering
)

// Size limits of the send types.
const (
	MaxUnreliableSize = 1200
	MaxReliableSize   = 1 << 20
)

// Flags returns the netpacket flags the send type maps to.
func (t SendType) Flags() channels.Flags {
	switch t {
	case SendUnreliable, SendUnreliableNoDelay:
		return channels.Unreliable | channels.Unsequenced | channels.FlushHint
	case SendReliable:
		return channels.Reliable | channels.FlushHint
	case SendReliableWithBuffering:
		return channels.Reliable
	}
	return 0xFF // invalid: channels refuses it
}

func (t SendType) String() string {
	switch t {
	case SendUnreliable:
		return "Unreliable"
	case SendUnreliableNoDelay:
		return "UnreliableNoDelay"
	case SendReliable:
		return "Reliable"
	case SendReliableWithBuffering:
		return "ReliableWithBuffering"
	}
	return fmt.Sprintf("SendType(%d)", int(t))
}

// maxSize is the largest message for flags.
func maxSize(f channels.Flags) int {
	if f.IsReliable() {
		return MaxReliableSize
	}
	return MaxUnreliableSize
}
