package p2p

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// SessionError is Steam's EP2PSessionError: why a session failed.
type SessionError int

// Session errors, with Steam's values.
const (
	SessionErrorNone                   SessionError = 0
	SessionErrorNotRunningApp          SessionError = 1 // remote runs another AppID or protocol version
	SessionErrorNoRightsToApp          SessionError = 2 // remote refused the session
	SessionErrorDestinationNotLoggedOn SessionError = 3 // peer not registered at the rendezvous
	SessionErrorTimeout                SessionError = 4 // no path within ConnectTimeout, or the peer went silent
)

func (e SessionError) String() string {
	switch e {
	case SessionErrorNone:
		return "None"
	case SessionErrorNotRunningApp:
		return "NotRunningApp"
	case SessionErrorNoRightsToApp:
		return "NoRightsToApp"
	case SessionErrorDestinationNotLoggedOn:
		return "DestinationNotLoggedOn"
	case SessionErrorTimeout:
		return "Timeout"
	}
	return fmt.Sprintf("SessionError(%d)", int(e))
}

// Config configures a Node. The zero value of every field selects the
// documented default, so New(Config{}) works.
type Config struct {
	// Identity is the node's key. Nil means a new random identity, lost
	// when the process exits; use LoadOrCreateIdentity to keep one.
	Identity *Identity

	// AppID names the game. Sessions between different AppIDs fail with
	// SessionErrorNotRunningApp on the initiator. "" is an AppID like any
	// other.
	AppID string

	// ListenAddr is the UDP address to listen on. "" means ":0" (every
	// interface, a free port).
	ListenAddr string

	// PacketConn, if set, is used instead of opening a socket; ListenAddr
	// is then ignored. The Node does not close it: Close stops using it.
	PacketConn net.PacketConn

	// DisableRelay forbids relaying sessions through a TURN server. Relay
	// is not implemented yet, so today every session is direct and this
	// setting only records the choice.
	DisableRelay bool

	// ConnectTimeout bounds how long a session may take to connect: to
	// find a path, complete the handshake and be accepted by the peer. Zero
	// means 20 s, as in Steam.
	ConnectTimeout time.Duration

	// NagleDelay is how long SendReliableWithBuffering (and Send without
	// channels.FlushHint) may hold data to share a datagram. Zero means
	// 5 ms; a negative value sends at once.
	NagleDelay time.Duration

	// OnSessionRequest and OnSessionConnectFail (and OnSessionClosed) are
	// called by RunCallbacks, on its caller's goroutine. Nil means the
	// event is dropped when RunCallbacks takes it.
	OnSessionRequest     func(PeerID)
	OnSessionConnectFail func(PeerID, SessionError)
	OnSessionClosed      func(PeerID)

	// EventQueueSize bounds the events waiting for RunCallbacks or Events.
	// Past it events are dropped and counted. Zero means 1024.
	EventQueueSize int

	// MaxPendingSessions bounds sessions that peers opened and this node has
	// not accepted; more are refused until some are accepted, closed or
	// time out. Zero means 64.
	MaxPendingSessions int

	// Logger receives logs. Nil means silent.
	Logger *slog.Logger
}

// Defaults applied by New.
const (
	DefaultConnectTimeout     = 20 * time.Second
	DefaultEventQueueSize     = 1024
	DefaultMaxPendingSessions = 64
)

func (cfg Config) withDefaults() (Config, error) {
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.EventQueueSize == 0 {
		cfg.EventQueueSize = DefaultEventQueueSize
	}
	if cfg.MaxPendingSessions == 0 {
		cfg.MaxPendingSessions = DefaultMaxPendingSessions
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = ":0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.ConnectTimeout < 0:
		return cfg, errors.New("p2p: negative ConnectTimeout")
	case cfg.EventQueueSize < 0 || cfg.MaxPendingSessions < 0:
		return cfg, errors.New("p2p: negative EventQueueSize or MaxPendingSessions")
	}
	return cfg, nil
}
