package netlab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// miniupnpd: Debian's UPnP IGD, NAT-PMP and PCP daemon (packages miniupnpd
// and miniupnpd-nftables), run inside a site's NAT router so that LAN hosts
// can ask the router for port mappings.
//
// What StartMiniUPnPd changes in the router's namespace:
//
//   - A table inet gwupnp holding the chains miniupnpd 2.3 expects to exist
//     (it only adds rules to them): a forward filter chain (policy accept:
//     gwnat's forward chain still filters, and lets in what a DNAT mapped)
//     jumping to chain miniupnpd, and nat prerouting/postrouting chains
//     jumping to prerouting_miniupnpd and postrouting_miniupnpd.
//   - Rules inserted at the top of gwnat's input chain, which otherwise
//     drops everything the router did not start: from the LAN, UDP to 1900
//     (SSDP) and 5351 (NAT-PMP, PCP) and TCP to the HTTP port (UPnP
//     descriptions and SOAP control); from the WAN, UDP from the STUN
//     server's two addresses and ports, for miniupnpd's startup check that
//     no filter stands between it and the internet (its RFC 5780 requests
//     ask for answers from the other address and port). Site.ChangeMappings
//     replaces table gwnat and with it these rules.
//
// The lab's public addresses are documentation ranges, which miniupnpd
// treats as private: it refuses to map unless ext_perform_stun learns the
// public address from a STUN server and finds no filtering in between.
// Hence MiniUPnPdConfig.STUN: a rendezvous server on the lab's server host,
// started with an alternate address (rendezvous.Listen), answers it.

// MiniUPnPdConfig configures StartMiniUPnPd.
type MiniUPnPdConfig struct {
	// STUN and STUNAlternate are the primary and alternate addresses of an
	// RFC 5780 STUN server on the public segment (another IP and another
	// port). Required.
	STUN, STUNAlternate netip.AddrPort
	// HTTPPort is the TCP port of the UPnP description and control URLs;
	// 0 means 2189.
	HTTPPort uint16
	// MinLifetime and MaxLifetime bound the lifetimes the daemon grants
	// PCP and NAT-PMP mappings (its min_lifetime and max_lifetime); zero
	// means miniupnpd's defaults, 120 s and 86400 s.
	MinLifetime, MaxLifetime time.Duration
}

// MiniUPnPd is a miniupnpd process running in a site's NAT router.
type MiniUPnPd struct {
	Router   *Host
	Gateway  netip.Addr // the router's LAN address, where the daemon listens
	HTTPPort uint16

	lanNet    netip.Prefix
	leaseFile string
	log       *lockedBuffer
	exited    chan struct{}
}

// MiniUPnPdPath returns the path of the miniupnpd binary, or an error
// saying how to install it.
func MiniUPnPdPath() (string, error) {
	p, err := tool("miniupnpd")
	if err != nil {
		return "", errors.New("miniupnpd is not installed (apt-get install miniupnpd miniupnpd-nftables)")
	}
	return p, nil
}

// RequireMiniUPnPd is Require plus a check that miniupnpd is installed:
// it skips the test when not, or fails it when GAMEWIRE_REQUIRE_LAB=1.
func RequireMiniUPnPd(tb testing.TB) {
	tb.Helper()
	Require(tb)
	if _, err := MiniUPnPdPath(); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			tb.Fatalf("%v (%s=1: lab tests are mandatory here)", err, RequireEnv)
		}
		tb.Skip(err.Error())
	}
}

