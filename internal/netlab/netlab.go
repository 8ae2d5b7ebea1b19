package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Addresses of the public segment (see doc.go).
var (
	// routerAddr is the public segment's "internet" gateway: an address of
	// the bridge in the public namespace, which forwards nothing. Every
	// host on the public segment has its default route through it, so
	// traffic to addresses outside the lab is dropped silently.
	routerAddr = netip.MustParseAddr("203.0.113.1")
	// serverAddr1 and serverAddr2 are the server host's two addresses
	// (RFC 5780 needs two).
	serverAddr1 = netip.MustParseAddr("203.0.113.10")
	serverAddr2 = netip.MustParseAddr("203.0.113.11")

	// With Options.IPv6 the public segment is also public6, where the
	// public namespace is the IPv6 core router (core6): it routes each
	// site's /48 to the site's outermost router. A host on the segment
	// gets the address in public6 whose last group is its IPv4 address's
	// last octet, decimal digits read as hex (addr6): 203.0.113.20 is also
	// 2001:db8:100::20.
	public6      = netip.MustParsePrefix("2001:db8:100::/64")
	core6        = netip.MustParseAddr("2001:db8:100::1")
	server6Addr1 = netip.MustParseAddr("2001:db8:100::10")
	server6Addr2 = netip.MustParseAddr("2001:db8:100::11")
)

const (
	publicPrefixLen = 24
	firstSiteOctet  = 20  // sites' public addresses are 203.0.113.20 and up
	lastSiteOctet   = 254 // inclusive
	maxSites        = 250 // site index i names 10.i.0.0/24, 192.168.i.0/24, 100.64.i.0/24
	maxHosts        = 100 // per site
	netnsDir        = "/run/netns"
	// threadNetns is the calling thread's network namespace, which differs
	// from the process's once the thread has called setns.
	threadNetns = "/proc/thread-self/ns/net"
	cmdTimeout  = 20 * time.Second
	// DefaultHops is Options.Hops when it is zero.
	DefaultHops = 4
	// MaxHops bounds Options.Hops.
	MaxHops = 32
	// PrefixBase starts every lab prefix: "gw" + 4 hex digits + "-".
	PrefixBase = "gw"
)

// Options configure New.
type Options struct {
	// Name is a short tag put into the lab's namespace names (letters and
	// digits, at most 10; others are dropped), to tell labs apart in
	// `ip netns list`. Optional.
	Name string
	// Logf, if set, receives every command the lab runs.
	Logf func(format string, args ...any)
	// IPv6 makes the lab dual-stack: the public segment also carries
	// 2001:db8:100::/64, the server gets 2001:db8:100::10 and ::11
	// (ServerAddrs6), and the public namespace routes IPv6 between the
	// segment and the sites that have SiteConfig.IPv6 (see doc.go). Without
	// it IPv6 is off in every namespace and SiteConfig.IPv6 is refused.
	IPv6 bool
	// Hops is how many routers the public segment stands for between any
	// two of its hosts (sites and server): a datagram crossing it loses
	// that much TTL, and one whose TTL would not last is dropped there, as
	// the internet's routers would drop it (without their ICMP). A sender
	// can then prime its own NAT with a low-TTL datagram that dies before
	// the peer's. 0 means DefaultHops; at most MaxHops.
	Hops int

	// hook, if set, is called with every command line before it runs; an
	// error fails that command (tests use it to fail a setup half way).
	hook func(cmd string) error
}

// Lab is a set of network namespaces forming a small internet: a public
// segment with a server, and sites behind NATs. Its methods are safe for
// concurrent use. Close removes everything.
type Lab struct {
	prefix string // "gw" + 4 hex + "-": starts every namespace and interface name
	tag    string // "" or Options.Name + "-"
	logf   func(string, ...any)
	hook   func(string) error
	hops   int
	ipv6   bool // Options.IPv6

	mu        sync.Mutex
	closed    bool
	created   []string // namespaces made, in creation order
	pubNS     string
	server    *Host
	sites     []*Site
	nextOctet int // next free public address 203.0.113.<nextOctet>
	nextIndex int // next site index
}

// Available reports whether labs can run here: Linux, root, `ip` and `nft`
// present, and a network namespace with a veth pair, a bridge and nftables
// NAT and bridge tables can be made (and is removed again). reason says
// what is missing. The answer is computed once per process.
func Available() (ok bool, reason string) { return availability() }

