package p2p

import (
	"net/netip"
	"testing"

	"github.com/gamewire/gamewire/internal/udpbatch"
	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/p2p/internal/path"
)

// kindSocket is a path.Socket that only has a kind.
type kindSocket path.Kind

func (k kindSocket) WriteTo([]byte, netip.AddrPort) error { return nil }
func (k kindSocket) WriteBatch([]udpbatch.Message) error  { return nil }
func (k kindSocket) Kind() path.Kind                      { return path.Kind(k) }
func (k kindSocket) Closed() bool                         { return false }

// TestPickBetterRanksTheHandshakeRoute: the route a session was
// established on carries its own candidate's priority, whether or not a
// check validated it yet, so a worse route's check finishing later (IPv4
// server-reflexive beside the IPv6 host route the handshake took) does not
// outrank it while the session settles. A better validated path still
// replaces it, and any direct path replaces the relay.
func TestPickBetterRanksTheHandshakeRoute(t *testing.T) {
	host6 := netip.MustParseAddrPort("[2001:db8:2::2]:4000")
	srflx4 := netip.MustParseAddrPort("203.0.113.21:4000")
	relayed := netip.MustParseAddrPort("198.51.100.7:5000")
	var prefixes []netip.Prefix
	direct, relay := kindSocket(path.Direct), kindSocket(path.Relay)
	sockOf := func(nat.Path) path.Socket { return direct }
	prio := func(a netip.AddrPort, k nat.Kind) uint32 {
		return uint32(nat.Priority(nat.Candidate{Addr: a, Kind: k}, prefixes))
	}
	v4 := nat.Path{Remote: srflx4, Kind: nat.KindServerRefl, Priority: int(prio(srflx4, nat.KindServerRefl))}
	v6 := nat.Path{Remote: host6, Kind: nat.KindHost, Priority: int(prio(host6, nat.KindHost))}
	for _, tc := range []struct {
		name     string
		best     nat.Path
		ok       bool
		remote   netip.AddrPort
		sock     path.Socket
		kind     nat.Kind
		want     netip.AddrPort
		wantPref uint32
	}{
		{"nothing validated yet", nat.Path{}, false, host6, direct, nat.KindHost, host6, prio(host6, nat.KindHost)},
		{"a worse path validated", v4, true, host6, direct, nat.KindHost, host6, prio(host6, nat.KindHost)},
		{"the same path validated", v6, true, host6, direct, nat.KindHost, host6, prio(host6, nat.KindHost)},
		{"a better path validated", v6, true, srflx4, direct, nat.KindServerRefl, host6, prio(host6, nat.KindHost)},
		{"relayed, nothing validated", nat.Path{}, false, relayed, relay, nat.KindPeerRefl, relayed, 0},
		{"relayed, a direct path validated", v4, true, relayed, relay, nat.KindPeerRefl, srflx4, prio(srflx4, nat.KindServerRefl)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, pref := pickBetter(tc.best, tc.ok, tc.remote, tc.sock, tc.kind, prefixes, sockOf)
			if got != tc.want || pref != tc.wantPref {
				t.Errorf("got %v pref %d, want %v pref %d", got, pref, tc.want, tc.wantPref)
			}
			if tc.ok && got == tc.remote && uint32(tc.best.Priority) > pref {
				t.Errorf("the validated %v (pref %d) outranks the route kept (pref %d)", tc.best.Remote, tc.best.Priority, pref)
			}
		})
	}
}
