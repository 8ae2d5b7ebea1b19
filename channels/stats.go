package channels

import "time"

// Stats is a snapshot of a Conn's counters and estimates.
type Stats struct {
	// Round-trip time: smoothed (RFC 9002), minimum, latest sample, and the
	// RTT variance. Before the first sample they hold the initial RTT.
	SmoothedRTT, MinRTT, LatestRTT, RTTVariance time.Duration
	// Jitter is the mean deviation between successive RTT samples.
	Jitter time.Duration

	// Datagrams and bytes (as handed to or received from the Link), totals.
	PacketsSent, PacketsReceived uint64
	BytesSent, BytesReceived     uint64
	// The same, per second, over the last whole interval of about a second.
	PacketsSentPerSecond, PacketsReceivedPerSecond float64
	BytesSentPerSecond, BytesReceivedPerSecond     float64

	// Loss: ack-eliciting datagrams declared lost, and that as a percentage
	// of those resolved (acknowledged or lost), over the last interval and
	// over the Conn's life.
	PacketsLost         uint64
	LossPercent         float64
	LossPercentLifetime float64
	Retransmissions     uint64 // reliable fragments sent again
	SpuriousLosses      uint64 // packets declared lost, then acknowledged
	RedundantFrames     uint64 // reliable fragments copied into spare room (Config.NoRedundancy)
	ProbeTimeouts       uint64
	MessagesSent        uint64
	MessagesReceived    uint64

	// Send queue: bytes and messages queued and not yet acknowledged
	// (reliable) or sent (unreliable).
	QueuedBytes, QueuedMessages int
	// Congestion control: window and bytes in flight, pacing rate in bytes
	// per second.
	CongestionWindow, BytesInFlight int
	PacingRate                      float64

	// Receive side: unreliable bytes held for reassembly.
	ReassemblyBytes int

	// Drops and refusals, counted.
	Malformed         uint64 // datagrams that did not parse
	Duplicates        uint64 // datagrams received twice
	DuplicateMessages uint64 // reliable fragments received twice
	StaleSequenced    uint64 // sequenced messages older than one delivered
	FlowControlDrops  uint64 // datagrams past the receive window
	ReassemblyDrops   uint64 // partial unreliable messages dropped
	DeliveryDrops     uint64 // unreliable messages dropped waiting behind a slow Deliver (Config.ReassemblyBytes)
	TooLarge          uint64 // received messages over the configured limits
	QueueFull         uint64 // Sends refused with ErrQueueFull
	UnreliableExpired uint64 // unreliable messages dropped unsent after UnreliableMaxWait
	CreditBlocked     uint64 // times sending waited for the peer's window
	SendErrors        uint64 // Link.SendDatagrams failures
}

// statCounters are the counters behind Stats, guarded by Conn.mu.
type statCounters struct {
	pktsOut, pktsIn, bytesOut, bytesIn uint64
	pktsAcked, pktsLost                uint64
	retransmits, ptos                  uint64
	msgsSent, msgsRecv                 uint64
	malformed, duplicates              uint64
	duplicateMsgs, stale               uint64
	flowControl, reassemblyDrops       uint64
	tooLarge, queueFull, creditBlocked uint64
	spurious, unreliableExpired        uint64
	redundant, deliveryDrops           uint64

	// Per-interval rates: counters at the start of the interval, and the
	// rates computed when the last interval closed.
	start                         time.Time
	p0Out, p0In, b0Out, b0In      uint64
	acked0, lost0                 uint64
	rPktsOut, rPktsIn             float64
	rBytesOut, rBytesIn, rLossPct float64
}

const statInterval = time.Second

func (s *statCounters) init(now time.Time) { s.start = now }

// roll closes the rate interval when it has lasted statInterval.
func (s *statCounters) roll(now time.Time) {
	el := now.Sub(s.start)
	if el < statInterval {
		return
	}
	sec := el.Seconds()
	s.rPktsOut = float64(s.pktsOut-s.p0Out) / sec
	s.rPktsIn = float64(s.pktsIn-s.p0In) / sec
	s.rBytesOut = float64(s.bytesOut-s.b0Out) / sec
	s.rBytesIn = float64(s.bytesIn-s.b0In) / sec
	s.rLossPct = lossPercent(s.pktsAcked-s.acked0, s.pktsLost-s.lost0)
	s.start = now
	s.p0Out, s.p0In, s.b0Out, s.b0In = s.pktsOut, s.pktsIn, s.bytesOut, s.bytesIn
	s.acked0, s.lost0 = s.pktsAcked, s.pktsLost
}

func lossPercent(acked, lost uint64) float64 {
	if acked+lost == 0 {
		return 0
	}
	return 100 * float64(lost) / float64(acked+lost)
}

// Stats returns a snapshot of the Conn's counters and estimates.
func (c *Conn) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.roll(time.Now())
	s := &c.stats
	return Stats{
		SmoothedRTT:              c.rtt.smoothed,
		MinRTT:                   c.rtt.min,
		LatestRTT:                c.rtt.latest,
		RTTVariance:              c.rtt.variance,
		Jitter:                   c.rtt.jitter,
		PacketsSent:              s.pktsOut,
		PacketsReceived:          s.pktsIn,
		BytesSent:                s.bytesOut,
		BytesReceived:            s.bytesIn,
		PacketsSentPerSecond:     s.rPktsOut,
		PacketsReceivedPerSecond: s.rPktsIn,
		BytesSentPerSecond:       s.rBytesOut,
		BytesReceivedPerSecond:   s.rBytesIn,
		PacketsLost:              s.pktsLost,
		LossPercent:              s.rLossPct,
		LossPercentLifetime:      lossPercent(s.pktsAcked, s.pktsLost),
		Retransmissions:          s.retransmits,
		SpuriousLosses:           s.spurious,
		RedundantFrames:          s.redundant,
		ProbeTimeouts:            s.ptos,
		MessagesSent:             s.msgsSent,
		MessagesReceived:         s.msgsRecv,
		QueuedBytes:              c.queuedBytes,
		QueuedMessages:           c.queuedMsgs,
		CongestionWindow:         c.cc.congestionWindow(),
		BytesInFlight:            c.inFlight,
		PacingRate:               c.pacer.rate,
		ReassemblyBytes:          c.partialBytes,
		Malformed:                s.malformed,
		Duplicates:               s.duplicates,
		DuplicateMessages:        s.duplicateMsgs,
		StaleSequenced:           s.stale,
		FlowControlDrops:         s.flowControl,
		ReassemblyDrops:          s.reassemblyDrops,
		DeliveryDrops:            s.deliveryDrops,
		TooLarge:                 s.tooLarge,
		QueueFull:                s.queueFull,
		UnreliableExpired:        s.unreliableExpired,
		CreditBlocked:            s.creditBlocked,
		SendErrors:               c.sendErrors.Load(),
	}
}
