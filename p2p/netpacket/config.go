package netpacket

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/gamewire/gamewire/p2p"
)

// Config configures a Host or a Client. The zero value of every field
// selects the documented default; fields marked host only are ignored by a
// Client.
type Config struct {
	// MaxClients (host only) bounds the clients: their ids are
	// 1..MaxClients. Zero means DefaultMaxClients (31: 32 players with the
	// host, as RetroArch). At most 65534, as 0xFFFF is Broadcast.
	MaxClients int

	// JoinTimeout (host only) is how long a peer whose session the host
	// accepted may take to send its join; then its session is closed.
	// Zero means 10 s.
	JoinTimeout time.Duration

	// OnRefuse (host only), if set, is called by Frame when the host
	// refuses a player, with the reason: the host's side of "both sides
	// learn why". It runs on Frame's goroutine.
	OnRefuse func(peer p2p.PeerID, err *RefusedError)

	// Logger receives joins, leaves and refusals (Info) and dropped
	// messages (Debug). Nil means silent.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultMaxClients  = 31
	DefaultJoinTimeout = 10 * time.Second
	maxClientsLimit    = int(Broadcast) - 1
)

// Internal bounds.
const (
	// maxDrain bounds the messages one read of a channel takes, so
	// PollReceive and Frame return even while packets pour in.
	maxDrain = 1024
	// maxWaiting bounds the peers the host holds without an id (waiting
	// for their join, or being refused); more are refused at once.
	maxWaiting = 64
	// refuseGrace is how long the host keeps a refused peer's session
	// open so the refusal arrives before the close; the client closes it
	// itself on reading the refusal.
	refuseGrace = 2 * time.Second
	// sweepEvery is how often the host checks its clients' sessions,
	// in case the node's event queue overflowed and dropped a close.
	sweepEvery = time.Second
)

func (cfg Config) withDefaults() (Config, error) {
	if cfg.MaxClients == 0 {
		cfg.MaxClients = DefaultMaxClients
	}
	if cfg.JoinTimeout == 0 {
		cfg.JoinTimeout = DefaultJoinTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.MaxClients < 0 || cfg.MaxClients > maxClientsLimit:
		return cfg, fmt.Errorf("%w: MaxClients %d outside 1..%d", ErrBadConfig, cfg.MaxClients, maxClientsLimit)
	case cfg.JoinTimeout < 0:
		return cfg, fmt.Errorf("%w: negative JoinTimeout", ErrBadConfig)
	}
	return cfg, nil
}
