package p2p

import (
	"cmp"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-reuseport"
	"golang.org/x/crypto/blake2s"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/gamewire/gamewire/internal/secure"
)

// LAN discovery (Config.LANDiscovery): nodes of one AppID on one network
// find each other with no server. Each node sends a beacon from its own
// socket, so the address a beacon comes from is the one its sessions use,
// to an IPv4 multicast group, the IPv4 limited broadcast address and an
// IPv6 link-local multicast group, on one port, and listens on that port
// with sockets of its own (SO_REUSEPORT: every node on a host listens).
//
// What a beacon proves. A PeerID is an X25519 key, which cannot sign, so a
// beacon cannot prove to a node it has never met that its sender holds
// the PeerID's private key. A beacon therefore only claims: "a node with
// this PeerID runs this AppID at the address I come from". The claim is
// tested where it costs nothing extra: the Noise handshake of a session
// proves the peer's key, and its response proves the peer receives at the
// address. The beacon's MAC is keyed by a hash of the AppID (not the one
// it carries in the clear), so only software that knows the AppID makes
// valid beacons and other programs' traffic on the port is dropped at
// once; the AppID is no secret, so the MAC is a filter, not
// authentication. Its timestamp bounds replays: a beacon more than
// lanMaxSkew away from our clock, or older than one already taken from
// the same address, is dropped.
//
// What a stranger on the LAN can do, and what it costs us:
//
//   - Make us list a PeerID that is not there, or at a wrong address. The
//     list is bounded (lanMaxPeers, lanMaxAddrs addresses each, at most
//     lanPeersPerIP peers per source IP, lanNewPerSecond newcomers a
//     second) and forgets what it does not hear for lanPeerTTL.
//   - Make us send: a beacon is never answered. Packets go to a beacon's
//     address only once the application wants that peer (it sends to it),
//     and then exactly what a session sends to an address AddPeerAddr
//     gave: one initiation (a copy to each other address of the peer, once)
//     and its retries, backing off; a responder's answers stay under the
//     usual bounds (amplification, admission per source IP). A handshake
//     that gets no answer for lanFallback also asks the rendezvous server,
//     if there is one, so a forged address delays a session by a second
//     and does not stop it.
//   - Make us spend CPU or memory: each datagram costs a length check, a
//     comparison and one keyed BLAKE2s of 58 bytes before anything is
//     kept; what passes is rate-limited per source IP (lanPerSource a
//     second), what would add to the table also in all (lanGlobal), and
//     the table's bounds hold whatever arrives.
const (
	lanPort       = 18263 // "GW", 0x4757
	lanBeaconType = 0xB0  // gamewire's range (0x80–0xBF), unused on the main socket
	lanVersion    = 1
	lanBeaconLen  = 74
	lanMACOffset  = 58
	lanReadBuf    = 128 // anything longer than a beacon is malformed

	// lanInterval is the mean spacing of beacon rounds, jittered by ±25 %
	// so the nodes of a LAN do not beacon in step; the first goes out at
	// once.
	lanInterval = 2 * time.Second
	// lanPeerTTL: an address not heard from for this long is forgotten,
	// and a peer with none is no longer listed: about four rounds missed.
	lanPeerTTL = 10 * time.Second
	// lanMaxSkew bounds how far a beacon's timestamp may be from our clock.
	// Wider than clocks on one LAN usually differ; narrow enough that a
	// recorded beacon stops working soon after its sender left.
	lanMaxSkew = 2 * time.Minute

	lanMaxPeers     = 256 // peers listed at once
	lanMaxAddrs     = 4   // addresses per peer (IPv4 and IPv6, a restart at a new port)
	lanPeersPerIP   = 16  // peers one source IP (an IPv6 /64) may put on the list
	lanMaxIfaces    = 8   // interfaces a round beacons on
	lanMaxJoins     = 32  // interfaces the groups are joined on, per family
	lanPerSource    = 16  // beacons a second taken from one source IP (burst twice that)
	lanGlobal       = 256 // peers or addresses added a second in all (burst twice that); refreshes pass
	lanNewPerSecond = 16  // peers added to the list a second (burst 64): LANPeerFound events
	// lanFallback: a handshake on a beacon's address unanswered this long
	// also asks the rendezvous server, when there is one.
	lanFallback = time.Second
)