var availability = sync.OnceValues(checkAvailable)

func checkAvailable() (bool, string) {
	if !supported {
		return false, "network namespaces need Linux"
	}
	if os.Geteuid() != 0 {
		return false, "not running as root (namespaces, veth and nftables need CAP_SYS_ADMIN and CAP_NET_ADMIN)"
	}
	ip, err := tool("ip")
	if err != nil {
		return false, "the ip command (iproute2) is not installed"
	}
	nft, err := tool("nft")
	if err != nil {
		return false, "the nft command (nftables) is not installed"
	}
	prefix, err := randomPrefix()
	if err != nil {
		return false, err.Error()
	}
	ns := prefix + "avail"
	if err := runCmd("", ip, "netns", "add", ns); err != nil {
		return false, "cannot create a network namespace: " + err.Error()
	}
	defer runCmd("", ip, "netns", "del", ns)
	steps := [][]string{
		{ip, "-n", ns, "link", "add", prefix + "a", "type", "veth", "peer", "name", prefix + "b"},
		{ip, "-n", ns, "link", "add", prefix + "br", "type", "bridge"},
	}
	for _, s := range steps {
		if err := runCmd("", s[0], s[1:]...); err != nil {
			return false, "cannot create links inside a namespace: " + err.Error()
		}
	}
	const rules = "table ip t {\n\tchain p {\n\t\ttype nat hook postrouting priority srcnat;\n\t}\n}\n" +
		"table bridge b {\n\tchain f {\n\t\ttype filter hook forward priority 0;\n\t}\n}\n"
	if err := runCmd(rules, ip, "netns", "exec", ns, nft, "-f", "-"); err != nil {
		return false, "nftables does not work inside a namespace: " + err.Error()
	}
	if err := doInNetns(filepath.Join(netnsDir, ns), func() error { return nil }); err != nil {
		return false, "cannot switch a thread into a namespace: " + err.Error()
	}
	return true, ""
}

