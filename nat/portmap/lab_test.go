package portmap_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/netlab"
	"github.com/gamewire/gamewire/nat/portmap"
	"github.com/gamewire/gamewire/rendezvous"
)

// portmapLab is a lab with a symmetric-NAT site whose router runs
// miniupnpd, and a rendezvous server on the public segment (the STUN
// server miniupnpd learns its public address from, and the external host
// that sends to the mappings).
type portmapLab struct {
	lab   *netlab.Lab
	site  *netlab.Site
	host  *netlab.Host // the LAN host the client runs on
	upnpd *netlab.MiniUPnPd
}

func newPortmapLab(t *testing.T, daemon netlab.MiniUPnPdConfig) *portmapLab {
	t.Helper()
	netlab.RequireMiniUPnPd(t)
	l := netlab.NewForTest(t, netlab.Options{Name: "portmap"})
	site, err := l.AddSite("home", netlab.SiteConfig{NAT: netlab.NATSymmetric})
	if err != nil {
		t.Fatal(err)
	}
	a := l.ServerAddrs()
	primary, alt := netip.AddrPortFrom(a[0], 3478), netip.AddrPortFrom(a[1], 3479)
	var srv *rendezvous.Server
	if err := l.Server().Do(func() (err error) {
		srv, err = rendezvous.Listen(rendezvous.ServerConfig{}, []netip.AddrPort{primary}, []netip.AddrPort{alt})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	daemon.STUN, daemon.STUNAlternate = primary, alt
	return &portmapLab{lab: l, site: site, host: site.Hosts[0], upnpd: netlab.StartMiniUPnPd(t, site, daemon)}
}

// config returns a Config that runs the client in the LAN host's
// namespace.
func (e *portmapLab) config(t *testing.T, port uint16, protos ...portmap.Protocol) portmap.Config {
	h := e.host
	return portmap.Config{
		LocalPort: port,
		Gateway:   e.upnpd.Gateway,
		Protocols: protos,
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Dial:      h.DialContext,
		ListenPacket: func(_ context.Context, network, address string) (net.PacketConn, error) {
			return h.ListenPacket(network, address)
		},
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// redirected reports whether miniupnpd's DNAT rules map UDP ext to in.
func (e *portmapLab) redirected(t *testing.T, ext uint16, in netip.AddrPort) bool {
	t.Helper()
	rs, err := e.upnpd.Redirects()
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(rs, netlab.Redirect{Protocol: "udp", ExternalPort: ext, Internal: in})
}

// reaches sends a datagram from a fresh socket on the server host to to
// and reports whether sock receives it within wait. If it does, sock
// answers, and the answer must reach the sender from to: the way back
// through the NAT is the mapping too.
func (e *portmapLab) reaches(t *testing.T, sock *net.UDPConn, to netip.AddrPort, wait time.Duration) bool {
	t.Helper()
	out, err := e.lab.Server().ListenUDP(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	msg := fmt.Appendf(nil, "hello %v", to)
	buf := make([]byte, 256)
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); {
		if _, err := out.WriteToUDPAddrPort(msg, to); err != nil {
			t.Fatal(err)
		}
		sock.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, from, err := sock.ReadFromUDPAddrPort(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			continue
		}
		if from.Addr() != e.lab.Server().IP {
			t.Fatalf("datagram to %v arrived from %v, want the server %v", to, from, e.lab.Server().IP)
		}
		if _, err := sock.WriteToUDPAddrPort([]byte("reply"), from); err != nil {
			t.Fatal(err)
		}
		out.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, back, err := out.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != "reply" {
			t.Fatalf("no reply through the mapping: %v", err)
		}
		if back != to {
			t.Fatalf("reply came from %v, want the mapping %v", back, to)
		}
		return true
	}
	return false
}

// TestLabPortMapping maps a LAN socket behind a symmetric NAT with each
// protocol in turn through miniupnpd in the NAT router, and checks that
// the mapping is the site's public address, is in the router's DNAT
// rules, lets a host on the internet reach the socket (which nothing
// else does through a symmetric NAT), and is gone after Close.
func TestLabPortMapping(t *testing.T) {
	leakcheck.Check(t)
	e := newPortmapLab(t, netlab.MiniUPnPdConfig{})
	var gw netip.Addr
	if err := e.host.Do(func() (err error) {
		gw, err = portmap.DefaultGateway()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if gw != e.upnpd.Gateway {
		t.Fatalf("DefaultGateway in the LAN host = %v, want the router %v", gw, e.upnpd.Gateway)
	}

	t.Run("probe", func(t *testing.T) {
		c, err := portmap.New(e.config(t, 40000))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		a, err := c.Probe(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if want := (portmap.Availability{Gateway: gw, PCP: true, NATPMP: true, UPnP: true}); a != want {
			t.Fatalf("Probe = %+v, want %+v", a, want)
		}
	})

	for _, proto := range []portmap.Protocol{portmap.PCP, portmap.NATPMP, portmap.UPnP} {
		t.Run(string(proto), func(t *testing.T) {
			sock, err := e.host.ListenUDP(":0")
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			port := uint16(sock.LocalAddr().(*net.UDPAddr).Port)
			internal := netip.AddrPortFrom(e.host.IP, port)
			if e.reaches(t, sock, netip.AddrPortFrom(e.site.PublicIP, port), 300*time.Millisecond) {
				t.Fatal("the server reached the LAN socket before any mapping")
			}

			c, err := portmap.New(e.config(t, port, proto))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			m, err := c.Map(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s mapping: %+v", proto, m)
			if m.Protocol != proto || m.External.Addr() != e.site.PublicIP || m.Internal != internal || m.Gateway != gw {
				t.Fatalf("mapping %+v: want protocol %s, external address %v, internal %v", m, proto, e.site.PublicIP, internal)
			}
			if !e.redirected(t, m.External.Port(), internal) {
				t.Fatalf("no DNAT rule for %v -> %v in the router", m.External, internal)
			}
			if !e.reaches(t, sock, m.External, 3*time.Second) {
				t.Fatalf("the server did not reach the LAN socket through %v", m.External)
			}

			if err := c.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if e.redirected(t, m.External.Port(), internal) {
				t.Fatalf("the DNAT rule for %v is still there after Close", m.External)
			}
			if e.reaches(t, sock, m.External, 500*time.Millisecond) {
				t.Fatalf("the server still reaches the LAN socket through %v after Close", m.External)
			}
			if _, err := c.Map(ctx); err != portmap.ErrClosed {
				t.Fatalf("Map after Close: %v, want ErrClosed", err)
			}
		})
	}
}

// TestLabPortMappingRenewal asks for 3 s mappings (miniupnpd removes a
// mapping when its lifetime ends) and checks that the client's renewals
// keep them in the router's rules, and reachable, well past that.
func TestLabPortMappingRenewal(t *testing.T) {
	leakcheck.Check(t)
	e := newPortmapLab(t, netlab.MiniUPnPdConfig{MinLifetime: 2 * time.Second})
	for _, proto := range []portmap.Protocol{portmap.PCP, portmap.NATPMP, portmap.UPnP} {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			sock, err := e.host.ListenUDP(":0")
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			port := uint16(sock.LocalAddr().(*net.UDPAddr).Port)
			internal := netip.AddrPortFrom(e.host.IP, port)
			cfg := e.config(t, port, proto)
			cfg.Lifetime = 3 * time.Second
			changes := make(chan portmap.Mapping, 8)
			cfg.OnChange = func(m portmap.Mapping) { changes <- m }
			c, err := portmap.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			m, err := c.Map(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if m.Lifetime != 3*time.Second {
				t.Fatalf("granted lifetime %v, want 3s", m.Lifetime)
			}
			time.Sleep(6500 * time.Millisecond)
			if st := c.Stats(); st.Renewals < 3 || st.Lost != 0 {
				t.Fatalf("after 6.5 s of 3 s mappings: %+v, want at least 3 renewals and none lost", st)
			}
			cur, ok := c.Current()
			if !ok || cur.External != m.External || !cur.Expires.After(m.Expires.Add(3*time.Second)) {
				t.Fatalf("current mapping %+v (ok %v), want %v renewed past %v", cur, ok, m.External, m.Expires.Add(3*time.Second))
			}
			if !e.redirected(t, m.External.Port(), internal) {
				t.Fatalf("the DNAT rule for %v expired despite the renewals", m.External)
			}
			if !e.reaches(t, sock, m.External, 3*time.Second) {
				t.Fatalf("the server no longer reaches the LAN socket through %v", m.External)
			}
			select {
			case ch := <-changes:
				t.Fatalf("OnChange(%+v) while the mapping stayed the same", ch)
			default:
			}
			if err := c.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if e.redirected(t, m.External.Port(), internal) {
				t.Fatalf("the DNAT rule for %v is still there after Close", m.External)
			}
		})
	}
}