// The beacon's destinations: 239.255.0.0/16 is IPv4's local scope (RFC
// 2365), ff12:: link-local scope with the transient flag RFC 4291 asks of
// groups IANA did not assign; 71.87 and 4757 spell "GW".
var (
	lanGroup4     = netip.AddrFrom4([4]byte{239, 255, 71, 87})
	lanBroadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	lanGroup6     = netip.MustParseAddr("ff12::4757")
)

// LANPeer is a node LAN discovery heard recently: a claim, not a proof.
// Its beacons say it runs this AppID under Peer at Addrs; anyone on the
// LAN who knows the AppID can say as much. A session with the peer proves
// it: the handshake fails unless the node at the address holds Peer's
// key.
type LANPeer struct {
	Peer PeerID
	// Addrs are where its beacons came from (its socket, on each network
	// the two nodes share), the newest beacon first; at most 4.
	Addrs []netip.AddrPort
	// LastSeen is when its latest beacon arrived. A peer silent for 10 s
	// is no longer listed.
	LastSeen time.Time
}

// LANPeers returns the peers LAN discovery heard from in the last 10 s,
// ordered by PeerID; nil when Config.LANDiscovery is off. Sending to one
// opens a session straight to its address, with no server. When discovery
// cannot run (the port or groups unusable), the list stays empty and
// NodeStats.LANErrors says so.
func (n *Node) LANPeers() []LANPeer {
	if n.lan == nil {
		return nil
	}
	return n.lan.peers.list(time.Now())
}

// lanNet is the network LAN discovery runs on: the system's, or a test's
// (an in-memory network, a lab's namespace) through Config.lan.
type lanNet struct {
	port       uint16
	listen     func(network, address string) (net.PacketConn, error)
	interfaces func() ([]lanIface, error)
}

// lanIface is an interface that is up.
type lanIface struct {
	index int
	flags net.Flags
	addrs []netip.Addr
}

func (f lanIface) is(flag net.Flags) bool { return f.flags&flag != 0 }

// first returns the interface's first address of the family (IPv4 or not).
func (f lanIface) first(v4 bool) netip.Addr {
	for _, a := range f.addrs {
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

func systemLANNet() lanNet {
	return lanNet{port: lanPort, listen: reuseport.ListenPacket, interfaces: systemLANIfaces}
}

func systemLANIfaces() ([]lanIface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []lanIface
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		f := lanIface{index: ifi.Index, flags: ifi.Flags}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				f.addrs = append(f.addrs, p.Addr().Unmap())
			}
		}
		out = append(out, f)
	}
	return out, nil
}

// lanDiscovery is a node's LAN discovery: its listening sockets, the
// beacon sender and the table of peers heard.
//
// Ownership: the sender goroutine (run) owns joined and sends every
// beacon; each listening socket's reader fills the table; sessions read
// it. peers has its own lock, a leaf. The rest is immutable after
// newLANDiscovery.
type lanDiscovery struct {
	n         *Node
	net       lanNet
	key       [32]byte            // the beacons' MAC key
	local     netip.Addr          // the main socket's address: which families and interfaces to use
	socks     []lanSock           // listening
	perSource *secure.RateLimiter // beacons taken per source IP
	peers     lanTable

	joined map[lanJoin]bool // the sender's: groups joined (or tried) per socket and interface
}

type lanSock struct {
	pc net.PacketConn
	v4 bool
}

type lanJoin struct {
	v4    bool
	index int
}

// lanKey is the beacons' MAC key. It is derived from the AppID itself, not
// from the hash a beacon carries, so reading beacons does not teach anyone
// to make them.
func lanKey(appID string) [32]byte {
	return blake2s.Sum256(append([]byte("gamewire LAN beacon v1\x00"), appID...))
}

