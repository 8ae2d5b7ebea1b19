package p2p

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"time"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/nat"
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
	// NAT traversal primes the NAT with low-TTL datagrams only through a
	// PacketConn with WriteMsgUDPAddrPort, as *net.UDPConn has (Linux);
	// a wrapper without it still punches, but not through NATs that
	// accept inbound datagrams to their own address (docs/ARCHITECTURE.md,
	// "The conntrack clash"). The same holds for ListenPacket's sockets.
	PacketConn net.PacketConn

	// Rendezvous is the rendezvous server, "host:port" or
	// "peerid@host:port" (the peerid pins the server's key; without it the
	// key of the server's first answer is trusted). With it, sending to a
	// PeerID whose address is unknown registers, asks the server for an
	// introduction and punches through both NATs. "" means no server:
	// sessions need AddPeerAddr. A dual-stack server is named by a host
	// with A and AAAA records or by both addresses, comma-separated
	// ("peerid@203.0.113.7:3478,[2001:db8::7]:3478"): the node registers
	// over IPv4 (over IPv6 when it has no IPv4 address) and learns its
	// address and NAT in the other family by STUN, advertising that
	// address to peers too (NATType reports both).
	Rendezvous string

	// STUNServers are extra STUN servers ("host:port", any RFC 5389 or
	// RFC 3489 server) used to learn the NAT's mapping behaviour when the
	// rendezvous server has no second address, or its second address does
	// not answer. They are all asked at once, beside the rendezvous server,
	// and the first to answer is compared with it: a dead one costs
	// nothing while another answers.
	STUNServers []string

	// ListenPacket opens sockets: the node's own when PacketConn is nil,
	// and the extra ones NAT traversal may open against a NAT that maps per
	// destination. Nil means net.ListenPacket. (A test lab passes one that
	// opens sockets in a network namespace.)
	ListenPacket func(network, address string) (net.PacketConn, error)

	// Interfaces lists the node's interface addresses for its host
	// candidates, when its socket is not bound to one address. Nil means
	// the system's.
	Interfaces func() ([]netip.Prefix, error)

	// DisableRelay forbids relaying sessions through a TURN server, as
	// AllowP2PPacketRelay(false) does. Either side forbidding relay forbids
	// it for the session: a session with no direct path then fails with
	// SessionErrorTimeout at ConnectTimeout, and no TURN allocation is made.
	DisableRelay bool

	// RelayAfter is the budget direct paths get before a session with no
	// direct path goes through the relay (when both sides allow it); direct
	// attempts go on in the background and the session moves to a direct
	// path when one works. Pairs that cannot go direct (both NATs map per
	// destination, or a side whose UDP is blocked) use the relay at once.
	// At half the budget the relay is made ready (allocation, relayed
	// addresses exchanged, permissions), so using it costs nothing more.
	// Zero means 1 s: endpoint-independent pairs connect well inside it at
	// internet round trips, and the birthday approach against a symmetric
	// NAT has a median of 0.8 s in the lab, so the relay is left alone for
	// most pairs while a relayed first message still lands within 2 s. A
	// negative value uses the relay at once.
	RelayAfter time.Duration

	// Dial opens TCP connections: to TURN over TCP when UDP is blocked,
	// and to the rendezvous server then when DialTCP cannot (with
	// DisableDirectTCP, always); and the UDP and TCP connections port
	// mapping talks to the router over. Nil means a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// DisablePortMapping stops the node asking its router for a port
	// mapping. Without it, a node with a Rendezvous server asks its IPv4
	// default gateway to forward its socket's port (PCP, NAT-PMP or UPnP
	// IGD: package nat/portmap), renews the mapping while it runs, deletes
	// it on Close, and advertises it to peers as a candidate: behind a NAT
	// that maps per destination (where punching toward another such NAT
	// fails) the node then has one address every peer can reach. A
	// mapping is asked for in the background (registration does not wait
	// for it) and at most every minute, backing off to 30 minutes, while
	// the router grants none. Nodes bound to loopback, whose server is on
	// loopback, or whose PacketConn's local address is not a *net.UDPAddr
	// do not ask.
	DisablePortMapping bool

	// Gateway returns the router port mapping asks. Nil means the IPv4
	// default route's next hop (portmap.DefaultGateway: the routing table
	// of the process's network namespace). (A test lab passes one that
	// names a lab router.)
	Gateway func() (netip.Addr, error)

	// DisableDirectTCP forbids direct TCP paths: the node neither listens
	// on TCP nor dials peers over it. Without it, when a peer's network or
	// ours drops UDP, the node listens on TCP (at its UDP port number when
	// it is free) and both sides dial each other from that port (TCP
	// simultaneous open through both NATs); a session that gets a TCP link
	// uses it instead of the relay.
	DisableDirectTCP bool

	// ListenTCP and DialTCP open the sockets of direct TCP paths: the
	// listener, and connections dialed from its address (laddr). Both
	// must set SO_REUSEADDR and SO_REUSEPORT, or the dials cannot share
	// the listener's port. Nil means nat.ListenTCP and nat.DialTCP
	// (go-reuseport's options on the standard library's sockets).
	ListenTCP func(network, address string) (net.Listener, error)
	DialTCP   func(ctx context.Context, network, laddr, raddr string) (net.Conn, error)

	// RelayTLS, when set, reaches TURN servers listed for TLS with this
	// configuration (its ServerName must name the server).
	RelayTLS *tls.Config

	// ConnectTimeout bounds how long a session may take to connect: to
	// find a path, complete the handshake and be accepted by the peer. Zero
	// means 20 s, as in Steam.
	ConnectTimeout time.Duration

	// NagleDelay is how long SendReliableWithBuffering (and Send without
	// channels.FlushHint) may hold data to share a datagram. Zero means
	// 5 ms; a negative value sends at once.
	NagleDelay time.Duration

	// CongestionControl picks every session's congestion controller: the
	// zero value, channels.BBR, keeps most of a lossy path's rate (with a
	// fifth of the packets lost at random, two thirds of a bottleneck's
	// rate in simulation); channels.CUBIC backs off on every loss, as TCP
	// does, and keeps a few percent of it there.
	CongestionControl channels.CongestionControl

	// ChannelPriority, if set, gives each channel's reliable messages
	// their place in every session's send scheduler, as Steam's lanes do:
	// channels of a lower Level send before any of a higher one, and
	// channels of one Level share the path by Weight, in bytes (0 means 1,
	// at most channels.MaxWeight; a weight out of range is clamped). Nil
	// gives every channel an equal share, so a bulk transfer on one channel
	// never holds up another. It is called once per channel a session
	// sends on, from the sending goroutine with the session's Conn
	// locked, so it must return at once and not call the Node. Unreliable
	// messages go first whatever their channel: they are worth sending
	// only while fresh.
	ChannelPriority func(channel int) ChannelPriority

	// OnSessionRequest and OnSessionConnectFail (and OnSessionClosed) are
	// called by RunCallbacks, on its caller's goroutine. Nil means the
	// event is dropped when RunCallbacks takes it.
	OnSessionRequest     func(PeerID)
	OnSessionConnectFail func(PeerID, SessionError)
	OnSessionClosed      func(PeerID)
	// OnPathChanged is called by RunCallbacks for PathChanged, and
	// OnRegistrationChanged for RegistrationChanged.
	OnPathChanged         func(PathChanged)
	OnRegistrationChanged func(RegistrationChanged)

	// EventQueueSize bounds the events waiting for RunCallbacks or Events.
	// Past it events are dropped and counted. Zero means 1024.
	EventQueueSize int

	// MaxPendingSessions bounds the sessions that peers opened and this
	// node has not accepted, in all; MaxPendingPerIP bounds them per source
	// IP (an IPv4 address or an IPv6 /64). A newcomer past the total evicts
	// the oldest pending session of the IP that holds the most, so one
	// source cannot lock others out; past its IP's share its initiation
	// gets no answer (it retries, and gets in when room is made). While an
	// IP holds a pending session, or pending sessions fill a quarter of the
	// total, a new initiation must first prove its source address (a
	// cookie round trip). Zero means 256 and 8.
	MaxPendingSessions int
	MaxPendingPerIP    int

	// MaxSessionsPerIP bounds the live sessions peers from one source IP
	// opened, accepted or not; past it their initiations are refused
	// (SessionErrorNoRightsToApp). Sessions this node opened (it sent
	// first) are not counted. Zero means 64; a negative value means no
	// limit (a test hub, say, whose peers share one address).
	MaxSessionsPerIP int

	// AllowIntroduction, when set, is asked whenever the rendezvous server
	// says a peer this node has no session with wants an introduction: a
	// false answer refuses it at no cost (no SessionRequest, no packet to
	// the peer; its attempt fails with SessionErrorTimeout, as an
	// unanswered session does in Steam). Nil allows everyone: the request
	// is raised as SessionRequest and AcceptP2PSessionWithUser (or a send to
	// the peer) starts the traversal. It runs on the node's reader
	// goroutine and must return quickly; a lobby's member list is the
	// intended use.
	AllowIntroduction func(PeerID) bool

	// LANDiscovery turns on discovery of this AppID's nodes on the local
	// network, with no server. The node sends a beacon (its PeerID, the
	// AppID's hash, a timestamp and a MAC: 74 bytes) at once and then
	// every 1.5 to 2.5 s from its own socket to 239.255.71.87 and
	// 255.255.255.255 and, from an IPv6 socket, to ff12::4757 on each
	// interface, all on UDP port 18263, where it listens too (with
	// SO_REUSEPORT, so every node on a machine can). It never answers a
	// beacon. The nodes it hears are listed by LANPeers (for 10 s after
	// their latest beacon) and raise LANPeerFound; sending to one opens a
	// session straight to the address its beacons came from, so LAN play
	// needs no rendezvous server. A beacon only claims its PeerID: the
	// session's handshake proves it (LANPeer says more). False, the zero
	// value, means off. Discovery never makes New fail: a port, group or
	// interface it cannot use is logged at debug level and counted
	// (NodeStats.LANErrors), and the node runs without it. (A dual-stack
	// Config.PacketConn needs SO_BROADCAST for the broadcast beacon; Go
	// sets it on IPv4 sockets, and the node on a dual-stack one it opens.)
	LANDiscovery bool

	// OnLANPeerFound is called by RunCallbacks for LANPeerFound.
	OnLANPeerFound func(LANPeerFound)

	// Logger receives logs. Nil means silent.
	Logger *slog.Logger

	// lan replaces LAN discovery's network (its port, listening sockets
	// and interfaces) in tests: an in-memory network, a lab's namespace.
	// Nil means the system's (lan.go).
	lan *lanNet
}

