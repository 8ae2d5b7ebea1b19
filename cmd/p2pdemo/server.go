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
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

const serverSummary = `p2pdemo server: the rendezvous service (registration, introductions), STUN
(RFC 5780 with --listen2) and an embedded TURN relay, on UDP and TCP at the
--listen addresses (IPv4 and IPv6 at once: --listen 0.0.0.0:3478,[::]:3478;
the relay runs on the first address of each family and relays over the
family its clients reach it by); or, with --external-turn, credentials for a
real coturn configured with use-auth-secret and the same secret. Prints its
key, the ports to open and a status line; stops cleanly on SIGINT or SIGTERM.`

type serverFlags struct {
	listen, listen2 []netip.AddrPort
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
	listen, listen2 := "0.0.0.0:3478", ""
	fs.StringVar(&listen, "listen", listen, "`IP:PORT[,IP:PORT...]` for rendezvous, STUN and TURN, UDP and TCP: a socket each, IPv6 in brackets ([::] is IPv6 only, 0.0.0.0 IPv4 only); the first IPv4 and the first IPv6 one carry the embedded TURN, which relays IPv4 clients over IPv4 and IPv6 ones over IPv6")
	fs.StringVar(&listen2, "listen2", "", "`IP:PORT[,IP:PORT...]`: RFC 5780 alternates (another IP and port) for NAT behaviour tests, each going with the --listen address of its family in order (the first IPv4 one with the first IPv4 --listen address...)")
	fs.StringVar(&f.relayIP, "relay-ip", "", "the host's public `IP[,IP]` put in relayed addresses, at most one IPv4 and one IPv6 (default: the IP of the first --listen address of each family; required for an IPv4 one of 0.0.0.0 or behind a 1:1 NAT; without an IPv6 one, an IPv6 --listen address of [::] relays its clients over IPv4)")
	fs.StringVar(&f.relayPorts, "relay-ports", "49152-65535", "UDP port range `MIN-MAX` for relay allocations, in each family")
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
	var err error
	if f.listen, err = parseAddrList("--listen", listen); err != nil {
		return f, err
	}
	if len(f.listen) == 0 {
		return f, errors.New("server: --listen needs at least one IP:PORT")
	}
	if f.listen2, err = parseAddrList("--listen2", listen2); err != nil {
		return f, err
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

// parseAddrList reads a comma-separated list of IP:PORT (IPv6 in
// brackets); empty is none.
func parseAddrList(flagName, s string) ([]netip.AddrPort, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []netip.AddrPort
	for _, one := range strings.Split(s, ",") {
		one = strings.TrimSpace(one)
		a, err := netip.ParseAddrPort(one)
		if err != nil {
			return nil, fmt.Errorf("server: %s %q: want IP:PORT, IPv6 as [IP]:PORT: %w", flagName, one, err)
		}
		out = append(out, netip.AddrPortFrom(a.Addr().Unmap(), a.Port()))
	}
	return out, nil
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
	embed    *relay.ServerConfig // the embedded TURN's, or nil
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
	// IPv4 addresses go first (Addr, and the banner's order), each family
	// keeping its order, which is what pairs --listen2 addresses with
	// them. The embedded TURN server takes the first socket of each family
	// (rendezvous.Listen).
	primaries := slices.Clone(f.listen)
	slices.SortStableFunc(primaries, func(a, b netip.AddrPort) int {
		switch {
		case a.Addr().Is4() == b.Addr().Is4():
			return 0
		case a.Addr().Is4():
			return -1
		}
		return 1
	})
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
	st := &serverSetup{}
	turnCfg := &rendezvous.TURNConfig{Secret: secret}
	if f.externalTURN != "" {
		if st.external, err = parseTURNURLs(f.externalTURN); err != nil {
			return nil, err
		}
		turnCfg.Servers = st.external
	} else {
		embed, lo, hi, err := embeddedTURN(f, primaries)
		if err != nil {
			return nil, err
		}
		turnCfg.Embed, st.embed, st.relayMin, st.relayMax = embed, embed, lo, hi
	}
	cfg.TURN = turnCfg
	// TCP first, one listener per address in its own family (tcp6 is
	// IPv6-only, as the UDP sockets are): with port 0 the kernel picks a
	// port, and UDP takes the same number.
	closeAll := func() {
		for _, l := range cfg.Listeners {
			l.Close()
		}
	}
	for i, a := range primaries {
		network := "tcp4"
		if a.Addr().Is6() {
			network = "tcp6"
		}
		l, err := net.Listen(network, a.String())
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("server: TCP at %v: %w", a, err)
		}
		cfg.Listeners = append(cfg.Listeners, l)
		primaries[i] = netip.AddrPortFrom(a.Addr(), uint16(l.Addr().(*net.TCPAddr).Port))
	}
	if st.srv, err = rendezvous.Listen(cfg, primaries, f.listen2); err != nil {
		closeAll()
		return nil, fmt.Errorf("server: %w", err)
	}
	return st, nil
}

// embeddedTURN configures the embedded TURN relay for the first of the
// primary addresses of each family, which carry it: its relay IPs (and
// what relay sockets bind to) by family, from --relay-ip or those
// addresses, and the port range, which each family uses in full.
func embeddedTURN(f serverFlags, primaries []netip.AddrPort) (*relay.ServerConfig, uint16, uint16, error) {
	lo, hi, err := parsePortRange(f.relayPorts)
	if err != nil {
		return nil, 0, 0, err
	}
	cfg := &relay.ServerConfig{MinPort: lo, MaxPort: hi, AllowPeers: f.relayAllow, MaxPerIP: f.relayMaxPerIP}
	var first [2]netip.AddrPort // by family: IPv4, IPv6
	for _, a := range primaries {
		if fam := familyIndex(a.Addr()); !first[fam].IsValid() {
			first[fam] = a
		}
	}
	var given [2]netip.Addr // --relay-ip, by family
	if f.relayIP != "" {
		for _, one := range strings.Split(f.relayIP, ",") {
			one = strings.TrimSpace(one)
			ip, err := netip.ParseAddr(one)
			if err != nil {
				return nil, 0, 0, fmt.Errorf("server: --relay-ip %q: %w", one, err)
			}
			ip = ip.Unmap().WithZone("")
			fam := familyIndex(ip)
			switch {
			case ip.IsUnspecified():
				return nil, 0, 0, fmt.Errorf("server: --relay-ip %v: give the host's public IP", ip)
			case given[fam].IsValid():
				return nil, 0, 0, fmt.Errorf("server: --relay-ip %q: at most one %s address", f.relayIP, familyName[fam])
			case !first[fam].IsValid():
				return nil, 0, 0, fmt.Errorf("server: --relay-ip %v: no %s --listen address for the relay to answer %s clients at", ip, familyName[fam], familyName[fam])
			}
			given[fam] = ip
		}
	}
	relayIP, bind := [2]*netip.Addr{&cfg.RelayIP, &cfg.RelayIP6}, [2]*string{&cfg.RelayBind, &cfg.RelayBind6}
	for fam, at := range first {
		switch {
		case !at.IsValid():
		case given[fam].IsValid():
			*relayIP[fam], *bind[fam] = given[fam], at.Addr().String()
		case !at.Addr().IsUnspecified():
			*relayIP[fam] = at.Addr()
		case fam == 0:
			return nil, 0, 0, fmt.Errorf("server: --listen %v has no IP: give --relay-ip the host's public IPv4 address for the embedded TURN relay", at)
		case !cfg.RelayIP.IsValid():
			return nil, 0, 0, fmt.Errorf("server: --listen %v has no IP: give --relay-ip the host's public IPv6 address for the embedded TURN relay", at)
		}
		// An unspecified IPv6 address without an IPv6 --relay-ip: the
		// relay answers there and relays its clients over IPv4.
	}
	return cfg, lo, hi, nil
}

var familyName = [2]string{"IPv4", "IPv6"}

// familyIndex is 0 for IPv4 (and IPv4-mapped) addresses, 1 for IPv6.
func familyIndex(a netip.Addr) int {
	if a.Unmap().Is6() {
		return 1
	}
	return 0
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
	addrs, alts := st.srv.Addrs(), st.srv.Alternates()
	fmt.Fprintf(w, "server key %s\n", key)
	fmt.Fprintf(w, "listening on %s (UDP and TCP)\n", joinAddrs(addrs))
	for i, a := range alts {
		if a.IsValid() {
			fmt.Fprintf(w, "RFC 5780 alternate for %v: %v (UDP)\n", addrs[i], a)
		}
	}
	for _, a := range addrs {
		fmt.Fprintf(w, "peers connect with: p2pdemo peer --server %s@%s\n", key, peerHost(a))
	}
	if v4, v6 := firstOfFamily(addrs, true), firstOfFamily(addrs, false); v4.IsValid() && v6.IsValid() {
		// A peer that names both registers over IPv4 and learns its IPv6
		// address too (or the reverse, with no IPv4 of its own).
		fmt.Fprintf(w, "dual-stack peers connect with: p2pdemo peer --server %s@%s,%s\n", key, peerHost(v4), peerHost(v6))
	}
	var turnAt []netip.AddrPort
	if st.embed != nil {
		turnAt = st.srv.TURNAddrs()
		relayIP := [2]netip.Addr{st.embed.RelayIP, st.embed.RelayIP6}
		for _, a := range turnAt {
			fam := familyIndex(a.Addr())
			if ip := relayIP[fam]; ip.IsValid() {
				fmt.Fprintf(w, "TURN relay at %v (UDP and TCP), relayed addresses %v\n", a, ip)
			} else {
				fmt.Fprintf(w, "TURN relay at %v (UDP and TCP), relayed addresses %v: its %s clients are relayed over %s (give --relay-ip a public %s address for %s ones)\n",
					a, relayIP[1-fam], familyName[fam], familyName[1-fam], familyName[fam], familyName[fam])
			}
		}
	}
	fmt.Fprintln(w, "ports to open:")
	var ports []uint16
	for _, a := range addrs {
		if slices.Contains(ports, a.Port()) {
			continue
		}
		ports = append(ports, a.Port())
		what := "rendezvous, STUN"
		if slices.ContainsFunc(turnAt, func(t netip.AddrPort) bool { return t.Port() == a.Port() }) {
			what += ", TURN"
		}
		fmt.Fprintf(w, "  UDP and TCP %d (%s)\n", a.Port(), what)
	}
	for _, a := range alts {
		if a.IsValid() && !slices.Contains(ports, a.Port()) {
			ports = append(ports, a.Port())
			fmt.Fprintf(w, "  UDP %d (STUN, RFC 5780 NAT behaviour tests)\n", a.Port())
		}
	}
	if st.embed != nil {
		families := "IPv4 and IPv6"
		switch {
		case !st.embed.RelayIP6.IsValid():
			families = "IPv4"
		case !st.embed.RelayIP.IsValid():
			families = "IPv6"
		}
		fmt.Fprintf(w, "  UDP %d-%d (TURN relay allocations, %s)\n", st.relayMin, st.relayMax, families)
	}
	for _, s := range st.external {
		fmt.Fprintf(w, "  TURN is external: %v over %v\n", s.Addr, s.Transport)
	}
}

// joinAddrs prints addresses as netip does: IPv6 in brackets.
func joinAddrs(addrs []netip.AddrPort) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// peerHost is the HOST:PORT a peer's --server takes for a listen address:
// IPv6 in brackets, as p2p.Config.Rendezvous parses it, and a placeholder
// for an unspecified address, which is no address to dial.
// firstOfFamily is the first of addrs in IPv4 (four) or IPv6.
func firstOfFamily(addrs []netip.AddrPort, four bool) netip.AddrPort {
	for _, a := range addrs {
		if a.Addr().Is4() == four {
			return a
		}
	}
	return netip.AddrPort{}
}

func peerHost(a netip.AddrPort) string {
	switch {
	case a.Addr().IsUnspecified() && a.Addr().Is4():
		return fmt.Sprintf("THIS-HOST:%d", a.Port())
	case a.Addr().IsUnspecified():
		return fmt.Sprintf("[THIS-HOST-IPV6]:%d", a.Port())
	}
	return a.String()
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
