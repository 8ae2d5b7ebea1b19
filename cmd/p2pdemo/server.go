package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

const serverSummary = `p2pdemo server: the rendezvous service (registration, introductions), STUN
(RFC 5780 with --listen2) and an embedded TURN relay, on UDP and TCP at the
--listen port; or, with --external-turn, credentials for a real coturn
configured with use-auth-secret and the same secret. Prints its key, the
ports to open and a status line; stops cleanly on SIGINT or SIGTERM.`

type serverFlags struct {
	listen, listen2 string
	relayIP         string
	relayPorts      string
	relayAllow      prefixList
	relayMaxPerIP   int
	secret          string
	secretFile      string
	externalTURN    string
	identity        string
	status          time.Duration
}

func parseServerFlags(args []string, stderr io.Writer) (serverFlags, error) {
	var f serverFlags
	fs := newFlags("server", serverSummary, stderr)
	fs.StringVar(&f.listen, "listen", "0.0.0.0:3478", "`HOST:PORT` for rendezvous, STUN and TURN, UDP and TCP")
	fs.StringVar(&f.listen2, "listen2", "", "a second `HOST:PORT` (another IP and port) for RFC 5780 NAT behaviour tests")
	fs.StringVar(&f.relayIP, "relay-ip", "", "the public `IP` put in relayed addresses (default: the --listen IP; required when that is 0.0.0.0 or behind a 1:1 NAT)")
	fs.StringVar(&f.relayPorts, "relay-ports", "49152-65535", "UDP port range `MIN-MAX` for relay allocations")
	fs.Var(&f.relayAllow, "relay-allow", "let the relay reach peers in `CIDR`, a range it refuses by default (private, loopback, link-local, CGNAT...; as coturn's allowed-peer-ip); repeat or comma-separate for several")
	fs.IntVar(&f.relayMaxPerIP, "relay-max-per-ip", 0, fmt.Sprintf("at most `N` relay allocations from one client IP (an IPv6 client's /64) (0: %d)", relay.DefaultMaxPerIP))
	fs.StringVar(&f.secret, "turn-secret", "", "TURN use-auth-secret shared with coturn (default: random, for the embedded relay only)")
	fs.StringVar(&f.secretFile, "turn-secret-file", "", "read the TURN secret from `FILE` (keeps it out of the process list)")
	fs.StringVar(&f.externalTURN, "external-turn", "", "use this TURN server instead of the embedded one: `URL` turn:HOST:PORT[?transport=tcp] or turns:HOST:PORT; comma-separated for several")
	fs.StringVar(&f.identity, "identity", "", "keep the server's key in `FILE` (created if missing), so peers can pin it across restarts")
	fs.DurationVar(&f.status, "status", 5*time.Second, "status line interval (0: none)")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("server: unexpected argument %q", fs.Arg(0))
	}
	if f.secret != "" && f.secretFile != "" {
		return f, errors.New("server: give --turn-secret or --turn-secret-file, not both")
	}
	if f.relayMaxPerIP < 0 {
		return f, fmt.Errorf("server: --relay-max-per-ip %d: want 0 or more", f.relayMaxPerIP)
	}
	if f.externalTURN != "" && (len(f.relayAllow) > 0 || f.relayMaxPerIP != 0) {
		return f, errors.New("server: --relay-allow and --relay-max-per-ip set the embedded relay, not an --external-turn (configure that one's allowed-peer-ip and quotas)")
	}
	return f, nil
}

// prefixList is a repeatable flag of CIDR prefixes, comma-separated too;
// a bare IP is its own /32 or /128.
type prefixList []netip.Prefix

func (l *prefixList) String() string {
	if l == nil {
		return ""
	}
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (l *prefixList) Set(v string) error {
	for _, one := range strings.Split(v, ",") {
		one = strings.TrimSpace(one)
		p, err := netip.ParsePrefix(one)
		if err != nil {
			a, aerr := netip.ParseAddr(one)
			if aerr != nil {
				return fmt.Errorf("%q is no CIDR prefix (such as 10.0.0.0/8) or IP", one)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		*l = append(*l, p.Masked())
	}
	return nil
}

// serverSetup is what runServer built: the server and what to print.
type serverSetup struct {
	srv      *rendezvous.Server
	primary  netip.AddrPort
	relayMin uint16
	relayMax uint16
	external []rendezvous.TURNServer
}

func runServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseServerFlags(args, stderr)
	if err != nil {
		return err
	}
	st, err := startServer(f)
	if err != nil {
		return err
	}
	defer st.srv.Close()
	printServerBanner(stdout, st)
	var tick <-chan time.Time
	if f.status > 0 {
		t := time.NewTicker(f.status)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "server: shutting down")
			return nil
		case <-tick:
			fmt.Fprintln(stdout, statusLine(st.srv))
		}
	}
}

