package mpeer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gamewire/gamewire/p2p"
)

// ConnectionStatus is Godot's MultiplayerPeer.ConnectionStatus, with its
// values.
type ConnectionStatus int

// The connection statuses.
const (
	Disconnected ConnectionStatus = 0
	Connecting   ConnectionStatus = 1
	Connected    ConnectionStatus = 2
)

func (s ConnectionStatus) String() string {
	switch s {
	case Disconnected:
		return "Disconnected"
	case Connecting:
		return "Connecting"
	case Connected:
		return "Connected"
	}
	return fmt.Sprintf("ConnectionStatus(%d)", int(s))
}

// Special targets of SetTargetPeer; a negative id -x means every peer but x.
const (
	TargetPeerBroadcast int32 = 0
	TargetPeerServer    int32 = 1
)

// Config tunes a Peer. The zero value of every field selects the default.
type Config struct {
	// MaxClients bounds a server's clients; more are rejected with
	// ErrServerFull. Zero means 32, Godot's default.
	MaxClients int

	// ClientID is the id a client asks the server for, 2..2^31-1. Zero
	// means a random one, as Godot's generate_unique_id.
	ClientID int32

	// JoinTimeout bounds connecting: a client not accepted by then fails
	// with ErrTimeout; a server closes a session that sent no JOIN by then;
	// a mesh peer whose introduction has not arrived by then fails with
	// ErrTimeout. Zero means 20 s, the node's own connect timeout.
	JoinTimeout time.Duration
}

// Defaults for Config.
const (
	DefaultMaxClients  = 32
	DefaultJoinTimeout = 20 * time.Second
)

func (c Config) withDefaults() (Config, error) {
	if c.MaxClients < 0 || c.JoinTimeout < 0 {
		return c, ErrInvalidConfig
	}
	if c.MaxClients == 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = DefaultJoinTimeout
	}
	return c, nil
}

type role int

const (
	roleNone role = iota
	roleServer
	roleClient
	roleMesh
)

type remoteState int

const (
	// pending: a server accepted the node's session and waits for its
	// JOIN; a client waits for the server's ACCEPT; a mesh member sent its
	// HELLO and waits for the other's.
	pending remoteState = iota
	// joined: connected, in Peer.byID.
	joined
	// closing: we sent REJECT or BYE; the session is closed when the other
	// side closes it, or at the deadline.
	closing
)

// remote is one node this Peer has a session with (or, on a client,
// another client reached through the server).
type remote struct {
	node     p2p.PeerID
	id       int32 // 0 on a server until the JOIN
	state    remoteState
	member   bool // in byID: reported connected, and disconnected when it goes
	relayed  bool // client: another client, behind the server's node
	deadline time.Time
}

// packet is a received packet waiting for GetPacket.
type packet struct {
	data    []byte
	from    int32
	channel int
	mode    TransferMode
}

// Peer is a Godot-style multiplayer peer over a p2p.Node. The zero value
// is Disconnected and ready for CreateServer, CreateClient or CreateMesh.
// Its methods may be called from any goroutine.
//
// Ownership: every field is guarded by mu, and the Peer starts no
// goroutine: its work happens in the caller's Poll, PutPacket and other
// calls. The node is called with mu held; the node never calls back.
type Peer struct {
	mu sync.Mutex

	node     *p2p.Node
	cfg      Config
	role     role
	status   ConnectionStatus
	id       int32
	reason   error      // why the status last became Disconnected
	server   p2p.PeerID // client: the server's node
	joinBy   time.Time  // client: Connecting until then
	refusing bool

	target  int32
	mode    TransferMode // meaningful once modeSet; Reliable before, as Godot
	modeSet bool
	channel int

	// byNode holds every node whose session this Peer manages (a client's:
	// the server's only); byID the connected peers by id (members), never
	// this Peer's own id. A client's other clients are in byID only.
	byNode map[p2p.PeerID]*remote
	byID   map[int32]*remote

	in        []packet // FIFO for GetPacket; in[inHead:] are waiting
	inHead    int
	inBytes   int
	held      []heldPacket
	heldBytes int
	relays    []heldRelay // server: reliable forwards waiting for room in a recipient's send queue
	events    []Event
	scan      int // the data channel Poll reads first, rotated for fairness
	stats     Stats
}

// resetPeers forgets every peer and held packet.
func (p *Peer) resetPeers() {
	p.byNode = make(map[p2p.PeerID]*remote)
	p.byID = make(map[int32]*remote)
	p.held, p.heldBytes = nil, 0
	p.relays = nil
}