// newLANDiscovery opens the listening sockets. Nothing here fails the
// node: a socket that cannot open is logged and counted, and discovery
// runs with what it has (beacons still go out without a listener).
func newLANDiscovery(n *Node) *lanDiscovery {
	l := newLAN(n, addrOfConn(n.main.pc).Addr())
	if !l.local.IsValid() {
		l.fail("the node's socket has no IP address", errors.New(n.main.pc.LocalAddr().String()))
	}
	if u, ok := n.main.pc.(*net.UDPConn); ok && n.ownPC && l.local.Is6() {
		// Go sets SO_BROADCAST on IPv4 sockets only; a dual-stack socket
		// needs it for 255.255.255.255.
		if err := setBroadcast(u); err != nil {
			l.fail("SO_BROADCAST on the node's socket", err)
		}
	}
	port := strconv.Itoa(int(l.net.port))
	for _, v4 := range []bool{true, false} {
		if !l.family(v4) {
			continue
		}
		network, addr := "udp4", net.JoinHostPort("0.0.0.0", port)
		if !v4 {
			network, addr = "udp6", net.JoinHostPort("::", port)
		}
		pc, err := l.net.listen(network, addr)
		if err != nil {
			l.fail("listening for LAN beacons", err, "network", network, "port", port)
			continue
		}
		l.socks = append(l.socks, lanSock{pc: pc, v4: v4})
	}
	return l
}

// newLAN is discovery's state for n, whose main socket is at local.
func newLAN(n *Node, local netip.Addr) *lanDiscovery {
	l := &lanDiscovery{
		n:         n,
		net:       systemLANNet(),
		key:       lanKey(n.cfg.AppID),
		local:     local,
		perSource: secure.NewRateLimiter(lanPerSource, 2*lanPerSource),
		peers:     lanTable{peers: make(map[PeerID]*lanEntry)},
		joined:    make(map[lanJoin]bool),
	}
	if n.cfg.lan != nil {
		l.net = *n.cfg.lan
	}
	return l
}

// family reports whether the main socket can reach peers of the family:
// a socket bound to one address only its own; one on 0.0.0.0 IPv4, one on
// :: both.
func (l *lanDiscovery) family(v4 bool) bool {
	switch {
	case !l.local.IsValid():
		return false
	case l.local.IsUnspecified():
		return v4 || l.local.Is6()
	}
	return l.local.Is4() == v4
}

// fail counts and logs a failure of discovery's sockets: the 1st, 2nd,
// 4th, 8th... at debug level (a machine without multicast routes would
// otherwise log every round).
func (l *lanDiscovery) fail(what string, err error, args ...any) {
	if k := l.n.stats.lanErrors.Add(1); k&(k-1) == 0 {
		l.n.log.Debug("p2p: LAN discovery: "+what, append(args, "err", err, "errors", k)...)
	}
}

func (l *lanDiscovery) start() {
	l.n.wg.Add(1 + len(l.socks))
	go l.run()
	for _, s := range l.socks {
		go l.read(s.pc)
	}
}

// close closes the listening sockets, which ends their readers; the sender
// ends with the node (Node.done).
func (l *lanDiscovery) close() {
	for _, s := range l.socks {
		s.pc.Close()
	}
}

// run sends a round of beacons at once and then every lanInterval ±25 %,
// joining the groups on interfaces that came up and expiring the table.
func (l *lanDiscovery) run() {
	defer l.n.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-l.n.done:
			return
		case <-t.C:
		}
		ifs, err := l.net.interfaces()
		if err != nil {
			l.fail("listing interfaces", err)
		}
		l.join(ifs)
		l.send(time.Now(), ifs)
		l.peers.expire(time.Now())
		t.Reset(time.Duration(float64(lanInterval) * (0.75 + rand.Float64()/2)))
	}
}

// lanDest is one beacon of a round: where it goes and, from a socket bound
// to no address, the interface and source address of an IPv4 one
// (IP_PKTINFO). An IPv6 one names its interface in its zone.
type lanDest struct {
	to      netip.AddrPort
	ifindex int
	src     netip.Addr
}

