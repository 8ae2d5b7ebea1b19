package channels

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultMaxDatagramSize keeps the UDP payload at or under 1200 bytes
	// once later layers have added their bytes: 32 for the session header
	// and AEAD tag of an encrypted session and 4 for a TURN ChannelData
	// header when the path is relayed.
	DefaultMaxDatagramSize = 1200 - 32 - 4

	DefaultMaxReliableSize   = 1 << 20
	DefaultNagleDelay        = 5 * time.Millisecond
	DefaultUnreliableMaxWait = 200 * time.Millisecond
	DefaultSendQueueBytes    = 4 << 20
	DefaultReceiveWindow     = 4 << 20
	DefaultReassemblyBytes   = 256 << 10
	DefaultMaxAckDelay       = 5 * time.Millisecond
	DefaultKeepalive         = time.Second
	DefaultIdleTimeout       = 10 * time.Second
	DefaultInitialRTT        = 333 * time.Millisecond // RFC 9002 kInitialRtt

	// MaxUnreliableFragmented is the largest unreliable message a Conn can be
	// configured to fragment.
	MaxUnreliableFragmented = 64 << 10

	minDatagramSize = 256
	maxDatagramSize = 65000
)

// Config configures a Conn. The zero value of every field selects the
// documented default, so Config{} works.
type Config struct {
	// MaxDatagramSize is the largest datagram payload the Conn hands to its
	// Link, not counting Headroom and Tailroom. Zero means
	// DefaultMaxDatagramSize (1164). Both ends must use the same value or
	// the larger one's datagrams may not fit the path.
	MaxDatagramSize int

	// Headroom and Tailroom are bytes reserved before and after every
	// datagram handed to the Link, so a wrapping layer can add a header and
	// an AEAD tag in place. Zero means none.
	Headroom, Tailroom int

	// MaxReliableSize is the largest reliable message. Zero means 1 MiB.
	MaxReliableSize int

	// MaxUnreliableSize is the largest unreliable message. Zero means what
	// fits in one datagram; larger values, up to MaxUnreliableFragmented
	// (64 KiB), fragment unreliable messages, and such a message is dropped
	// whole when any fragment is lost.
	MaxUnreliableSize int

	// NagleDelay is how long data sent without FlushHint may wait for more
	// data to share its datagram. Zero means 5 ms; a negative value sends
	// every message at once.
	NagleDelay time.Duration

	// UnreliableMaxWait is how long an unreliable message may wait in the
	// send queue (for the congestion window) before it is dropped unsent:
	// late game state is worse than none. Zero means 200 ms.
	UnreliableMaxWait time.Duration

	// SendQueueBytes bounds the bytes of messages queued and not yet
	// acknowledged (reliable) or sent (unreliable). Zero means 4 MiB. It
	// must be at least MaxReliableSize. Past it, Send refuses with
	// ErrQueueFull a message on a channel that holds its fair share of it
	// already (SendQueueBytes over the channels holding queued data), and
	// still takes one on a channel below its share, up to twice
	// SendQueueBytes in all: a channel that fills the queue (a bulk
	// transfer on a lossy path) never refuses another channel's sends.
	SendQueueBytes int

	// ChannelQueueBytes bounds what one channel may hold of the send
	// queue: Send refuses past it with ErrQueueFull whatever the others
	// hold. Zero means SendQueueBytes. It must be at least MaxReliableSize
	// and at most SendQueueBytes.
	ChannelQueueBytes int

	// CongestionControl picks the congestion controller. The zero value is
	// BBR.
	CongestionControl CongestionControl

	// ChannelPriority, if set, gives each channel its Priority when it is
	// first used (Conn.SetChannelPriority changes it later); a weight out of
	// range is clamped to [1, MaxWeight]. Nil gives every channel the
	// default, so all share the link equally.
	ChannelPriority func(channel uint16) Priority

	// ReceiveWindow bounds the reliable data, in bytes, the peer may have
	// outstanding at this end: out of order or partly reassembled. The peer
	// is told the limit and a peer that exceeds it has its datagrams
	// dropped. Zero means 4 MiB. It must exceed MaxReliableSize.
	ReceiveWindow int

	// ReleaseOnRead makes the receive window follow what the application
	// has consumed rather than what was delivered: a reliable message keeps
	// its share of the window after Deliver until Conn.Release is called
	// with its length. A receiver that queues messages for a slow reader
	// then pushes back on the sender instead of buffering without bound.
	ReleaseOnRead bool

	// ReassemblyBytes bounds the bytes held for partly received fragmented
	// unreliable messages; the oldest is dropped past it. It also bounds
	// the unreliable messages waiting for a Deliver call under way (see
	// Deliver). Zero means 256 KiB.
	ReassemblyBytes int

	// NoRedundancy turns off redundant copies: by default, room left in a
	// datagram that carries new data is filled with one more copy of small
	// (up to 256 bytes) reliable fragments sent within the last RTT and not
	// yet acknowledged, so one lost datagram costs a send interval instead
	// of a round trip. It adds bytes, never datagrams.
	NoRedundancy bool

	// MaxAckDelay bounds how long an acknowledgement may be delayed. Zero
	// means 5 ms.
	MaxAckDelay time.Duration

	// KeepaliveInterval is how long the Conn may go without sending
	// something the peer must acknowledge before it sends a ping. It keeps
	// RTT estimates fresh and NAT mappings open. Zero means 1 s.
	KeepaliveInterval time.Duration

	// IdleTimeout closes the Conn with ErrTimeout when nothing has been
	// received for this long. Zero means 10 s.
	IdleTimeout time.Duration

	// InitialRTT is the RTT assumed before the first sample, e.g. one
	// measured by a handshake. Zero means 333 ms (RFC 9002).
	InitialRTT time.Duration

	// Deliver receives each message when it becomes deliverable: reliable
	// messages in order per channel, sequenced ones only if newer than any
	// delivered on their channel. Calls never overlap and come in the
	// order the messages became deliverable, each message exactly once.
	// It runs on a goroutine that called HandleDatagram (with several
	// readers, not always the one whose datagram completed the message),
	// with no lock of the Conn held: it may call any Conn method, and may
	// take a lock that is held elsewhere around calls to the Conn. While it
	// runs, later messages wait in a queue; unreliable ones past
	// ReassemblyBytes of them are dropped (Stats.DeliveryDrops), and
	// reliable ones hold their receive window until delivered. Messages
	// queued before the Conn ended are still delivered, possibly after
	// Close has returned. The message's Data belongs to the callee. Nil
	// means messages are counted and dropped.
	Deliver func(Message)

	// Logger receives debug logs. Nil means silent. Its handler may be
	// called with the Conn's locks held, so it must not call the Conn.
	Logger *slog.Logger

	// Timers runs the Conn's timer work together with other Conns' on one
	// goroutine (see Timers). Nil means the Conn runs a goroutine of its
	// own. The Timers must outlive the Conn.
	Timers *Timers
}