// ChannelPriority places a channel's reliable messages in a session's
// send scheduler (Config.ChannelPriority). The zero value is the default:
// level 0, weight 1.
type ChannelPriority struct {
	Level  int // lower sends first
	Weight int // the channel's share within its level; 0 means 1
}

// Defaults applied by New.
const (
	DefaultConnectTimeout     = 20 * time.Second
	DefaultEventQueueSize     = 1024
	DefaultMaxPendingSessions = 256
	DefaultMaxPendingPerIP    = 8
	DefaultMaxSessionsPerIP   = 64
	DefaultRelayAfter         = time.Second
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
	if cfg.MaxPendingPerIP == 0 {
		cfg.MaxPendingPerIP = DefaultMaxPendingPerIP
	}
	switch {
	case cfg.MaxSessionsPerIP == 0:
		cfg.MaxSessionsPerIP = DefaultMaxSessionsPerIP
	case cfg.MaxSessionsPerIP < 0:
		cfg.MaxSessionsPerIP = math.MaxInt
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = ":0"
	}
	if cfg.ListenPacket == nil {
		cfg.ListenPacket = net.ListenPacket
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	if cfg.ListenTCP == nil {
		cfg.ListenTCP = nat.ListenTCP
	}
	if cfg.DialTCP == nil {
		cfg.DialTCP = nat.DialTCP
	}
	switch {
	case cfg.RelayAfter == 0:
		cfg.RelayAfter = DefaultRelayAfter
	case cfg.RelayAfter < 0:
		cfg.RelayAfter = 0
	}
	if cfg.Interfaces == nil {
		cfg.Interfaces = nat.SystemInterfaces
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.ConnectTimeout < 0:
		return cfg, errors.New("p2p: negative ConnectTimeout")
	case cfg.EventQueueSize < 0 || cfg.MaxPendingSessions < 0 || cfg.MaxPendingPerIP < 0:
		return cfg, errors.New("p2p: negative EventQueueSize, MaxPendingSessions or MaxPendingPerIP")
	case cfg.CongestionControl > channels.CUBIC:
		return cfg, fmt.Errorf("p2p: unknown CongestionControl %d", cfg.CongestionControl)
	}
	return cfg, nil
}