// destinations are a round's beacons. A socket bound to an address
// beacons only from it (the kernel picks the interface that holds it).
// Otherwise each interface gets its own: IPv4 multicast and broadcast from
// its first IPv4 address, IPv6 multicast on it; loopback only when no
// other interface carries IPv4 beacons (nodes on one machine hear each
// other's beacons looped back from any interface).
func (l *lanDiscovery) destinations(ifs []lanIface) []lanDest {
	port := l.net.port
	g4, b4 := netip.AddrPortFrom(lanGroup4, port), netip.AddrPortFrom(lanBroadcast4, port)
	g6 := func(index int) netip.AddrPort {
		return netip.AddrPortFrom(lanGroup6.WithZone(strconv.Itoa(index)), port)
	}
	if !l.local.IsUnspecified() {
		if l.local.Is4() {
			return []lanDest{{to: g4}, {to: b4}}
		}
		for _, f := range ifs {
			if slices.Contains(f.addrs, l.local.WithZone("")) {
				return []lanDest{{to: g6(f.index)}}
			}
		}
		return nil
	}
	loopbackOnly := !slices.ContainsFunc(ifs, func(f lanIface) bool {
		return !f.is(net.FlagLoopback) && f.first(true).IsValid() && (f.is(net.FlagMulticast) || f.is(net.FlagBroadcast))
	})
	var out []lanDest
	used := 0
	for _, f := range ifs {
		if used == lanMaxIfaces {
			break
		}
		loop := f.is(net.FlagLoopback)
		before := len(out)
		if a := f.first(true); a.IsValid() && (!loop || loopbackOnly) {
			if loop || f.is(net.FlagMulticast) {
				out = append(out, lanDest{to: g4, ifindex: f.index, src: a})
			}
			if loop || f.is(net.FlagBroadcast) {
				out = append(out, lanDest{to: b4, ifindex: f.index, src: a})
			}
		}
		if l.local.Is6() && !loop && f.is(net.FlagMulticast) && f.first(false).IsValid() {
			out = append(out, lanDest{to: g6(f.index)})
		}
		if len(out) > before {
			used++
		}
	}
	return out
}

// send sends one round of beacons from the main socket.
func (l *lanDiscovery) send(now time.Time, ifs []lanIface) {
	b := encodeLANBeacon(&l.key, l.n.appHash, l.n.id.PeerID(), uint64(now.UnixMilli()))
	for _, d := range l.destinations(ifs) {
		if l.n.isClosed() {
			return
		}
		if err := l.write(b, d); err != nil {
			l.fail("sending a beacon", err, "to", d.to, "from", d.src)
			continue
		}
		l.n.stats.lanSent.Add(1)
	}
}

func (l *lanDiscovery) write(b []byte, d lanDest) error {
	u, ok := l.n.main.pc.(*net.UDPConn)
	if !ok {
		_, err := l.n.main.pc.WriteTo(b, net.UDPAddrFromAddrPort(d.to))
		return err
	}
	var oob []byte
	if d.src.IsValid() {
		// The interface, and the source the kernel would not pick by
		// itself for a multicast or broadcast destination.
		oob = (&ipv4.ControlMessage{IfIndex: d.ifindex, Src: d.src.AsSlice()}).Marshal()
	}
	_, _, err := u.WriteMsgUDPAddrPort(b, oob, d.to)
	return err
}

// join joins the groups on every interface the main socket can use that
// has not been tried yet; an interface that went away is tried again when
// it comes back. Sockets of a test's network (not UDP sockets) need no
// joins.
func (l *lanDiscovery) join(ifs []lanIface) {
	for _, s := range l.socks {
		u, ok := s.pc.(*net.UDPConn)
		if !ok {
			continue
		}
		joined := 0
		for k := range l.joined {
			switch {
			case k.v4 != s.v4:
			case !slices.ContainsFunc(ifs, func(f lanIface) bool { return f.index == k.index }):
				delete(l.joined, k)
			default:
				joined++
			}
		}
		for _, f := range ifs {
			k := lanJoin{v4: s.v4, index: f.index}
			if l.joined[k] || !l.listensOn(f, s.v4) {
				continue
			}
			if joined == lanMaxJoins {
				break // a host with hundreds of interfaces (containers)
			}
			joined++
			l.joined[k] = true // tried: a failure is not repeated every round
			ifi := &net.Interface{Index: f.index, Flags: f.flags}
			var err error
			if s.v4 {
				err = ipv4.NewPacketConn(u).JoinGroup(ifi, &net.UDPAddr{IP: lanGroup4.AsSlice()})
			} else {
				err = ipv6.NewPacketConn(u).JoinGroup(ifi, &net.UDPAddr{IP: lanGroup6.AsSlice()})
			}
			if err != nil {
				l.fail("joining the beacon group", err, "interface", f.index, "ipv4", s.v4)
			}
		}
	}
}

