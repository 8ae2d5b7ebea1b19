package relay

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// errDeniedPeer: a relay socket refused to write to an address the peer
// policy denies.
var errDeniedPeer = errors.New("relay: peer address denied by policy")

// deniedPrefixes are the ranges no relay socket reaches unless
// ServerConfig.AllowPeers opens them: addresses that are not a peer on the
// internet but the server's own host or network, or no host at all.
var deniedPrefixes = mustPrefixes(
	"0.0.0.0/8",      // this network; 0.0.0.0 reaches the host itself
	"10.0.0.0/8",     // RFC 1918
	"100.64.0.0/10",  // carrier-grade NAT (RFC 6598)
	"127.0.0.0/8",    // loopback
	"169.254.0.0/16", // link-local, cloud metadata services
	"172.16.0.0/12",  // RFC 1918
	"192.168.0.0/16", // RFC 1918
	"224.0.0.0/4",    // multicast
	"240.0.0.0/4",    // reserved, and 255.255.255.255 (broadcast)

	"::/96",           // unspecified, loopback and the deprecated IPv4-compatible form
	"::ffff:0:0:0/96", // IPv4-translated (SIIT; the IPv4-mapped form is unmapped first)
	"64:ff9b:1::/48",  // local-use NAT64 (RFC 8215)
	"fc00::/7",        // unique local
	"fe80::/10",       // link-local
	"fec0::/10",       // site-local (deprecated)
	"ff00::/8",        // multicast
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Prefixes that embed an IPv4 address a host with a tunnel or gateway for
// them would end up sending to.
var (
	nat64Prefix  = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052: the IPv4 address in the last 32 bits
	sixToFour    = netip.MustParsePrefix("2002::/16")    // RFC 3056: the IPv4 address in bits 16-47
	teredoPrefix = netip.MustParsePrefix("2001::/32")    // RFC 4380: the client's IPv4 address, inverted, in the last 32 bits
)

// embeddedV4 returns the IPv4 address a 6to4, NAT64 or Teredo address
// leads to.
func embeddedV4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	switch {
	case nat64Prefix.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	case teredoPrefix.Contains(a):
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}), true
	}
	return netip.Addr{}, false
}

// canonical is the form addresses are compared in: IPv4-mapped IPv6
// unmapped, no zone.
func canonical(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// canonicalPrefix turns an IPv4-mapped IPv6 prefix into the IPv4 one.
func canonicalPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

// peerPolicy decides which peers relay sockets reach. The relayed
// addresses of live allocations are always reachable (relay to relay on
// one server); the server's own addresses never are otherwise; AllowPeers
// opens ranges deniedPrefixes closes. It knows no families: an
// allocation reaches peers of its own family only, which Server checks.
type peerPolicy struct {
	allow    []netip.Prefix
	own      map[netip.Addr]struct{}
	relayIPs map[netip.Addr]struct{} // RelayIP and RelayIP6

	mu   sync.RWMutex
	live map[netip.AddrPort]int // relayed addresses of open relay sockets
}

func newPeerPolicy(relayIPs, own []netip.Addr, allow []netip.Prefix) *peerPolicy {
	p := &peerPolicy{relayIPs: map[netip.Addr]struct{}{}, own: map[netip.Addr]struct{}{}, live: map[netip.AddrPort]int{}}
	for _, a := range relayIPs {
		if a = canonical(a); a.IsValid() {
			p.relayIPs[a] = struct{}{}
			p.own[a] = struct{}{}
		}
	}
	for _, a := range own {
		if a = canonical(a); a.IsValid() && !a.IsUnspecified() {
			p.own[a] = struct{}{}
		}
	}
	for _, pr := range allow {
		if pr.IsValid() {
			p.allow = append(p.allow, canonicalPrefix(pr))
		}
	}
	return p
}

// permitIP is pion's PermissionHandler check, by IP only: the relay's own
// IPs pass (peers' relayed addresses carry them) and writes then check the
// port.
func (p *peerPolicy) permitIP(a netip.Addr) bool {
	a = canonical(a)
	_, relay := p.relayIPs[a]
	return relay || p.open(a)
}

// writable reports whether a relay socket may send to dst.
func (p *peerPolicy) writable(dst netip.AddrPort) bool {
	dst = netip.AddrPortFrom(canonical(dst.Addr()), dst.Port())
	p.mu.RLock()
	_, live := p.live[dst]
	p.mu.RUnlock()
	return live || p.open(dst.Addr())
}

// open reports whether a is a peer address outside the server: not one of
// its own, and not in a denied range unless AllowPeers has it. Addresses
// embedding IPv4 are judged by the IPv4 address too.
func (p *peerPolicy) open(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	if _, own := p.own[a]; own {
		return false
	}
	for _, pr := range p.allow {
		if pr.Contains(a) {
			return true
		}
	}
	for _, pr := range deniedPrefixes {
		if pr.Contains(a) {
			return false
		}
	}
	if v4, ok := embeddedV4(a); ok {
		return p.open(v4)
	}
	return true
}

func (p *peerPolicy) addLive(a netip.AddrPort) {
	a = netip.AddrPortFrom(canonical(a.Addr()), a.Port())
	p.mu.Lock()
	p.live[a]++
	p.mu.Unlock()
}

func (p *peerPolicy) removeLive(a netip.AddrPort) {
	a = netip.AddrPortFrom(canonical(a.Addr()), a.Port())
	p.mu.Lock()
	if p.live[a]--; p.live[a] <= 0 {
		delete(p.live, a)
	}
	p.mu.Unlock()
}

// ownAddr returns a's IP when it is one (a socket's or listener's local
// address).
func ownAddr(a net.Addr) (netip.Addr, bool) {
	if a == nil {
		return netip.Addr{}, false
	}
	ap := addrPortOf(a)
	return ap.Addr(), ap.Addr().IsValid()
}