// StartMiniUPnPd runs miniupnpd in the router of site s (a site with one
// NAT layer) with UPnP IGD, NAT-PMP and PCP on, secure mode (a LAN host
// maps ports to itself only) and mappings of ports 1024-65535 allowed for
// the site's LAN. It waits until the daemon answers a NAT-PMP request
// from the site's first host with the site's public address (it has
// finished its STUN check and forwards), and ends it (its PID only) when
// the test ends. Its configuration, PID and lease files live in a
// temporary directory of the test.
func StartMiniUPnPd(tb testing.TB, s *Site, cfg MiniUPnPdConfig) *MiniUPnPd {
	tb.Helper()
	bin, err := MiniUPnPdPath()
	if err != nil {
		tb.Fatal(err)
	}
	if len(s.layers) != 1 {
		tb.Fatalf("netlab: StartMiniUPnPd: site %s has %d NAT layers, want 1", s.Name, len(s.layers))
	}
	if !cfg.STUN.IsValid() || !cfg.STUNAlternate.IsValid() {
		tb.Fatal("netlab: StartMiniUPnPd: STUN and STUNAlternate are required")
	}
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = 2189
	}
	n := s.layers[0]
	m := &MiniUPnPd{
		Router:   n.router,
		Gateway:  n.lanNet.Addr().Next(),
		HTTPPort: cfg.HTTPPort,
		lanNet:   n.lanNet,
		log:      &lockedBuffer{},
		exited:   make(chan struct{}),
	}
	if err := s.locked(func() error { return s.lab.nft(n.router.Namespace, miniupnpdScript(n, cfg)) }); err != nil {
		tb.Fatal(err)
	}

	dir := tb.TempDir()
	m.leaseFile = filepath.Join(dir, "upnp.leases")
	conf := filepath.Join(dir, "miniupnpd.conf")
	if err := os.WriteFile(conf, []byte(m.config(n, cfg, dir)), 0o600); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := n.router.Command(ctx, bin, "-d", "-f", conf, "-P", filepath.Join(dir, "miniupnpd.pid"))
	cmd.Stdout, cmd.Stderr = m.log, m.log
	// `ip netns exec` execs miniupnpd in place: the PID is the daemon's.
	// Ending it: SIGTERM (it removes its rules), SIGKILL after 5 s.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		tb.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(m.exited)
	}()
	tb.Cleanup(func() {
		cancel()
		<-m.exited
		if tb.Failed() {
			tb.Logf("miniupnpd log:\n%s", m.log.String())
		}
	})
	if err := m.waitReady(s); err != nil {
		tb.Fatalf("netlab: miniupnpd: %v\nlog:\n%s", err, m.log.String())
	}
	return m
}

// miniupnpdScript returns the nftables changes StartMiniUPnPd makes in the
// router (see the comment at the top of this file).
func miniupnpdScript(n *natLayer, cfg MiniUPnPdConfig) string {
	W, L := strconv.Quote(n.wan), strconv.Quote(n.lan)
	var b strings.Builder
	b.WriteString(`table inet gwupnp {
	chain forward {
		type filter hook forward priority 0; policy accept;
		jump miniupnpd
	}
	chain miniupnpd {
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump prerouting_miniupnpd
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		jump postrouting_miniupnpd
	}
	chain prerouting_miniupnpd {
	}
	chain postrouting_miniupnpd {
	}
}
`)
	fmt.Fprintf(&b, "insert rule ip gwnat input_filter iifname %s udp dport { 1900, 5351 } accept\n", L)
	fmt.Fprintf(&b, "insert rule ip gwnat input_filter iifname %s tcp dport %d accept\n", L, cfg.HTTPPort)
	fmt.Fprintf(&b, "insert rule ip gwnat input_filter iifname %s ip saddr { %s, %s } udp sport { %d, %d } accept\n",
		W, cfg.STUN.Addr(), cfg.STUNAlternate.Addr(), cfg.STUN.Port(), cfg.STUNAlternate.Port())
	return b.String()
}

func (m *MiniUPnPd) config(n *natLayer, cfg MiniUPnPdConfig, dir string) string {
	var uuid [16]byte
	rand.Read(uuid[:])
	uuid[6] = uuid[6]&0x0f | 0x40
	uuid[8] = uuid[8]&0x3f | 0x80
	u := fmt.Sprintf("%x-%x-%x-%x-%x", uuid[0:4], uuid[4:6], uuid[6:8], uuid[8:10], uuid[10:16])
	lines := []string{
		"ext_ifname=" + n.wan,
		"listening_ip=" + n.lan,
		"http_port=" + strconv.Itoa(int(cfg.HTTPPort)),
		"enable_upnp=yes",
		"enable_natpmp=yes", // NAT-PMP and PCP share it
		"ipv6_disable=yes",
		"ext_perform_stun=yes",
		"ext_stun_host=" + cfg.STUN.Addr().String(),
		"ext_stun_port=" + strconv.Itoa(int(cfg.STUN.Port())),
		"secure_mode=yes",
		"system_uptime=no",
		"notify_interval=60",
		"uuid=" + u,
		"lease_file=" + m.leaseFile,
		"minissdpdsocket=" + filepath.Join(dir, "minissdpd.sock"), // none there: no other daemon is asked
		"upnp_table_name=gwupnp",
		"upnp_nat_table_name=gwupnp",
		"upnp_forward_chain=miniupnpd",
		"upnp_nat_chain=prerouting_miniupnpd",
		"upnp_nat_postrouting_chain=postrouting_miniupnpd",
	}
	if cfg.MinLifetime > 0 {
		lines = append(lines, "min_lifetime="+strconv.Itoa(int(cfg.MinLifetime/time.Second)))
	}
	if cfg.MaxLifetime > 0 {
		lines = append(lines, "max_lifetime="+strconv.Itoa(int(cfg.MaxLifetime/time.Second)))
	}
	lines = append(lines,
		fmt.Sprintf("allow 1024-65535 %s 1024-65535", n.lanNet),
		"deny 0-65535 0.0.0.0/0 0-65535")
	return strings.Join(lines, "\n") + "\n"
}