// listensOn reports whether the group of the family is joined on f: an
// interface with an address of the family, multicast-capable (IPv4 also
// loopback, which carries multicast on Linux), and the main socket's own
// if it is bound to one.
func (l *lanDiscovery) listensOn(f lanIface, v4 bool) bool {
	switch {
	case !l.family(v4):
		return false
	case !l.local.IsUnspecified():
		return slices.Contains(f.addrs, l.local.WithZone(""))
	case !f.first(v4).IsValid():
		return false
	case v4:
		return f.is(net.FlagMulticast) || f.is(net.FlagLoopback)
	}
	return f.is(net.FlagMulticast) && !f.is(net.FlagLoopback)
}

// read takes in what a listening socket receives.
func (l *lanDiscovery) read(pc net.PacketConn) {
	defer l.n.wg.Done()
	buf := make([]byte, lanReadBuf)
	u, _ := pc.(*net.UDPConn)
	errs := 0
	for {
		var k int
		var src netip.AddrPort
		var err error
		if u != nil {
			k, src, err = u.ReadFromUDPAddrPort(buf) // no allocation per datagram
		} else {
			var a net.Addr
			if k, a, err = pc.ReadFrom(buf); err == nil {
				if ua, ok := a.(*net.UDPAddr); ok {
					src = ua.AddrPort()
				}
			}
		}
		if err != nil {
			if l.n.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			errs++
			l.fail("reading beacons", err)
			select { // do not spin on a broken socket
			case <-time.After(min(time.Duration(errs)*10*time.Millisecond, time.Second)):
			case <-l.n.done:
				return
			}
			continue
		}
		errs = 0
		l.receive(buf[:k], netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), time.Now())
	}
}

// lanVerdict is what became of a datagram on the discovery port.
type lanVerdict int

const (
	lanOK        lanVerdict = iota // well formed, this AppID, MAC valid (openLANBeacon)
	lanNew                         // a peer not listed: listed now, LANPeerFound raised
	lanRefreshed                   // a listed peer's newer beacon, or a new address of it
	lanDuplicate                   // a copy of a beacon taken (each goes to a group and to broadcast)
	lanOwn                         // ours, looped back
	lanMalformed                   // length, type, version or source address wrong
	lanOtherApp                    // another AppID's
	lanBadMAC                      // not made by a node that knows the AppID
	lanStale                       // timestamp outside lanMaxSkew of our clock
	lanReplayed                    // older than the beacon taken from that address
	lanLimited                     // over its source IP's rate or the global one
	lanFull                        // the table, its source IP's share or the newcomer rate is full
)

// receive handles a datagram from the discovery port and counts what
// became of it.
func (l *lanDiscovery) receive(b []byte, src netip.AddrPort, now time.Time) lanVerdict {
	v := l.take(b, src, now)
	st := &l.n.stats
	switch v {
	case lanNew, lanRefreshed:
		st.lanHeard.Add(1)
	case lanMalformed, lanOtherApp, lanBadMAC, lanStale, lanReplayed:
		st.lanDropped.Add(1)
	case lanLimited, lanFull:
		st.lanRefused.Add(1)
	}
	return v
}

// take checks a datagram, cheapest checks first, and enters its claim in
// the table.
func (l *lanDiscovery) take(b []byte, src netip.AddrPort, now time.Time) lanVerdict {
	peer, ms, v := openLANBeacon(b, l.n.appHash, &l.key)
	switch {
	case v != lanOK:
		return v
	case peer == l.n.id.PeerID():
		return lanOwn
	case !src.IsValid() || src.Port() == 0 || src.Addr().IsUnspecified() || src.Addr().IsMulticast() || src.Addr() == lanBroadcast4:
		return lanMalformed // no node sends from there
	case !fresh(ms, now):
		return lanStale
	case !l.perSource.Allow(src.Addr(), now):
		return lanLimited
	}
	v = l.peers.heard(peer, ms, src, now)
	if v == lanNew {
		l.n.log.Debug("p2p: LAN peer found", "peer", peer, "addr", src)
		l.n.events.push(LANPeerFound{Peer: peer, Addr: src})
	}
	return v
}

// fresh reports whether a beacon's time (unix ms, the sender's clock) is
// within lanMaxSkew of now.
func fresh(ms uint64, now time.Time) bool {
	if ms > 1<<62 {
		return false
	}
	d, skew := int64(ms)-now.UnixMilli(), lanMaxSkew.Milliseconds()
	return d <= skew && d >= -skew
}