func startServer(f serverFlags) (*serverSetup, error) {
	primary, err := netip.ParseAddrPort(f.listen)
	if err != nil {
		return nil, fmt.Errorf("server: --listen %q: %w", f.listen, err)
	}
	secret, err := turnSecret(f)
	if err != nil {
		return nil, err
	}
	cfg := rendezvous.ServerConfig{}
	if f.identity != "" {
		if cfg.PrivateKey, err = serverKey(f.identity); err != nil {
			return nil, err
		}
	}
	st := &serverSetup{primary: primary}
	turnCfg := &rendezvous.TURNConfig{Secret: secret}
	if f.externalTURN != "" {
		if st.external, err = parseTURNURLs(f.externalTURN); err != nil {
			return nil, err
		}
		turnCfg.Servers = st.external
	} else {
		embed, lo, hi, err := embeddedTURN(f, primary)
		if err != nil {
			return nil, err
		}
		turnCfg.Embed, st.relayMin, st.relayMax = embed, lo, hi
	}
	cfg.TURN = turnCfg
	// TCP first: with port 0 the kernel picks a port, and UDP takes the
	// same number.
	l, err := net.Listen("tcp", primary.String())
	if err != nil {
		return nil, fmt.Errorf("server: TCP at %v: %w", primary, err)
	}
	cfg.Listeners = []net.Listener{l}
	primary = netip.AddrPortFrom(primary.Addr(), uint16(l.Addr().(*net.TCPAddr).Port))
	st.primary = primary
	var alternate []netip.AddrPort
	if f.listen2 != "" {
		a, err := netip.ParseAddrPort(f.listen2)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("server: --listen2 %q: %w", f.listen2, err)
		}
		alternate = append(alternate, a)
	}
	if st.srv, err = rendezvous.Listen(cfg, []netip.AddrPort{primary}, alternate); err != nil {
		l.Close()
		return nil, fmt.Errorf("server: %w", err)
	}
	return st, nil
}

func embeddedTURN(f serverFlags, primary netip.AddrPort) (*relay.ServerConfig, uint16, uint16, error) {
	lo, hi, err := parsePortRange(f.relayPorts)
	if err != nil {
		return nil, 0, 0, err
	}
	cfg := &relay.ServerConfig{MinPort: lo, MaxPort: hi, AllowPeers: f.relayAllow, MaxPerIP: f.relayMaxPerIP}
	switch {
	case f.relayIP != "":
		ip, err := netip.ParseAddr(f.relayIP)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("server: --relay-ip %q: %w", f.relayIP, err)
		}
		cfg.RelayIP = ip
		cfg.RelayBind = primary.Addr().String()
	case primary.Addr().IsUnspecified():
		return nil, 0, 0, errors.New("server: --listen has no IP: give --relay-ip (the host's public IP) for the embedded TURN relay")
	}
	return cfg, lo, hi, nil
}

func parsePortRange(s string) (uint16, uint16, error) {
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := strconv.ParseUint(a, 10, 16)
	hi, err2 := strconv.ParseUint(b, 10, 16)
	if !ok || err1 != nil || err2 != nil || lo == 0 || lo > hi {
		return 0, 0, fmt.Errorf("server: --relay-ports %q: want MIN-MAX, 1 ≤ MIN ≤ MAX ≤ 65535", s)
	}
	return uint16(lo), uint16(hi), nil
}

func turnSecret(f serverFlags) (string, error) {
	switch {
	case f.secretFile != "":
		b, err := os.ReadFile(f.secretFile)
		if err != nil {
			return "", fmt.Errorf("server: --turn-secret-file: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("server: --turn-secret-file %s is empty", f.secretFile)
		}
		return s, nil
	case f.secret != "":
		return f.secret, nil
	case f.externalTURN != "":
		return "", errors.New("server: --external-turn needs the coturn's static-auth-secret: --turn-secret or --turn-secret-file")
	}
	var b [24]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:]), nil
}

