package p2p

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/netlab"
	"github.com/gamewire/gamewire/nat/portmap"
)

// startLabUPnPd runs miniupnpd on site's router, learning its public
// address from the lab's rendezvous server (RFC 5780: another address and
// port for the alternate).
func (e *labEnv) startLabUPnPd(t testing.TB, site *netlab.Site) *netlab.MiniUPnPd {
	t.Helper()
	a := e.lab.ServerAddrs()
	return netlab.StartMiniUPnPd(t, site, netlab.MiniUPnPdConfig{
		STUN:          netip.AddrPortFrom(a[0], labServerPort),
		STUNAlternate: netip.AddrPortFrom(a[1], labServerPort+1),
	})
}

// waitPortMapped waits for n's port mapping.
func waitPortMapped(t testing.TB, n *Node) portmap.Mapping {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if r := n.NATType(); r.PortMapping.Valid() {
			return r.PortMapping
		}
	}
	t.Fatalf("no port mapping within 10 s: %v", n.NATType())
	return portmap.Mapping{}
}

// redirected reports whether miniupnpd forwards UDP ext to in.
func redirected(t *testing.T, d *netlab.MiniUPnPd, ext uint16, in netip.AddrPort) bool {
	t.Helper()
	rs, err := d.Redirects()
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(rs, netlab.Redirect{Protocol: "udp", ExternalPort: ext, Internal: in})
}

// TestLabPortMapping: two symmetric NATs, where punching cannot work, one
// of whose routers offers port mapping (miniupnpd: UPnP IGD, NAT-PMP,
// PCP). The node behind it maps its port, reports NATTypeOpen, advertises
// the mapping, and the pair goes direct through it with the relay
// forbidden, every run; the mapping is in the router's table while the
// node runs and gone once it has closed. (The NAT matrix runs the same
// pair, and others, 20 times with GAMEWIRE_LONG.)
func TestLabPortMapping(t *testing.T) {
	netlab.RequireMiniUPnPd(t)
	leakcheck.Check(t)
	e := newLabEnv(t, "pmap", 0)
	a, b := e.sitePair(t, "sym", netlab.SiteConfig{NAT: netlab.NATSymmetric})
	upnpd := e.startLabUPnPd(t, a)
	cfg := Config{ConnectTimeout: 10 * time.Second, DisableRelay: true}
	for run := range directRuns() {
		na, closeA := e.node(t, a.Hosts[0], cfg, false)
		nb, closeB := e.node(t, b.Hosts[0], cfg, false)
		m := waitPortMapped(t, na)
		local := netip.AddrPortFrom(a.Hosts[0].IP, addrOfConn(na.main.pc).Port())
		if !redirected(t, upnpd, m.External.Port(), local) {
			t.Errorf("run %d: mapping %v → %v not in miniupnpd's table", run, m.External, local)
		}
		if r := na.NATType(); r.Type != NATTypeOpen || r.Mapping.String() != "endpoint-dependent" {
			t.Errorf("run %d: a's NAT %v, want Open with a mapping per destination under it", run, r)
		}
		if r := nb.NATType(); r.PortMapping.Valid() {
			t.Errorf("run %d: b has a mapping %v from a router without port mapping", run, r.PortMapping)
		}
		e.waitRegistered(t, na, nb)
		d := connectPair(t, na, nb, func() {}, func() {})
		st, _ := nb.GetP2PSessionState(na.PeerID())
		if st.Path != PathDirect || st.RemoteAddr != m.External {
			t.Errorf("run %d: b reaches a via %v (%v), want direct to the mapping %v", run, st.RemoteAddr, st.Path, m.External)
		}
		exchange(t, na, nb, false)
		exchange(t, nb, na, false)
		t.Logf("run %d: %v, connected in %v via the mapping %v", run, m.Protocol, d, m.External)
		closeA()
		closeB()
		if !gone(t, upnpd, m.External.Port(), local) {
			t.Errorf("run %d: mapping %v still in miniupnpd's table after Close", run, m.External)
		}
	}

}

// TestLabPortMappingRelayAllowed: with the relay allowed, two symmetric
// NATs without a mapping take the relay at once; with a mapping on one
// side the pair gives direct paths the relay's budget, and goes direct
// with no TURN allocation. Every datagram takes 20 ms more each way, so
// the connection outlasts the relay's first look at it (a tick).
func TestLabPortMappingRelayAllowed(t *testing.T) {
	netlab.RequireMiniUPnPd(t)
	leakcheck.Check(t)
	e := newLabEnvWith(t, "pmaprelay", 20*time.Millisecond, true)
	a, b := e.sitePair(t, "sym", netlab.SiteConfig{NAT: netlab.NATSymmetric})
	e.startLabUPnPd(t, a)
	na, closeA := e.node(t, a.Hosts[0], Config{}, false)
	defer closeA()
	nb, closeB := e.node(t, b.Hosts[0], Config{}, false)
	defer closeB()
	waitPortMapped(t, na)
	e.waitRegistered(t, na, nb)
	before := e.srv.Relay().Stats().Allocations
	d := connectPair(t, na, nb, func() {}, func() {})
	st, _ := nb.GetP2PSessionState(na.PeerID())
	allocs := e.srv.Relay().Stats().Allocations - before
	t.Logf("connected in %v via %v (%v), %d TURN allocations", d, st.RemoteAddr, st.Path, allocs)
	if st.Path != PathDirect || allocs != 0 {
		t.Errorf("path %v via %v, %d TURN allocations; want direct, none", st.Path, st.RemoteAddr, allocs)
	}
}

// gone waits up to a second for miniupnpd to drop the redirect (its table
// lags the deletion by nothing, but a PCP deletion is answered before the
// daemon rewrites its rules).
func gone(t *testing.T, d *netlab.MiniUPnPd, ext uint16, in netip.AddrPort) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for redirected(t, d, ext, in) {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}
