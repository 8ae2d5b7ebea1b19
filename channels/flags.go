package channels

import "strings"

// Flags select how a message is delivered. The values are libretro
// netpacket's RETRO_NETPACKET_* flags, so a netpacket core's flags can be
// passed through unchanged.
//
//	Unreliable              sequenced: may be lost, never delivered after a newer one on its channel
//	Unreliable|Unsequenced  may be lost or reordered, never duplicated
//	Reliable                delivered exactly once, in order per channel
//	Reliable|Unsequenced    invalid (ErrInvalidFlags)
//
// FlushHint may be added to any of them: the message, and everything queued
// before it, is sent now instead of waiting for Config.NagleDelay.
type Flags uint8

const (
	// Unreliable is the zero value: unreliable and sequenced.
	Unreliable Flags = 0
	// Reliable asks for delivery exactly once, in order per channel.
	Reliable Flags = 1
	// Unsequenced drops the ordering of unreliable messages.
	Unsequenced Flags = 2
	// FlushHint sends the message and everything queued before it now.
	FlushHint Flags = 4

	flagsMask = Reliable | Unsequenced | FlushHint
)

// Validate reports whether f is a valid combination.
func (f Flags) Validate() error {
	if f&^flagsMask != 0 || f&(Reliable|Unsequenced) == Reliable|Unsequenced {
		return ErrInvalidFlags
	}
	return nil
}

// IsReliable reports whether f asks for reliable delivery.
func (f Flags) IsReliable() bool { return f&Reliable != 0 }

// String returns the flags joined by "|", e.g. "Reliable|FlushHint".
func (f Flags) String() string {
	var parts []string
	if f&Reliable != 0 {
		parts = append(parts, "Reliable")
	} else {
		parts = append(parts, "Unreliable")
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

// kind is the delivery class carried on the wire: the low two bits of Flags.
type kind uint8

const (
	kindSequenced   kind = kind(Unreliable)
	kindReliable    kind = kind(Reliable)
	kindUnsequenced kind = kind(Unsequenced)
)

func (f Flags) kind() kind { return kind(f & (Reliable | Unsequenced)) }
