package p2p

import "sync/atomic"

// NodeStats counts what a Node received and dropped, beyond what sessions
// report.
type NodeStats struct {
	PacketsIn         uint64 // datagrams read from the socket
	Dropped           uint64 // datagrams of unknown or unserved types, empty or truncated
	UnknownIndex      uint64 // data or handshake packets for no session
	AuthFailed        uint64 // data packets that failed authentication
	Replayed          uint64 // data packets seen before
	BadMAC            uint64 // handshake initiations with a bad mac1
	CookiesSent       uint64 // cookie replies sent under load
	RateLimited       uint64 // initiations over a source address's rate under load
	HandshakeDropped  uint64 // initiations dropped: the worker's queue was full
	Handshakes        uint64 // initiations that reached the expensive (Diffie-Hellman) step
	HandshakeFailed   uint64 // handshakes that failed (tampering, wrong key, bad payload)
	ReplayedInit      uint64 // initiations not newer than one already answered
	HeldDropped       uint64 // unreliable packets from unaccepted peers dropped: over the bound
	UnreliableDropped uint64 // unreliable packets dropped: receive queues full
	EventsDropped     uint64 // events dropped: queue full
	WriteErrors       uint64 // socket writes that failed
	Repunches         uint64 // sessions whose path broke and that punched again through the server
	Heals             uint64 // punches that stalled (the conntrack clash) and punched again from a fresh port
	RelayAllocations  uint64 // TURN allocations made
	RelayFailures     uint64 // TURN allocations that failed
	RelayDropped      uint64 // datagrams for the relay dropped: its send queue was full
	PathChanges       uint64 // established sessions that moved to another path (PathChanged events)
	PathsHeld         uint64 // moves to a better path refused: the peer's route moved 6 times in the last minute
	PathEventsDropped uint64 // offers of a path dropped: the path layer's queue was full
	TCPLinks          uint64 // direct TCP links proven both ways (probe and ack)
	TCPRefused        uint64 // TCP connections closed before proving a peer: unknown peer, bad frame or probe, silence, over the bound
	TCPDropped        uint64 // datagrams for a TCP link dropped: its send queue was full

	// LAN discovery (Config.LANDiscovery; doc.go, "LAN discovery").
	LANSent    uint64 // beacons sent (one per destination and interface a round)
	LANHeard   uint64 // beacons taken in from peers of this AppID (copies of one beacon count once)
	LANDropped uint64 // datagrams on the discovery port dropped: malformed, another AppID, a bad MAC, a timestamp over 2 minutes off, replayed
	LANRefused uint64 // valid beacons refused: over a source IP's or the global rate, the newcomer rate, or the peer table (or a source IP's share of it) full
	LANErrors  uint64 // discovery's socket failures: the port not bound, a group not joined, a beacon not sent (the debug log says why)

	// Consent before cost (see Config.MaxPendingSessions, MaxSessionsPerIP
	// and AllowIntroduction).
	PendingRefused       uint64 // initiations left unanswered: their IP's share of pending sessions is full
	PendingEvicted       uint64 // pending sessions ended to make room for a newcomer from a less busy IP
	SessionsPerIPRefused uint64 // initiations refused: their IP holds MaxSessionsPerIP peer-opened sessions
	UnconfirmedDropped   uint64 // datagrams not sent: the peer had not proven its address yet
	UnconfirmedExpired   uint64 // unaccepted sessions forgotten: the peer never proved its address
	AmplificationDropped uint64 // answers not sent: over 3x the bytes the address sent us
	Asks                 uint64 // introduction requests the server passed on from peers
	IntroductionsRefused uint64 // of those, refused by AllowIntroduction or MaxSessionsPerIP
	IntroductionsIgnored uint64 // introductions (PEER) for peers this node had not consented to
}

type nodeCounters struct {
	packetsIn, dropped, unknownIndex, authFailed, replayed     atomic.Uint64
	badMAC, cookiesSent, rateLimited, handshakeDropped         atomic.Uint64
	handshakeFailed, replayedInit, heldDropped, writeErrors    atomic.Uint64
	handshakes, repunches, heals                               atomic.Uint64
	relayAllocations, relayFailures, relayDropped, pathChanges atomic.Uint64
	tcpLinks, tcpRefused, tcpDropped                           atomic.Uint64
	lanSent, lanHeard, lanDropped, lanRefused, lanErrors       atomic.Uint64
	pendingRefused, pendingEvicted, sessionsPerIPRefused       atomic.Uint64
	unconfirmedDropped, unconfirmedExpired                     atomic.Uint64
	amplificationDropped, asks, introRefused, introIgnored     atomic.Uint64
}

// Stats returns the node's counters.
func (n *Node) Stats() NodeStats {
	c := &n.stats
	ps := n.paths.Stats()
	return NodeStats{
		PacketsIn:         c.packetsIn.Load(),
		Dropped:           c.dropped.Load(),
		UnknownIndex:      c.unknownIndex.Load(),
		AuthFailed:        c.authFailed.Load(),
		Replayed:          c.replayed.Load(),
		BadMAC:            c.badMAC.Load(),
		CookiesSent:       c.cookiesSent.Load(),
		RateLimited:       c.rateLimited.Load(),
		HandshakeDropped:  c.handshakeDropped.Load(),
		Handshakes:        c.handshakes.Load(),
		HandshakeFailed:   c.handshakeFailed.Load(),
		ReplayedInit:      c.replayedInit.Load(),
		HeldDropped:       c.heldDropped.Load(),
		UnreliableDropped: n.recvq.droppedCount(),
		EventsDropped:     n.events.dropped.Load(),
		WriteErrors:       c.writeErrors.Load(),
		Repunches:         c.repunches.Load(),
		Heals:             c.heals.Load(),
		RelayAllocations:  c.relayAllocations.Load(),
		RelayFailures:     c.relayFailures.Load(),
		RelayDropped:      c.relayDropped.Load(),
		PathChanges:       c.pathChanges.Load(),
		PathsHeld:         ps.Suppressed,
		PathEventsDropped: ps.Dropped,
		TCPLinks:          c.tcpLinks.Load(),
		TCPRefused:        c.tcpRefused.Load(),
		TCPDropped:        c.tcpDropped.Load(),
		LANSent:           c.lanSent.Load(),
		LANHeard:          c.lanHeard.Load(),
		LANDropped:        c.lanDropped.Load(),
		LANRefused:        c.lanRefused.Load(),
		LANErrors:         c.lanErrors.Load(),

		PendingRefused:       c.pendingRefused.Load(),
		PendingEvicted:       c.pendingEvicted.Load(),
		SessionsPerIPRefused: c.sessionsPerIPRefused.Load(),
		UnconfirmedDropped:   c.unconfirmedDropped.Load(),
		UnconfirmedExpired:   c.unconfirmedExpired.Load(),
		AmplificationDropped: c.amplificationDropped.Load(),
		Asks:                 c.asks.Load(),
		IntroductionsRefused: c.introRefused.Load(),
		IntroductionsIgnored: c.introIgnored.Load(),
	}
}
