package netlab

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// setTTL sets the TTL of c's datagrams.
func setTTL(t *testing.T, c *net.UDPConn, ttl int) {
	t.Helper()
	if err := ipv4.NewPacketConn(c).SetTTL(ttl); err != nil {
		t.Fatal(err)
	}
}

// TestHops: the public segment counts as Lab.Hops routers. A datagram
// from behind one NAT needs a TTL of at least hops+2 to reach the server,
// and arrives with its TTL less the NAT's hop and the segment's.
func TestHops(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab(t, "hops")
	if l.Hops() != DefaultHops {
		t.Fatalf("Hops() = %d, want the default %d", l.Hops(), DefaultHops)
	}
	srv := openServer(t, l)
	site := addSite(t, l, "h", SiteConfig{NAT: NATPortRestricted})
	c := udp(t, site.Hosts[0], ":0")
	pc := ipv4.NewPacketConn(srv.a1)
	if err := pc.SetControlMessage(ipv4.FlagTTL, true); err != nil {
		t.Fatal(err)
	}
	arrives := func(ttl int) (int, bool) {
		setTTL(t, c, ttl)
		token := []byte("ttl:" + newNonce())
		for range probeTries {
			if _, err := c.WriteToUDPAddrPort(token, srv.A1); err != nil {
				t.Fatal(err)
			}
			srv.a1.SetReadDeadline(time.Now().Add(probeWait))
			buf := make([]byte, 1500)
			for {
				n, cm, _, err := pc.ReadFrom(buf)
				if err != nil {
					break
				}
				if string(buf[:n]) == string(token) && cm != nil {
					return cm.TTL, true
				}
			}
		}
		return 0, false
	}
	if _, ok := arrives(DefaultHops + 1); ok {
		t.Errorf("a datagram with TTL %d reached the server across one NAT and %d hops", DefaultHops+1, DefaultHops)
	}
	if got, ok := arrives(DefaultHops + 2); !ok || got != 1 {
		t.Errorf("TTL %d: arrived %v with TTL %d, want true with 1", DefaultHops+2, ok, got)
	}
	if got, ok := arrives(64); !ok || got != 64-1-DefaultHops {
		t.Errorf("TTL 64: arrived %v with TTL %d, want %d", ok, got, 64-1-DefaultHops)
	}
	if _, err := New(Options{Hops: MaxHops + 1}); err == nil {
		t.Error("New accepted Hops above MaxHops")
	}
}

// TestAcceptInboundClash reproduces the conntrack clash of NATs that
// accept inbound UDP to their own address, and its cure. Peer B's datagram
// reaches A's NAT before A has sent to B: with AcceptInbound the NAT
// records it as a flow to itself, and A's datagram to B then leaves from
// another port, which B's NAT does not let in. A filtering NAT drops B's
// early datagram and A gets through. Priming cures it: A first sends a
// datagram with a TTL that opens its own NAT's mapping toward B but dies
// on the way, and B's early datagram is then a reply.
func TestAcceptInboundClash(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	l := newLab(t, "clash")
	srv := openServer(t, l)
	for _, tc := range []struct {
		name   string
		accept bool
		outer  NATKind
	}{
		{"filter", false, ""},
		{"accept", true, ""},
		{"acceptdbl", true, NATPortRestricted},
	} {
		a := addSite(t, l, tc.name+"a", SiteConfig{NAT: NATPortRestricted, Outer: tc.outer, AcceptInbound: tc.accept})
		b := addSite(t, l, tc.name+"b", SiteConfig{NAT: NATPortRestricted, AcceptInbound: tc.accept})
		ca, cb := udp(t, a.Hosts[0], ":0"), udp(t, b.Hosts[0], ":0")
		ma, mb := mapped(t, ca, srv.A1, srv.a1), mapped(t, cb, srv.A1, srv.a1)
		if _, err := cb.WriteToUDPAddrPort([]byte("early"), ma); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the early datagram has arrived
		from, ok, err := exchange(ca, mb, cb, "late:"+newNonce(), probeTries)
		if err != nil {
			t.Fatal(err)
		}
		if ok == tc.accept {
			t.Errorf("%s: after B's early datagram, A's reached B: %v (from %v), want %v", tc.name, ok, from, !tc.accept)
		}
		if ok && from != ma {
			t.Errorf("%s: A's datagram came from %v, want its mapping %v", tc.name, from, ma)
		}

		// Fresh sockets, A primes first: a TTL that passes A's NAT layers
		// (one hop each) and dies on the public segment.
		ca, cb = udp(t, a.Hosts[0], ":0"), udp(t, b.Hosts[0], ":0")
		ma, mb = mapped(t, ca, srv.A1, srv.a1), mapped(t, cb, srv.A1, srv.a1)
		setTTL(t, ca, len(a.Routers)+1)
		if _, err := ca.WriteToUDPAddrPort([]byte("prime"), mb); err != nil {
			t.Fatal(err)
		}
		setTTL(t, ca, 64)
		time.Sleep(20 * time.Millisecond)
		from, ok, err = exchange(cb, ma, ca, "early:"+newNonce(), probeTries)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || from != mb {
			t.Errorf("%s: after A primed, B's datagram reached A: %v from %v, want true from %v", tc.name, ok, from, mb)
		}
		if from, ok := reachesFrom(t, ca, mb, cb); !ok || from != ma {
			t.Errorf("%s: after A primed, A's datagram reached B: %v from %v, want true from %v", tc.name, ok, from, ma)
		}
	}
}

// TestStaleEntry: an entry StaleEntry made clashes like one a datagram
// made, on a NAT that filters inbound datagrams too.
func TestStaleEntry(t *testing.T) {
	t.Parallel()
	leakcheck.Check(t)
	if _, err := tool("conntrack"); err != nil {
		Require(t) // skips, or fails under GAMEWIRE_REQUIRE_LAB, before a missing tool matters
		if os.Getenv("GAMEWIRE_REQUIRE_LAB") != "" {
			t.Fatal("the conntrack tool is missing (Debian package conntrack)")
		}
		t.Skip("the conntrack tool is missing (Debian package conntrack)")
	}
	l := newLab(t, "stale")
	srv := openServer(t, l)
	a := addSite(t, l, "a", SiteConfig{NAT: NATPortRestricted})
	b := addSite(t, l, "b", SiteConfig{NAT: NATPortRestricted})
	for _, stale := range []bool{false, true} {
		ca, cb := udp(t, a.Hosts[0], ":0"), udp(t, b.Hosts[0], ":0")
		ma, mb := mapped(t, ca, srv.A1, srv.a1), mapped(t, cb, srv.A1, srv.a1)
		if stale {
			if err := a.StaleEntry(mb, ma); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := cb.WriteToUDPAddrPort([]byte("early"), ma); err != nil { // opens B's NAT toward A
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if _, ok := reachesFrom(t, ca, mb, cb); ok == stale {
			t.Errorf("stale entry %v: A's datagram reached B: %v", stale, ok)
		}
	}
}

func reachesFrom(t *testing.T, c *net.UDPConn, dst netip.AddrPort, rcv *net.UDPConn) (netip.AddrPort, bool) {
	t.Helper()
	from, ok, err := exchange(c, dst, rcv, "reach:"+newNonce(), probeTries)
	if err != nil {
		t.Fatal(err)
	}
	return from, ok
}
