package mpeer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/p2p"
)

// TransferMode is Godot's MultiplayerPeer.TransferMode, with its values.
type TransferMode int

// The transfer modes. See the package documentation for the flags each
// maps to.
const (
	Unreliable        TransferMode = 0 // TRANSFER_MODE_UNRELIABLE: may be lost or reordered
	UnreliableOrdered TransferMode = 1 // TRANSFER_MODE_UNRELIABLE_ORDERED: may be lost, never older after newer
	Reliable          TransferMode = 2 // TRANSFER_MODE_RELIABLE: exactly once, in order
)

func (m TransferMode) valid() bool { return m >= Unreliable && m <= Reliable }

func (m TransferMode) String() string {
	switch m {
	case Unreliable:
		return "Unreliable"
	case UnreliableOrdered:
		return "UnreliableOrdered"
	case Reliable:
		return "Reliable"
	}
	return fmt.Sprintf("TransferMode(%d)", int(m))
}

// Flags returns the netpacket flags a transfer mode sends with. Every mode
// carries FlushHint because Godot flushes the host after each put_packet.
func (m TransferMode) Flags() channels.Flags {
	switch m {
	case Unreliable:
		return channels.Unreliable | channels.Unsequenced | channels.FlushHint
	case UnreliableOrdered:
		return channels.Unreliable | channels.FlushHint
	}
	return channels.Reliable | channels.FlushHint
}

// Reserved node channels. The adapter owns ControlChannel and the data
// channels DataChannelBase..DataChannelBase+767 (through 0xFFFF): one per
// (transfer channel, transfer mode), so each transfer channel works as
// three independent channels, as Godot's channel 0 does. The game must not
// use these node channels for anything else.
const (
	ControlChannel  = 0xFCFF
	DataChannelBase = 0xFD00
	// MaxTransferChannel is the highest transfer channel (Godot's range
	// 0–255).
	MaxTransferChannel = 255

	numModes        = 3
	numDataChannels = (MaxTransferChannel + 1) * numModes
)

// Packet size limits: the node's limits minus the 8-byte header.
const (
	HeaderSize              = 8
	MaxReliablePacketSize   = p2p.MaxReliableSize - HeaderSize
	MaxUnreliablePacketSize = p2p.MaxUnreliableSize - HeaderSize
)

// DataChannel returns the node channel that carries a transfer channel in
// a transfer mode: DataChannelBase + channel*3 + mode.
func DataChannel(channel int, m TransferMode) int {
	return DataChannelBase + channel*numModes + int(m)
}

// splitDataChannel inverts DataChannel for index = node channel −
// DataChannelBase.
func splitDataChannel(index int) (channel int, m TransferMode) {
	return index / numModes, TransferMode(index % numModes)
}

func maxPacketSize(m TransferMode) int {
	if m == Reliable {
		return MaxReliablePacketSize
	}
	return MaxUnreliablePacketSize
}

// appendHeader appends the data header: source and target peer ids,
// int32 little-endian each, as ENetMultiplayerPeer's header.
func appendHeader(b []byte, src, dst int32) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(src))
	return binary.LittleEndian.AppendUint32(b, uint32(dst))
}

// parseHeader splits a data packet; ok is false when it is too short.
func parseHeader(b []byte) (src, dst int32, payload []byte, ok bool) {
	if len(b) < HeaderSize {
		return 0, 0, nil, false
	}
	src = int32(binary.LittleEndian.Uint32(b))
	dst = int32(binary.LittleEndian.Uint32(b[4:]))
	return src, dst, b[HeaderSize:], true
}

// validTarget reports whether dst can be a target at all: -MinInt32 does
// not exist, so that value names no "all but" set.
func validTarget(dst int32) bool { return dst != math.MinInt32 }

// protocolVersion is carried in JOIN, ACCEPT and HELLO; a mismatch refuses
// the connection with ErrVersionMismatch.
const protocolVersion = 1

// msgType is the first byte of a control message.
type msgType byte

const (
	msgJoin   msgType = 0x01 // client → server: version, requested id
	msgAccept msgType = 0x02 // server → client: version; the client is in
	msgReject msgType = 0x03 // server → client: reason
	msgAdd    msgType = 0x04 // server → client: id of another client that is in
	msgDel    msgType = 0x05 // server → client: id of another client that left
	msgBye    msgType = 0x06 // any → any: the sender ends this connection
	msgHello  msgType = 0x07 // mesh ↔ mesh: version, the sender's id
)

// Reject reasons, carried by REJECT.
const (
	reasonInvalidID byte = 1
	reasonIDInUse   byte = 2
	reasonRefused   byte = 3
	reasonFull      byte = 4
	reasonVersion   byte = 5
)

var reasonErrs = map[byte]error{
	reasonInvalidID: ErrInvalidID,
	reasonIDInUse:   ErrIDInUse,
	reasonRefused:   ErrRefused,
	reasonFull:      ErrServerFull,
	reasonVersion:   ErrVersionMismatch,
}

func reasonErr(r byte) error {
	if err, ok := reasonErrs[r]; ok {
		return err
	}
	return ErrRejected
}

// control is a parsed control message; fields a type does not carry are
// zero.
type control struct {
	typ     msgType
	version byte
	id      int32
	reason  byte
}

var errShortControl = errors.New("mpeer: malformed control message")

// controlLen is each type's length; receivers ignore bytes beyond it, so a
// later version may append fields.
var controlLen = map[msgType]int{
	msgJoin: 6, msgAccept: 2, msgReject: 2, msgAdd: 5, msgDel: 5, msgBye: 1, msgHello: 6,
}

func (c control) append(b []byte) []byte {
	b = append(b, byte(c.typ))
	switch c.typ {
	case msgJoin, msgHello:
		b = append(b, c.version)
		b = binary.LittleEndian.AppendUint32(b, uint32(c.id))
	case msgAccept:
		b = append(b, c.version)
	case msgReject:
		b = append(b, c.reason)
	case msgAdd, msgDel:
		b = binary.LittleEndian.AppendUint32(b, uint32(c.id))
	}
	return b
}

func parseControl(b []byte) (control, error) {
	if len(b) == 0 {
		return control{}, errShortControl
	}
	c := control{typ: msgType(b[0])}
	n, known := controlLen[c.typ]
	if !known || len(b) < n {
		return control{}, errShortControl
	}
	switch c.typ {
	case msgJoin, msgHello:
		c.version = b[1]
		c.id = int32(binary.LittleEndian.Uint32(b[2:]))
	case msgAccept:
		c.version = b[1]
	case msgReject:
		c.reason = b[1]
	case msgAdd, msgDel:
		c.id = int32(binary.LittleEndian.Uint32(b[1:]))
	}
	return c, nil
}