// The beacon, 74 bytes:
//
//	0  type  u8   0xB0
//	1  ver   u8   1
//	2  app   16   BLAKE2s-256(AppID), first 16 bytes (as the handshake carries)
//	18 peer  32   the sender's PeerID
//	50 time  u64  little endian, unix ms, the sender's clock; all of a
//	              round's beacons carry the same
//	58 mac   16   BLAKE2s-128 keyed with lanKey(AppID), over bytes 0–57
func encodeLANBeacon(key *[32]byte, app [16]byte, peer PeerID, ms uint64) []byte {
	b := make([]byte, lanBeaconLen)
	b[0], b[1] = lanBeaconType, lanVersion
	copy(b[2:18], app[:])
	copy(b[18:50], peer[:])
	binary.LittleEndian.PutUint64(b[50:58], ms)
	lanMAC(key, b[:lanMACOffset], b[lanMACOffset:])
	return b
}

// openLANBeacon checks a beacon's form, AppID and MAC, and returns its
// claim.
func openLANBeacon(b []byte, app [16]byte, key *[32]byte) (PeerID, uint64, lanVerdict) {
	if len(b) != lanBeaconLen || b[0] != lanBeaconType || b[1] != lanVersion {
		return PeerID{}, 0, lanMalformed
	}
	if [16]byte(b[2:18]) != app {
		return PeerID{}, 0, lanOtherApp
	}
	var mac [blake2s.Size128]byte
	lanMAC(key, b[:lanMACOffset], mac[:])
	if !hmac.Equal(mac[:], b[lanMACOffset:]) {
		return PeerID{}, 0, lanBadMAC
	}
	return PeerID(b[18:50]), binary.LittleEndian.Uint64(b[50:58]), lanOK
}

func lanMAC(key *[32]byte, msg, out []byte) {
	h, _ := blake2s.New128(key[:]) // fails only for a key longer than 32 bytes
	h.Write(msg)
	h.Sum(out[:0])
}

// lanTable is the peers heard. mu is a leaf lock.
type lanTable struct {
	mu        sync.Mutex
	peers     map[PeerID]*lanEntry
	global    lanBucket
	newcomers lanBucket
}

// lanEntry is one peer's addresses, the newest beacon first.
type lanEntry struct{ addrs []lanAddr }

type lanAddr struct {
	ap    netip.AddrPort
	ms    uint64    // the latest beacon's time, the sender's clock
	heard time.Time // when it arrived, ours
}

// heard enters a valid, fresh beacon from src. A listed peer's beacon
// from a listed address only refreshes the entry; what would add to the
// table (a peer, an address) passes the global rate first, so a flood of
// strangers cannot starve the refreshes that keep the peers listed.
func (t *lanTable) heard(peer PeerID, ms uint64, src netip.AddrPort, now time.Time) lanVerdict {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.peers[peer]
	if e != nil && !e.expire(now) {
		delete(t.peers, peer)
		e = nil
	}
	i := -1
	if e != nil {
		i = slices.IndexFunc(e.addrs, func(a lanAddr) bool { return a.ap == src })
	}
	if i < 0 && !t.global.take(now, lanGlobal, 2*lanGlobal) {
		return lanLimited
	}
	if e == nil {
		if len(t.peers) >= lanMaxPeers {
			t.expireLocked(now)
		}
		// Past the bound newcomers wait rather than evict: the peers
		// listed keep their places however fast strangers arrive.
		if len(t.peers) >= lanMaxPeers || t.fromLocked(ipKey(src.Addr())) >= lanPeersPerIP ||
			!t.newcomers.take(now, lanNewPerSecond, 4*lanNewPerSecond) {
			return lanFull
		}
		t.peers[peer] = &lanEntry{addrs: []lanAddr{{ap: src, ms: ms, heard: now}}}
		return lanNew
	}
	switch {
	case i >= 0 && ms < e.addrs[i].ms:
		return lanReplayed
	case i >= 0 && ms == e.addrs[i].ms:
		return lanDuplicate
	case i >= 0:
		e.addrs[i].ms, e.addrs[i].heard = ms, now
	case len(e.addrs) < lanMaxAddrs:
		e.addrs = append(e.addrs, lanAddr{ap: src, ms: ms, heard: now})
	case ms < e.addrs[len(e.addrs)-1].ms:
		return lanFull // older than every address the peer has
	default:
		e.addrs[len(e.addrs)-1] = lanAddr{ap: src, ms: ms, heard: now}
	}
	slices.SortStableFunc(e.addrs, func(a, b lanAddr) int {
		if c := cmp.Compare(b.ms, a.ms); c != 0 {
			return c
		}
		switch {
		case a.ap.Addr().Is4() && !b.ap.Addr().Is4():
			return -1
		case b.ap.Addr().Is4() && !a.ap.Addr().Is4():
			return 1
		}
		return 0
	})
	return lanRefreshed
}