// withDefaults returns cfg with zero fields replaced by defaults, or an
// error naming the first invalid field.
func (cfg Config) withDefaults() (Config, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.MaxDatagramSize, DefaultMaxDatagramSize)
	def(&cfg.MaxReliableSize, DefaultMaxReliableSize)
	def(&cfg.SendQueueBytes, DefaultSendQueueBytes)
	def(&cfg.ChannelQueueBytes, cfg.SendQueueBytes)
	def(&cfg.ReceiveWindow, DefaultReceiveWindow)
	def(&cfg.ReassemblyBytes, DefaultReassemblyBytes)
	defDur(&cfg.NagleDelay, DefaultNagleDelay)
	defDur(&cfg.UnreliableMaxWait, DefaultUnreliableMaxWait)
	defDur(&cfg.MaxAckDelay, DefaultMaxAckDelay)
	defDur(&cfg.KeepaliveInterval, DefaultKeepalive)
	defDur(&cfg.IdleTimeout, DefaultIdleTimeout)
	defDur(&cfg.InitialRTT, DefaultInitialRTT)
	if cfg.NagleDelay < 0 {
		cfg.NagleDelay = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}

	switch {
	case cfg.MaxDatagramSize < minDatagramSize || cfg.MaxDatagramSize > maxDatagramSize:
		return cfg, fmt.Errorf("channels: MaxDatagramSize %d outside [%d, %d]", cfg.MaxDatagramSize, minDatagramSize, maxDatagramSize)
	case cfg.Headroom < 0 || cfg.Tailroom < 0:
		return cfg, errors.New("channels: negative Headroom or Tailroom")
	case cfg.MaxReliableSize < 0 || cfg.MaxReliableSize > 1<<30:
		return cfg, fmt.Errorf("channels: MaxReliableSize %d outside [0, 1 GiB]", cfg.MaxReliableSize)
	case cfg.MaxUnreliableSize < 0 || cfg.MaxUnreliableSize > MaxUnreliableFragmented:
		return cfg, fmt.Errorf("channels: MaxUnreliableSize %d outside [0, %d]", cfg.MaxUnreliableSize, MaxUnreliableFragmented)
	case cfg.SendQueueBytes < cfg.MaxReliableSize:
		return cfg, fmt.Errorf("channels: SendQueueBytes %d below MaxReliableSize %d", cfg.SendQueueBytes, cfg.MaxReliableSize)
	case cfg.ChannelQueueBytes < cfg.MaxReliableSize || cfg.ChannelQueueBytes > cfg.SendQueueBytes:
		return cfg, fmt.Errorf("channels: ChannelQueueBytes %d outside [MaxReliableSize %d, SendQueueBytes %d]", cfg.ChannelQueueBytes, cfg.MaxReliableSize, cfg.SendQueueBytes)
	case cfg.ReceiveWindow < cfg.MaxReliableSize+msgCostOverhead:
		return cfg, fmt.Errorf("channels: ReceiveWindow %d must exceed MaxReliableSize %d", cfg.ReceiveWindow, cfg.MaxReliableSize)
	case cfg.ReassemblyBytes < cfg.MaxUnreliableSize:
		return cfg, fmt.Errorf("channels: ReassemblyBytes %d below MaxUnreliableSize %d", cfg.ReassemblyBytes, cfg.MaxUnreliableSize)
	case cfg.MaxAckDelay < 0 || cfg.UnreliableMaxWait < 0 || cfg.KeepaliveInterval < 0 || cfg.IdleTimeout < 0 || cfg.InitialRTT < 0:
		return cfg, errors.New("channels: negative duration in Config")
	case cfg.CongestionControl > CUBIC:
		return cfg, fmt.Errorf("channels: unknown CongestionControl %d", cfg.CongestionControl)
	case cfg.IdleTimeout <= cfg.KeepaliveInterval:
		return cfg, fmt.Errorf("channels: IdleTimeout %v must exceed KeepaliveInterval %v", cfg.IdleTimeout, cfg.KeepaliveInterval)
	}
	return cfg, nil
}