// start makes p active in role r, dropping packets left from an earlier
// connection (events stay until read). The caller validated its arguments.
func (p *Peer) start(node *p2p.Node, cfg Config, r role, id int32) error {
	if node == nil {
		return ErrNilNode
	}
	if p.role != roleNone {
		return ErrAlreadyActive
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	p.node, p.cfg, p.role, p.id = node, cfg, r, id
	p.reason, p.refusing = nil, false
	p.in, p.inHead, p.inBytes = nil, 0, 0
	p.resetPeers()
	p.discardStale()
	return nil
}

// discardStale drops node events and reserved-channel packets that
// predate this Peer (a previous Peer on the node, a stale session): they
// would otherwise be read as about the new connection.
func (p *Peer) discardStale() {
	for drained := false; !drained; {
		select {
		case _, ok := <-p.node.Events():
			drained = !ok // closed: nothing stale is left
		default:
			drained = true
		}
	}
	p.drain(ControlChannel)
	for i := range numDataChannels {
		p.drain(DataChannelBase + i)
	}
}

func (p *Peer) drain(ch int) {
	for _, ok := p.node.ReadP2PPacket(ch); ok; _, ok = p.node.ReadP2PPacket(ch) {
	}
}

// CreateServer makes p a server (peer id 1) on node: Connected at once,
// accepting clients that send a valid JOIN, relaying their packets to
// each other.
func (p *Peer) CreateServer(node *p2p.Node, cfg Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.start(node, cfg, roleServer, TargetPeerServer); err != nil {
		return err
	}
	p.status = Connected
	return nil
}

// CreateClient makes p a client of the server whose node is server: it
// asks to join with Config.ClientID or a random id and is Connecting until
// the server answers. The node must be able to reach the server
// (AddPeerAddr or a rendezvous server).
func (p *Peer) CreateClient(node *p2p.Node, server p2p.PeerID, cfg Config) error {
	id := cfg.ClientID
	if id == 0 {
		id = GenerateUniqueID()
	} else if id < 2 {
		return ErrInvalidID
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.start(node, cfg, roleClient, id); err != nil {
		return err
	}
	p.server = server
	p.status = Connecting
	p.joinBy = time.Now().Add(p.cfg.JoinTimeout)
	p.byNode[server] = &remote{node: server, id: TargetPeerServer}
	err := p.node.Send(server, control{typ: msgJoin, version: protocolVersion, id: id}.append(nil), Reliable.Flags(), ControlChannel)
	if err != nil {
		p.deactivate(nil)
		return fmt.Errorf("mpeer: join: %w", err)
	}
	return nil
}

// CreateMesh makes p a mesh member with id uniqueID (1..2^31-1), Connected
// at once; AddMeshPeer connects it to the other members.
func (p *Peer) CreateMesh(node *p2p.Node, uniqueID int32, cfg Config) error {
	if uniqueID < 1 {
		return ErrInvalidID
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.start(node, cfg, roleMesh, uniqueID); err != nil {
		return err
	}
	p.status = Connected
	return nil
}

// AddMeshPeer adds the mesh member peerID, whose node is nodePeer: it
// sends our introduction (HELLO) and raises PeerConnected when the
// member's own introduction, with the same id, arrives. Both members must
// add each other within Config.JoinTimeout.
func (p *Peer) AddMeshPeer(peerID int32, nodePeer p2p.PeerID) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.role != roleMesh:
		return ErrWrongMode
	case peerID < 1 || peerID == p.id:
		return ErrInvalidID
	case p.byID[peerID] != nil || p.meshHasID(peerID):
		return ErrIDInUse
	case p.byNode[nodePeer] != nil:
		return ErrDuplicatePeer
	}
	hello := control{typ: msgHello, version: protocolVersion, id: p.id}.append(nil)
	if err := p.node.Send(nodePeer, hello, Reliable.Flags(), ControlChannel); err != nil {
		return fmt.Errorf("mpeer: add mesh peer %d: %w", peerID, err)
	}
	p.byNode[nodePeer] = &remote{node: nodePeer, id: peerID, deadline: time.Now().Add(p.cfg.JoinTimeout)}
	return nil
}

// meshHasID reports whether a member added (connected or not) has id.
func (p *Peer) meshHasID(id int32) bool {
	for _, r := range p.byNode {
		if r.id == id {
			return true
		}
	}
	return false
}

// GenerateUniqueID returns a random client id in 2..2^31-1, as Godot's
// generate_unique_id (0 and 1 are taken, negative ids mean "all but").
func GenerateUniqueID() int32 {
	return 2 + rand.Int32N(math.MaxInt32-1)
}

// Close ends every session the Peer opened, drops waiting packets and
// events, and makes p Disconnected; it may be created again. It emits no
// event, as Godot's close. It does not close the node, which belongs to
// the caller. Always nil; calling it again does nothing.
func (p *Peer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deactivate(nil)
	p.in, p.inHead, p.inBytes = nil, 0, 0
	p.events = nil
	return nil
}

// deactivate closes the sessions and makes p Disconnected for reason.
// Packets and events already queued stay readable.
func (p *Peer) deactivate(reason error) {
	if p.role == roleNone {
		return
	}
	for n := range p.byNode {
		p.node.CloseP2PSessionWithUser(n)
	}
	p.resetPeers()
	p.role, p.status, p.id, p.reason = roleNone, Disconnected, 0, reason
}

// GetConnectionStatus reports Disconnected, Connecting (a client waiting
// for the server's answer) or Connected.
func (p *Peer) GetConnectionStatus() ConnectionStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// DisconnectReason tells why the status last became Disconnected: nil
// after Close or a normal end, else ErrRefused, ErrIDInUse, ErrKicked,
// ErrTimeout and so on.
func (p *Peer) DisconnectReason() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

// GetUniqueID returns this peer's id: 1 on a server, the client's id
// (already while Connecting), the mesh id; 0 when Disconnected.
func (p *Peer) GetUniqueID() int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.id
}