// expire drops the addresses not heard for lanPeerTTL and reports whether
// any is left.
func (e *lanEntry) expire(now time.Time) bool {
	e.addrs = slices.DeleteFunc(e.addrs, func(a lanAddr) bool { return now.Sub(a.heard) >= lanPeerTTL })
	return len(e.addrs) > 0
}

// fromLocked counts the peers with an address at ip.
func (t *lanTable) fromLocked(ip netip.Addr) int {
	k := 0
	for _, e := range t.peers {
		if slices.ContainsFunc(e.addrs, func(a lanAddr) bool { return ipKey(a.ap.Addr()) == ip }) {
			k++
		}
	}
	return k
}

func (t *lanTable) expire(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(now)
}

func (t *lanTable) expireLocked(now time.Time) {
	for p, e := range t.peers {
		if !e.expire(now) {
			delete(t.peers, p)
		}
	}
}

// addrs returns where peer's recent beacons came from, the newest first.
func (t *lanTable) addrs(peer PeerID, now time.Time) []netip.AddrPort {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.peers[peer]
	if e == nil {
		return nil
	}
	var out []netip.AddrPort
	for _, a := range e.addrs {
		if now.Sub(a.heard) < lanPeerTTL {
			out = append(out, a.ap)
		}
	}
	return out
}

func (t *lanTable) list(now time.Time) []LANPeer {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := []LANPeer{}
	for p, e := range t.peers {
		lp := LANPeer{Peer: p}
		for _, a := range e.addrs {
			if now.Sub(a.heard) < lanPeerTTL {
				lp.Addrs = append(lp.Addrs, a.ap)
				if a.heard.After(lp.LastSeen) {
					lp.LastSeen = a.heard
				}
			}
		}
		if len(lp.Addrs) > 0 {
			out = append(out, lp)
		}
	}
	slices.SortFunc(out, func(a, b LANPeer) int { return cmp.Compare(string(a.Peer[:]), string(b.Peer[:])) })
	return out
}

// size returns the number of peers held, expired or not (tests).
func (t *lanTable) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.peers)
}

// lanBucket is a token bucket: rate tokens a second, at most burst.
type lanBucket struct {
	tokens float64
	last   time.Time
}

func (b *lanBucket) take(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// startLANHandshakeLocked starts a connecting session's handshake on the
// addresses LAN discovery heard its peer at, if it did (s.mu held): the
// initiation goes to the newest, and a copy to each other once, as
// speculate does with introduced candidates; retries go to the newest.
// The addresses are claims: the response proves the peer is there.
func (s *session) startLANHandshakeLocked(now time.Time) bool {
	l := s.node.lan
	if l == nil {
		return false
	}
	addrs := l.peers.addrs(s.peer, now)
	if len(addrs) == 0 {
		return false
	}
	s.startHandshakeOnLocked(addrs[0], nil, now)
	if s.hs == nil {
		return true // the next tick tries again
	}
	s.lanAt = now
	msg := clone(s.hs.Message())
	for _, a := range addrs[1:] {
		s.writeLocked(s.node.main, msg, a)
	}
	return true
}

// lanFallbackLocked also asks the rendezvous server for the peer when
// this attempt's handshake on a beacon's address has gone unanswered for
// lanFallback (s.mu held): the beacon was stale or forged, and the server
// may know a way.
func (s *session) lanFallbackLocked(now time.Time) {
	if s.state != stConnecting || s.lanAt.Before(s.started) || s.introducing || s.node.trav == nil || now.Sub(s.lanAt) < lanFallback {
		return
	}
	s.introducing = true
	s.later = s.later&^cancelAsking | askServer
}