// waitReady asks the daemon for its external address (NAT-PMP opcode 0)
// from the site's first host until it answers with the site's public
// address, for at most 15 s.
func (m *MiniUPnPd) waitReady(s *Site) error {
	pc, err := s.Hosts[0].ListenPacket("udp4", ":0")
	if err != nil {
		return err
	}
	defer pc.Close()
	gw := net.UDPAddrFromAddrPort(netip.AddrPortFrom(m.Gateway, 5351))
	buf := make([]byte, 64)
	var last string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		select {
		case <-m.exited:
			return errors.New("exited during startup")
		default:
		}
		pc.WriteTo([]byte{0, 0}, gw)
		pc.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			continue
		}
		if n != 12 || buf[0] != 0 || buf[1] != 128 {
			last = fmt.Sprintf("malformed answer % x", buf[:n])
			continue
		}
		ip := netip.AddrFrom4([4]byte(buf[8:12]))
		if code := binary.BigEndian.Uint16(buf[2:4]); code != 0 || ip != s.PublicIP {
			last = fmt.Sprintf("result %d, external address %v", code, ip)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		return nil
	}
	if last == "" {
		last = "no answer"
	}
	return fmt.Errorf("not ready after 15 s (NAT-PMP external address request: %s)", last)
}

// Log returns what the daemon has logged so far.
func (m *MiniUPnPd) Log() string { return m.log.String() }

// Redirect is one port mapping as the router's nftables rules hold it: a
// DNAT rule miniupnpd added to its prerouting chain.
type Redirect struct {
	Protocol     string // "udp" or "tcp"
	ExternalPort uint16
	Internal     netip.AddrPort
}

// Redirects lists the DNAT rules in miniupnpd's prerouting chain, read
// from the kernel (`nft -j list chain`): the mappings in force.
func (m *MiniUPnPd) Redirects() ([]Redirect, error) {
	ip, err := tool("ip")
	if err != nil {
		return nil, err
	}
	nft, err := tool("nft")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, ip, "netns", "exec", m.Router.Namespace, nft, "-j",
		"list", "chain", "inet", "gwupnp", "prerouting_miniupnpd").Output()
	if err != nil {
		return nil, fmt.Errorf("netlab: nft list chain: %w", err)
	}
	return parseRedirects(out)
}

// parseRedirects reads `nft -j` output. miniupnpd's DNAT rules match the
// IP protocol byte as a raw payload (@nh,72,8: 17 UDP, 6 TCP), the port as
// th dport, and end in a dnat with addr and port.
func parseRedirects(js []byte) ([]Redirect, error) {
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Expr []map[string]json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("netlab: nft -j output: %w", err)
	}
	var rs []Redirect
	for _, item := range doc.Nftables {
		if item.Rule == nil {
			continue
		}
		var r Redirect
		var addr netip.Addr
		var port uint16
		for _, e := range item.Rule.Expr {
			if raw, ok := e["match"]; ok {
				var mt struct {
					Left struct {
						Payload struct {
							Protocol string `json:"protocol"`
							Field    string `json:"field"`
							Base     string `json:"base"`
							Offset   int    `json:"offset"`
							Len      int    `json:"len"`
						} `json:"payload"`
					} `json:"left"`
					Right json.RawMessage `json:"right"`
				}
				if json.Unmarshal(raw, &mt) != nil {
					continue
				}
				var v uint16
				if json.Unmarshal(mt.Right, &v) != nil {
					continue
				}
				switch pl := mt.Left.Payload; {
				case pl.Field == "dport":
					r.ExternalPort = v
				case pl.Base == "nh" && pl.Offset == 72 && pl.Len == 8 && v == 17:
					r.Protocol = "udp"
				case pl.Base == "nh" && pl.Offset == 72 && pl.Len == 8 && v == 6:
					r.Protocol = "tcp"
				}
			}
			if raw, ok := e["dnat"]; ok {
				var d struct {
					Addr string `json:"addr"`
					Port uint16 `json:"port"`
				}
				if err := json.Unmarshal(raw, &d); err == nil {
					addr, _ = netip.ParseAddr(d.Addr)
					port = d.Port
				}
			}
		}
		if addr.IsValid() && r.ExternalPort != 0 {
			r.Internal = netip.AddrPortFrom(addr, port)
			rs = append(rs, r)
		}
	}
	return rs, nil
}