// serverKey loads (or creates) a p2p identity file and uses its key: the
// same file format and permission checks as peers' identities.
func serverKey(path string) ([32]byte, error) {
	id, err := p2p.LoadOrCreateIdentity(path)
	if err != nil {
		return [32]byte{}, fmt.Errorf("server: --identity: %w", err)
	}
	text, err := id.MarshalText()
	if err != nil {
		return [32]byte{}, err
	}
	_, key, _ := strings.Cut(string(text), ":")
	k, err := p2p.ParsePeerID(key) // the same encoding as a PeerID
	return k, err
}

// parseTURNURLs reads turn:HOST:PORT[?transport=udp|tcp] and
// turns:HOST:PORT (RFC 7065), comma-separated.
func parseTURNURLs(s string) ([]rendezvous.TURNServer, error) {
	var out []rendezvous.TURNServer
	for _, one := range strings.Split(s, ",") {
		srv, err := parseTURNURL(strings.TrimSpace(one))
		if err != nil {
			return nil, fmt.Errorf("server: --external-turn %q: %w", one, err)
		}
		out = append(out, srv)
	}
	return out, nil
}

func parseTURNURL(s string) (rendezvous.TURNServer, error) {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || (scheme != "turn" && scheme != "turns") {
		return rendezvous.TURNServer{}, errors.New("want a turn or turns URL")
	}
	hostport, query, _ := strings.Cut(rest, "?")
	addr, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return rendezvous.TURNServer{}, fmt.Errorf("want an IP:PORT: %w", err)
	}
	tr := relay.UDP
	if scheme == "turns" {
		tr = relay.TLS
	}
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			return rendezvous.TURNServer{}, err
		}
		switch q.Get("transport") {
		case "", "udp":
		case "tcp":
			if tr != relay.TLS {
				tr = relay.TCP
			}
		default:
			return rendezvous.TURNServer{}, fmt.Errorf("unknown transport %q", q.Get("transport"))
		}
	}
	return rendezvous.TURNServer{Transport: tr, Addr: addr}, nil
}

func printServerBanner(w io.Writer, st *serverSetup) {
	key := p2p.PeerID(st.srv.PublicKey())
	fmt.Fprintf(w, "server key %s\n", key)
	fmt.Fprintf(w, "listening on %v (UDP and TCP)\n", st.srv.Addr())
	host := st.primary.Addr().String()
	if st.primary.Addr().IsUnspecified() {
		host = "THIS-HOST"
	}
	fmt.Fprintf(w, "peers connect with: p2pdemo peer --server %s@%s:%d\n", key, host, st.primary.Port())
	fmt.Fprintln(w, "ports to open:")
	fmt.Fprintf(w, "  UDP and TCP %d (rendezvous, STUN, TURN)\n", st.primary.Port())
	if st.relayMax != 0 {
		fmt.Fprintf(w, "  UDP %d-%d (TURN relay allocations)\n", st.relayMin, st.relayMax)
	}
	for _, s := range st.external {
		fmt.Fprintf(w, "  TURN is external: %v over %v\n", s.Addr, s.Transport)
	}
}

func statusLine(srv *rendezvous.Server) string {
	s := srv.Stats()
	line := fmt.Sprintf("status: %d peers registered, %d introductions, %d asks (%d over a target's rate), %d registrations, %d evicted, %d TCP streams",
		s.Registered, s.Introductions, s.Asks, s.AsksLimited, s.Registrations, s.Evicted, s.Streams)
	line += fmt.Sprintf(", refused: %d unverified sources, %d rate-limited, %d refreshes too soon, %d over an IP's identities",
		s.Unverified, s.RateLimited, s.RefreshLimited, s.PeersPerIPRefused)
	if r := srv.Relay(); r != nil {
		rs := r.Stats()
		line += fmt.Sprintf(", relay %d live of %d allocations, %s relayed, %d peers denied, %d refused over quota (%d user, %d IP, %d full)",
			rs.Live, rs.Allocations, fmtBytes(float64(rs.BytesRelayed)), rs.DeniedPeers,
			rs.QuotaRefused, rs.RefusedUser, rs.RefusedIP, rs.RefusedFull)
	}
	return line
}

// fmtBytes prints a byte count with a binary unit.
func fmtBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}