// New creates a lab: a public namespace holding the public segment (a
// bridge with the router address 203.0.113.1) and a server host on it with
// the addresses 203.0.113.10 and 203.0.113.11 (ServerAddrs); with
// Options.IPv6 also 2001:db8:100::1 (the core router) and the server's
// 2001:db8:100::10 and ::11 (ServerAddrs6).
// If New fails it removes everything it made.
func New(opts Options) (_ *Lab, err error) {
	if ok, reason := Available(); !ok {
		return nil, fmt.Errorf("netlab: unavailable: %s", reason)
	}
	if opts.Hops < 0 || opts.Hops > MaxHops {
		return nil, fmt.Errorf("netlab: %d hops: want 0-%d", opts.Hops, MaxHops)
	}
	if opts.Hops == 0 {
		opts.Hops = DefaultHops
	}
	l := &Lab{
		tag:       sanitizeTag(opts.Name),
		logf:      opts.Logf,
		hook:      opts.hook,
		hops:      opts.Hops,
		ipv6:      opts.IPv6,
		nextOctet: firstSiteOctet,
		nextIndex: 1,
	}
	if l.logf == nil {
		l.logf = func(string, ...any) {}
	}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()

	// Claim a prefix no namespace has: the public namespace is made first,
	// and `ip netns add` fails if the name exists.
	ip, err := tool("ip")
	if err != nil {
		return nil, err
	}
	for attempt := 0; l.pubNS == ""; attempt++ {
		if attempt == 16 {
			return nil, fmt.Errorf("netlab: no free name prefix: %w", err)
		}
		if l.prefix, err = randomPrefix(); err != nil {
			return nil, err
		}
		var names []string
		if names, err = listNetns(l.prefix); err != nil {
			return nil, err
		}
		if len(names) > 0 {
			err = fmt.Errorf("prefix %s in use", l.prefix)
			continue
		}
		if err = l.run("", ip, "netns", "add", l.nsName("pub")); err != nil {
			continue
		}
		l.pubNS = l.nsName("pub")
		l.created = append(l.created, l.pubNS)
	}
	if err := l.setupNetns(l.pubNS, l.ipv6); err != nil {
		return nil, err
	}
	if l.ipv6 {
		if err := l.sysctl(l.pubNS, forwarding6, false); err != nil {
			return nil, err
		}
	}

	srvNS := l.nsName("srv")
	if err := l.addNetns(l.ipv6, srvNS); err != nil {
		return nil, err
	}
	l.server = &Host{Name: "server", Namespace: srvNS, IP: serverAddr1}
	srvIf := ifaceConfig{addrs: []netip.Prefix{netip.PrefixFrom(serverAddr1, publicPrefixLen), netip.PrefixFrom(serverAddr2, publicPrefixLen)}, gw: routerAddr}
	br := l.ifName("br")
	var p plan
	p.add(l.pubNS, "link", "set", "lo", "up")
	if l.ipv6 {
		l.server.IP6 = server6Addr1
		srvIf.addrs = append(srvIf.addrs, netip.PrefixFrom(server6Addr1, public6.Bits()), netip.PrefixFrom(server6Addr2, public6.Bits()))
		srvIf.gw6 = core6
		p.add(l.pubNS, bridge6(br, 0)...)
		p.add(l.pubNS, "addr", "add", pfx(core6, public6.Bits()), "dev", br, "nodad")
		// Addresses outside the lab: dropped silently, as IPv4's are.
		p.add(l.pubNS, "route", "add", "blackhole", "::/0")
	} else {
		p.add(l.pubNS, "link", "add", br, "type", "bridge")
	}
	p.add(l.pubNS, "addr", "add", pfx(routerAddr, publicPrefixLen), "dev", br)
	p.add(l.pubNS, "link", "set", br, "up")
	p.add(srvNS, "link", "set", "lo", "up")
	p.steps = append(p.steps, l.attachPublic(&p, srvNS, l.ifName("eth0"), l.ifName("srv"), srvIf))
	if err := l.runPlan(&p); err != nil {
		return nil, err
	}
	script := hopsScript(l.hops, l.ipv6)
	if l.ipv6 {
		script += coreScript(br, l.hops)
	}
	if err := l.nft(l.pubNS, script); err != nil {
		return nil, err
	}
	if l.ipv6 {
		if err := l.waitIPv6(l.pubNS, srvNS); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// ipv6ReadyTimeout bounds waitIPv6.
const ipv6ReadyTimeout = 5 * time.Second

// waitIPv6 waits until IPv6 is ready in each namespace (ipv6Ready: the
// interfaces with global addresses have their link-local ones, none
// tentative), at most ipv6ReadyTimeout in all. Links get their carrier,
// and bridges theirs even later, a while after `ip link set up` returns;
// a router forwarding before that loses its first neighbour solicitation
// and its datagrams wait a second for the next.
func (l *Lab) waitIPv6(names ...string) error {
	start := time.Now()
	deadline := start.Add(ipv6ReadyTimeout)
	for _, ns := range names {
		for {
			var ok bool
			if err := doInNetns(nsPath(ns), func() (err error) { ok, err = ipv6Ready(); return err }); err != nil {
				return err
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("netlab: IPv6 in %s not ready after %v (link-local addresses missing or tentative)", ns, ipv6ReadyTimeout)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	l.logf("netlab: IPv6 ready in %v after %v", names, time.Since(start))
	return nil
}

// IPv6 reports whether the lab is dual-stack (Options.IPv6).
func (l *Lab) IPv6() bool { return l.ipv6 }

// Hops reports how many routers the public segment stands for
// (Options.Hops).
func (l *Lab) Hops() int { return l.hops }

// hopsScript returns the public namespace's table that makes the bridge
// count as hops routers: it drops IPv4 datagrams whose TTL would run out
// on the way and takes hops off the others' TTL; with v6 it does the same
// to the IPv6 hop limit, sparing neighbour discovery and MLD (which need
// their hop limits of 255 and 1) and link-scope multicast.
func hopsScript(hops int, v6 bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table bridge hops {\n\tchain forward {\n\t\ttype filter hook forward priority -10; policy accept;\n")
	fmt.Fprintf(&b, "\t\tether type ip ip ttl <= %d drop\n", hops)
	subtractRules(&b, "ether type ip ip ttl", hops, hops)
	if v6 {
		fmt.Fprintf(&b, "\t\tether type ip6 meta l4proto ipv6-icmp icmpv6 type %s accept\n", linkICMPv6)
		b.WriteString("\t\tether type ip6 ip6 daddr ff02::/16 accept\n")
		fmt.Fprintf(&b, "\t\tether type ip6 ip6 hoplimit <= %d drop\n", hops)
		subtractRules(&b, "ether type ip6 ip6 hoplimit", hops, hops)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// subtractRules writes one rule per value v of field above min: "field v
// field set v-sub accept". nft cannot subtract from a header field, so
// each value gets its own rule, the usual ones (just under 64, 128 and
// 255, the common initial TTLs and hop limits) first.
func subtractRules(b *strings.Builder, field string, min, sub int) {
	for _, top := range []int{64, 128, 255} {
		for v := top; v > min && v > top-32; v-- {
			fmt.Fprintf(b, "\t\t%s %d %s set %d accept\n", field, v, lastWord(field), v-sub)
		}
	}
	for v := min + 1; v <= 255; v++ {
		if (v > 32 && v <= 64) || (v > 96 && v <= 128) || v > 223 {
			continue // a rule above has it
		}
		fmt.Fprintf(b, "\t\t%s %d %s set %d accept\n", field, v, lastWord(field), v-sub)
	}
}

// lastWord returns "ip ttl" of "ether type ip ip ttl": the field to set.
func lastWord(field string) string {
	f := strings.Fields(field)
	return strings.Join(f[len(f)-2:], " ")
}

// linkICMPv6 is the set of ICMPv6 types no lab filter drops or changes:
// MLD (130-132, 143) and neighbour discovery (133-137).
const linkICMPv6 = "{ 130, 131, 132, 133, 134, 135, 136, 137, 143 }"

// coreScript returns the IPv6 core router's table in the public
// namespace: it forwards between bridge br and itself only, never answers
// with redirects (it routes site to site over the one segment), and a
// routed datagram loses hops in all, like a bridged one: the forwarding
// itself takes one, the table the other hops-1; one that would not last
// is dropped before routing, with no ICMP.
func coreScript(br string, hops int) string {
	var b strings.Builder
	B := strconv.Quote(br)
	b.WriteString("table ip6 gwcore {\n")
	b.WriteString("\tchain pre {\n\t\ttype filter hook prerouting priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\tip6 daddr != { %s, fe80::/10, ff00::/8 } ip6 hoplimit <= %d drop\n", public6, hops)
	b.WriteString("\t}\n")
	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\tiifname != %s drop\n\t\toifname != %s drop\n", B, B)
	if hops > 1 {
		// After the forwarding's own decrement: hop limits hops and up.
		subtractRules(&b, "ip6 hoplimit", hops-1, hops-1)
	}
	b.WriteString("\t}\n")
	b.WriteString("\tchain out {\n\t\ttype filter hook output priority filter; policy accept;\n")
	b.WriteString("\t\ticmpv6 type nd-redirect drop\n")
	b.WriteString("\t}\n}\n")
	return b.String()
}

// Prefix returns the lab's name prefix ("gw" + 4 hex digits + "-"), which
// starts the name of every namespace and interface it makes.
func (l *Lab) Prefix() string { return l.prefix }

// PublicNamespace returns the name of the namespace holding the public
// segment's bridge.
func (l *Lab) PublicNamespace() string { return l.pubNS }

// Server returns the server host: on the public segment, no NAT, with the
// two addresses ServerAddrs.
func (l *Lab) Server() *Host { return l.server }

// ServerAddrs returns the server's addresses: [0] = 203.0.113.10 (primary,
// Server().IP), [1] = 203.0.113.11 (the RFC 5780 alternate address).
func (l *Lab) ServerAddrs() []netip.Addr { return []netip.Addr{serverAddr1, serverAddr2} }

// ServerAddrs6 returns the server's IPv6 addresses with Options.IPv6:
// [0] = 2001:db8:100::10 (primary, Server().IP6), [1] = 2001:db8:100::11
// (the alternate). Without IPv6 it returns nil.
func (l *Lab) ServerAddrs6() []netip.Addr {
	if !l.ipv6 {
		return nil
	}
	return []netip.Addr{server6Addr1, server6Addr2}
}

// Close removes every namespace the lab made (which removes their links,
// bridges, nftables rules and conntrack state) and then any other
// namespace whose name starts with the lab's prefix. It is idempotent.
// Sockets still open inside the lab keep their (now unnamed) namespace
// alive until they are closed; processes started with Host.Command should
// be ended before Close.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for i := len(l.created) - 1; i >= 0; i-- {
		if err := l.delNetns(l.created[i]); err != nil {
			errs = append(errs, err)
		}
	}
	l.created = nil
	if l.prefix != "" {
		if err := sweep(l.prefix); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sweep removes every network namespace whose name starts with prefix
// (which removes the links inside them), for leftovers of labs whose
// process died before Close. prefix must start with "gw" and be at least 3
// characters; sweep("gw") would remove other processes' running labs too,
// so pass one lab's full prefix when others may be running.
func sweep(prefix string) error {
	if len(prefix) < 3 || !strings.HasPrefix(prefix, PrefixBase) || strings.ContainsAny(prefix, "/ \t\n") {
		return fmt.Errorf("netlab: refusing to sweep prefix %q (must start with %q, at least 3 characters)", prefix, PrefixBase)
	}
	names, err := listNetns(prefix)
	if err != nil {
		return err
	}
	ip, err := tool("ip")
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if err := runCmd("", ip, "netns", "del", n); err != nil && netnsExists(n) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// --- names -------------------------------------------------------------

var tagRE = regexp.MustCompile(`[^a-zA-Z0-9]`)

func sanitizeTag(s string) string {
	s = tagRE.ReplaceAllString(s, "")
	if len(s) > 10 {
		s = s[:10]
	}
	if s == "" {
		return ""
	}
	return s + "-"
}

func randomPrefix() (string, error) {
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("netlab: random prefix: %w", err)
	}
	return PrefixBase + hex.EncodeToString(b[:]) + "-", nil
}

// nsName names a namespace of the lab: prefix + tag + role.
func (l *Lab) nsName(role string) string { return l.prefix + l.tag + role }

// ifName names an interface: prefix + role, at most 15 bytes (IFNAMSIZ-1).
func (l *Lab) ifName(role string) string {
	n := l.prefix + role
	if len(n) > 15 {
		panic("netlab: interface name too long: " + n)
	}
	return n
}

func nsPath(ns string) string { return filepath.Join(netnsDir, ns) }

// listNetns returns the named network namespaces starting with prefix.
func listNetns(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netlab: list namespaces: %w", err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func netnsExists(ns string) bool {
	_, err := os.Stat(nsPath(ns))
	return err == nil
}

func pfx(a netip.Addr, bits int) string { return netip.PrefixFrom(a, bits).String() }

// --- commands ----------------------------------------------------------

var toolPaths sync.Map // name -> string

// tool finds a command in PATH or, as root's PATH may lack them, in the
// sbin directories.
func tool(name string) (string, error) {
	if p, ok := toolPaths.Load(name); ok {
		return p.(string), nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
			c := filepath.Join(dir, name)
			if st, e := os.Stat(c); e == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				p, err = c, nil
				break
			}
		}
	}
	if err != nil {
		return "", fmt.Errorf("netlab: %s not found: %w", name, err)
	}
	toolPaths.Store(name, p)
	return p, nil
}

// runCmd runs a command with a time limit, stdin if not empty, and returns
// its output in the error if it fails.
func runCmd(stdin, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("netlab: %s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// run runs a command for the lab: through the test hook, logged.
func (l *Lab) run(stdin, name string, args ...string) error {
	line := filepath.Base(name) + " " + strings.Join(args, " ")
	if l.hook != nil {
		if err := l.hook(line); err != nil {
			return fmt.Errorf("netlab: %s: %w", line, err)
		}
	}
	l.logf("netlab: %s", line)
	return runCmd(stdin, name, args...)
}

// nft loads an nftables script inside namespace ns, as one transaction.
func (l *Lab) nft(ns, script string) error {
	ip, err := tool("ip")
	if err != nil {
		return err
	}
	nft, err := tool("nft")
	if err != nil {
		return err
	}
	l.logf("netlab: nft script in %s:\n%s", ns, script)
	return l.run(script, ip, "netns", "exec", ns, nft, "-f", "-")
}

// addNetns creates namespaces (one `ip -batch`), records them for Close
// and sets them up (setupNetns, with IPv6 if v6); the caller's plan brings
// their loopback up. The names must not exist yet, so any that exists
// after a failure was made here (the names carry the lab's claimed
// prefix).
func (l *Lab) addNetns(v6 bool, names ...string) error {
	for _, ns := range names {
		if netnsExists(ns) {
			return fmt.Errorf("netlab: namespace %s exists", ns)
		}
	}
	cmds := make([][]string, len(names))
	for i, ns := range names {
		cmds[i] = []string{"netns", "add", ns}
	}
	err := l.ipBatch("", cmds...)
	for _, ns := range names {
		if netnsExists(ns) {
			l.created = append(l.created, ns)
		}
	}
	if err != nil {
		return err
	}
	for _, ns := range names {
		if err := l.setupNetns(ns, v6); err != nil {
			return err
		}
	}
	return nil
}

// setupNetns sets a new namespace's sysctls: IPv6 off, or with v6 on
// without router advertisements, autoconfiguration, router solicitations,
// duplicate address detection and redirects (addresses are static and
// work at once), and br_netfilter off. The IPv6 defaults are written
// before the namespace has interfaces, so its interfaces inherit them.
// br_netfilter, where loaded, defaults to running the IP hooks on bridged
// frames in every namespace; off, bridges are plain switches and a NAT's
// rules see routed packets only (with it on, a hairpinned datagram to a
// host's own other socket is "bridged DNAT" back out of the port it came
// in on, and dropped).
func (l *Lab) setupNetns(ns string, v6 bool) error {
	var kv [][2]string
	if v6 {
		for _, k := range []string{"accept_ra=0", "autoconf=0", "accept_dad=0", "dad_transmits=0", "accept_redirects=0", "router_solicitations=0", "router_solicitation_delay=0", "disable_ipv6=0"} {
			name, v, _ := strings.Cut(k, "=")
			kv = append(kv, [2]string{"net/ipv6/conf/all/" + name, v}, [2]string{"net/ipv6/conf/default/" + name, v})
		}
	} else {
		kv = [][2]string{
			{"net/ipv6/conf/all/disable_ipv6", "1"},
			{"net/ipv6/conf/default/disable_ipv6", "1"},
		}
	}
	kv = append(kv,
		[2]string{"net/bridge/bridge-nf-call-iptables", "0"},
		[2]string{"net/bridge/bridge-nf-call-ip6tables", "0"},
		[2]string{"net/bridge/bridge-nf-call-arptables", "0"},
	)
	return l.sysctl(ns, kv, true)
}

// forwarding6 turns IPv6 forwarding on (routers and the core).
var forwarding6 = [][2]string{
	{"net/ipv6/conf/all/forwarding", "1"},
	{"net/ipv6/conf/default/forwarding", "1"},
}

// delNetns removes a namespace if it exists.
func (l *Lab) delNetns(ns string) error {
	if !netnsExists(ns) {
		return nil
	}
	ip, err := tool("ip")
	if err != nil {
		return err
	}
	l.logf("netlab: ip netns del %s", ns)
	if err := runCmd("", ip, "netns", "del", ns); err != nil && netnsExists(ns) {
		return err
	}
	return nil
}

// sysctl writes /proc/sys/<key> = value for each entry in order, inside namespace
// ns only (doInNetns checks the thread is there before writing). With
// optional, keys whose file does not exist are skipped.
func (l *Lab) sysctl(ns string, kv [][2]string, optional bool) error {
	for _, e := range kv {
		line := "sysctl " + ns + " " + e[0] + "=" + e[1]
		if l.hook != nil {
			if err := l.hook(line); err != nil {
				return fmt.Errorf("netlab: %s: %w", line, err)
			}
		}
		l.logf("netlab: %s", line)
	}
	return doInNetns(nsPath(ns), func() error {
		for _, e := range kv {
			k, v := e[0], e[1]
			p := "/proc/sys/" + k
			if optional {
				if _, err := os.Stat(p); err != nil {
					continue
				}
			}
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				return fmt.Errorf("netlab: sysctl %s=%s in %s: %w", k, v, ns, err)
			}
		}
		return nil
	})
}

// readSysctl reads /proc/sys/<key> inside namespace ns.
func readSysctl(ns, key string) (string, error) {
	var v string
	err := doInNetns(nsPath(ns), func() error {
		b, err := os.ReadFile("/proc/sys/" + key)
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// plan is a list of ip commands, each for one namespace; runPlan runs each
// run of consecutive commands for the same namespace as one `ip -batch`.
type plan struct{ steps []planStep }

type planStep struct {
	ns   string
	args []string
}

func (p *plan) add(ns string, args ...string) { p.steps = append(p.steps, planStep{ns, args}) }

func (l *Lab) runPlan(p *plan) error {
	for i := 0; i < len(p.steps); {
		j := i
		var cmds [][]string
		for ; j < len(p.steps) && p.steps[j].ns == p.steps[i].ns; j++ {
			cmds = append(cmds, p.steps[j].args)
		}
		if err := l.ipBatch(p.steps[i].ns, cmds...); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// ipBatch runs ip commands in one `ip [-n ns] -batch -` process (ns ""
// means the root namespace, used for `netns add` only). The test hook
// sees each command as "ip -n <ns> <args>"; if it fails one, the commands
// before it still run.
func (l *Lab) ipBatch(ns string, cmds ...[]string) error {
	ip, err := tool("ip")
	if err != nil {
		return err
	}
	var lines []string
	var hookErr error
	for _, c := range cmds {
		line := strings.Join(c, " ")
		full := "ip " + line
		if ns != "" {
			full = "ip -n " + ns + " " + line
		}
		if l.hook != nil {
			if err := l.hook(full); err != nil {
				hookErr = fmt.Errorf("netlab: %s: %w", full, err)
				break
			}
		}
		l.logf("netlab: %s", full)
		lines = append(lines, line)
	}
	if len(lines) > 0 {
		args := []string{"-batch", "-"}
		if ns != "" {
			args = append([]string{"-n", ns}, args...)
		}
		if err := runCmd(strings.Join(lines, "\n")+"\n", ip, args...); err != nil {
			return err
		}
	}
	return hookErr
}

// ifaceConfig is the layer 3 set-up of an interface: addresses (IPv4
// and IPv6, the first of each family primary) and default routes (none
// for an invalid gateway).
type ifaceConfig struct {
	addrs   []netip.Prefix
	gw, gw6 netip.Addr
}

// attachPublic plans a veth pair between ns (interface dev, set up as c)
// and the public bridge (port).
func (l *Lab) attachPublic(p *plan, ns, dev, port string, c ifaceConfig) (portStep planStep) {
	return l.attach(p, ns, dev, l.pubNS, port, l.ifName("br"), c)
}

// attach plans a veth pair between ns (interface dev) and the namespace
// brNS holding bridge br (interface port): addresses and default routes
// of c on dev (IPv6 addresses without duplicate address detection). The
// pair is created from inside ns with its peer placed straight into brNS,
// so no interface ever exists in the root namespace. It returns the step
// that enslaves port to br, for the caller to add after the ns side
// (callers attaching several hosts group those steps into one batch).
func (l *Lab) attach(p *plan, ns, dev, brNS, port, br string, c ifaceConfig) (portStep planStep) {
	p.add(ns, "link", "add", dev, "type", "veth", "peer", "name", port, "netns", brNS)
	for _, a := range c.addrs {
		if a.Addr().Is6() {
			p.add(ns, "addr", "add", a.String(), "dev", dev, "nodad")
		} else {
			p.add(ns, "addr", "add", a.String(), "dev", dev)
		}
	}
	p.add(ns, "link", "set", dev, "up")
	if c.gw.IsValid() {
		p.add(ns, "route", "add", "default", "via", c.gw.String())
	}
	if c.gw6.IsValid() {
		p.add(ns, "route", "add", "::/0", "via", c.gw6.String())
	}
	return planStep{brNS, []string{"link", "set", port, "master", br, "up"}}
}

// bridge6 returns the ip arguments that make an IPv6 bridge: with a
// fixed MAC address (02:67:77:00:<n>:01), since a bridge's own otherwise
// follows the lowest of its ports', and a port added later would move it
// under the neighbour caches of the hosts routing through the bridge's
// address (the core router's, a home router's); and with multicast
// snooping off, so neighbour solicitations are flooded whatever MLD
// reports got through.
func bridge6(name string, n int) []string {
	mac := fmt.Sprintf("02:67:77:00:%02x:01", n)
	return []string{"link", "add", name, "address", mac, "type", "bridge", "mcast_snooping", "0"}
}

// addr6 returns the address in prefix (a /64 or shorter) whose last group
// is n's decimal digits read as hex: addr6(2001:db8:100::/64, 20) is
// 2001:db8:100::20, so IPv6 host numbers read like the IPv4 ones.
func addr6(prefix netip.Prefix, n int) netip.Addr {
	v, err := strconv.ParseUint(strconv.Itoa(n), 16, 16)
	if err != nil {
		panic("netlab: host number " + strconv.Itoa(n))
	}
	a := prefix.Masked().Addr().As16()
	a[14], a[15] = byte(v>>8), byte(v)
	return netip.AddrFrom16(a)
}