// IsServer reports whether p is a server.
func (p *Peer) IsServer() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.role == roleServer
}

// IsServerRelaySupported reports true for a server or client: the server
// relays client-to-client packets. A mesh has no server.
func (p *Peer) IsServerRelaySupported() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.role == roleServer || p.role == roleClient
}

// SetTargetPeer sets where PutPacket sends: TargetPeerBroadcast (0) for
// every peer, TargetPeerServer (1) for the server, a positive id for that
// peer, -id for every peer but that one. PutPacket checks it.
func (p *Peer) SetTargetPeer(id int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = id
}

// SetTransferMode sets the mode of the next PutPacket. Default Reliable.
func (p *Peer) SetTransferMode(m TransferMode) error {
	if !m.valid() {
		return ErrInvalidMode
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.modeSet = m, true
	return nil
}

// GetTransferMode returns the mode PutPacket uses.
func (p *Peer) GetTransferMode() TransferMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.transferMode()
}

// transferMode is the mode set, Reliable by default: the zero Peer must
// send reliably, as Godot's default, though TransferMode's zero is
// Unreliable.
func (p *Peer) transferMode() TransferMode {
	if !p.modeSet {
		return Reliable
	}
	return p.mode
}

// SetTransferChannel sets the channel (0–255) of the next PutPacket.
// Default 0.
func (p *Peer) SetTransferChannel(channel int) error {
	if channel < 0 || channel > MaxTransferChannel {
		return ErrInvalidChannel
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.channel = channel
	return nil
}

// GetTransferChannel returns the channel PutPacket uses.
func (p *Peer) GetTransferChannel() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.channel
}

// RefuseNewConnections makes a server refuse new clients (true) or accept
// them again (false). Clients already in stay.
func (p *Peer) RefuseNewConnections(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refusing = refuse
}

// IsRefusingNewConnections reports the RefuseNewConnections setting.
func (p *Peer) IsRefusingNewConnections() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refusing
}

// GetMaxPacketSize returns the largest packet PutPacket accepts in the
// current transfer mode: MaxReliablePacketSize or MaxUnreliablePacketSize.
func (p *Peer) GetMaxPacketSize() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maxPacketSize(p.transferMode())
}

// GetAvailablePacketCount returns how many packets GetPacket can return.
// Packets arrive in Poll.
func (p *Peer) GetAvailablePacketCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.in) - p.inHead
}

// GetPacket returns the next packet's payload (the caller owns it), or
// ErrNoPacket.
func (p *Peer) GetPacket() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inHead == len(p.in) {
		return nil, ErrNoPacket
	}
	pk := p.in[p.inHead]
	p.in[p.inHead] = packet{}
	p.inHead++
	p.inBytes -= len(pk.data)
	switch {
	case p.inHead == len(p.in):
		p.in, p.inHead = p.in[:0], 0
	case p.inHead >= 1024 && 2*p.inHead >= len(p.in):
		// A game that never empties the queue must not grow it forever.
		n := copy(p.in, p.in[p.inHead:])
		clear(p.in[n:])
		p.in, p.inHead = p.in[:n], 0
	}
	return pk.data, nil
}

// next returns the packet GetPacket will return.
func (p *Peer) next() (packet, bool) {
	if p.inHead == len(p.in) {
		return packet{}, false
	}
	return p.in[p.inHead], true
}

// GetPacketPeer returns the id of the peer that sent the next packet (for
// relayed packets, the original sender), or 0 if none is waiting.
func (p *Peer) GetPacketPeer() int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	pk, _ := p.next()
	return pk.from
}

// GetPacketChannel returns the transfer channel of the next packet (0 if
// none is waiting).
func (p *Peer) GetPacketChannel() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	pk, _ := p.next()
	return pk.channel
}

// GetPacketMode returns the transfer mode of the next packet (Reliable if
// none is waiting, as Godot).
func (p *Peer) GetPacketMode() TransferMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pk, ok := p.next(); ok {
		return pk.mode
	}
	return Reliable
}

// Events returns the events queued since the last call, oldest first, and
// forgets them; the caller owns the slice.
func (p *Peer) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	ev := p.events
	p.events = nil
	return ev
}

func (p *Peer) emit(k EventKind, id int32, err error) {
	if len(p.events) >= maxEvents {
		p.stats.EventsDropped++
		return
	}
	p.events = append(p.events, Event{Kind: k, Peer: id, Err: err})
}

// Stats returns the Peer's counters.
func (p *Peer) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}
