package netpacket

import (
	"encoding/binary"
	"errors"
)

// The reserved p2p channels (the byte layouts are in the package doc).
const (
	// ChannelBase is the first of the p2p channels this package reserves:
	// ChannelBase through ChannelBase+ChannelCount-1 (0xFE00–0xFE0F). The
	// game must not use them on a node that runs a Host or Client.
	ChannelBase = 0xFE00
	// ChannelCount is the number of reserved channels.
	ChannelCount = 16

	channelControl     = ChannelBase     // joins, welcomes, refusals: reliable
	channelReliable    = ChannelBase + 1 // reliable packets
	channelSequenced   = ChannelBase + 2 // unreliable sequenced packets
	channelUnsequenced = ChannelBase + 3 // unreliable unsequenced packets
	firstUnused        = ChannelBase + 4 // the rest are read and dropped
)

// dataChannels are read in this order by PollReceive.
var dataChannels = [...]int{channelReliable, channelSequenced, channelUnsequenced}

// Control message types.
const (
	msgJoin    byte = 0x01
	msgWelcome byte = 0x02
	msgRefuse  byte = 0x03
)

const (
	dataHeaderLen = 2
	welcomeLen    = 5
	// wireVersion is this package's own protocol version, sent in a join.
	wireVersion byte = 1
)

// Decoding errors; they are counted (Stats.Malformed), never returned.
var (
	errShort   = errors.New("netpacket: message shorter than its header")
	errLong    = errors.New("netpacket: message longer than its limit")
	errBadType = errors.New("netpacket: unexpected message type")
	errBadID   = errors.New("netpacket: client id out of range")
)

// appendData appends a data message: the 2-byte client id, then the packet.
func appendData(b []byte, id uint16, payload []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, id)
	return append(b, payload...)
}

// parseData splits a data message. The payload is 1..MaxPacketSize bytes:
// senders never put an empty packet on the wire.
func parseData(b []byte) (id uint16, payload []byte, err error) {
	switch {
	case len(b) <= dataHeaderLen:
		return 0, nil, errShort
	case len(b)-dataHeaderLen > MaxPacketSize:
		return 0, nil, errLong
	}
	return binary.BigEndian.Uint16(b), b[dataHeaderLen:], nil
}

// appendJoin appends a join: type, wire version, the protocol version.
func appendJoin(b []byte, version string) []byte {
	b = append(b, msgJoin, wireVersion)
	return append(b, version...)
}

// parseJoin returns a join's wire version and protocol version.
func parseJoin(b []byte) (wire byte, version string, err error) {
	switch {
	case len(b) < 2:
		return 0, "", errShort
	case b[0] != msgJoin:
		return 0, "", errBadType
	case len(b)-2 > MaxVersionLen:
		return b[1], "", errLong
	}
	return b[1], string(b[2:]), nil
}

// appendWelcome appends a welcome: type, the client's id, the largest id.
func appendWelcome(b []byte, id, maxID uint16) []byte {
	b = append(b, msgWelcome)
	b = binary.BigEndian.AppendUint16(b, id)
	return binary.BigEndian.AppendUint16(b, maxID)
}

// parseWelcome returns a welcome's id and largest id; 1 <= id <= maxID <
// Broadcast.
func parseWelcome(b []byte) (id, maxID uint16, err error) {
	switch {
	case len(b) < welcomeLen:
		return 0, 0, errShort
	case len(b) > welcomeLen:
		return 0, 0, errLong
	case b[0] != msgWelcome:
		return 0, 0, errBadType
	}
	id, maxID = binary.BigEndian.Uint16(b[1:]), binary.BigEndian.Uint16(b[3:])
	if id == HostID || id > maxID || maxID == Broadcast {
		return 0, 0, errBadID
	}
	return id, maxID, nil
}

// appendRefuse appends a refusal: type, reason, the host's protocol
// version when the reason is ReasonVersion.
func appendRefuse(b []byte, r Reason, version string) []byte {
	b = append(b, msgRefuse, byte(r))
	if r == ReasonVersion {
		b = append(b, version...)
	}
	return b
}

// parseRefuse returns a refusal's reason and the host's version.
func parseRefuse(b []byte) (r Reason, version string, err error) {
	switch {
	case len(b) < 2:
		return 0, "", errShort
	case b[0] != msgRefuse:
		return 0, "", errBadType
	case len(b)-2 > MaxVersionLen:
		return 0, "", errLong
	}
	return Reason(b[1]), string(b[2:]), nil
}
