package netlab

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// RFC 4787 mapping and filtering behaviours, as Probe reports them.
const (
	EIM  = "EIM"  // endpoint-independent mapping
	ADM  = "ADM"  // address-dependent mapping
	APDM = "APDM" // address-and-port-dependent mapping
	EIF  = "EIF"  // endpoint-independent filtering
	ADF  = "ADF"  // address-dependent filtering
	APDF = "APDF" // address-and-port-dependent filtering
)

// Behavior is what Probe measured for one host, with plain UDP sockets on
// the host and on the server's two addresses (A = ServerAddrs()[0],
// B = ServerAddrs()[1]) and two ports (p1, p2), in the manner of RFC 5780.
type Behavior struct {
	// Local is the probing socket's address on the host.
	Local netip.AddrPort
	// MappedA1, MappedA2 and MappedB1 are the source address the server
	// saw for datagrams from that one socket sent to A:p1, A:p2 and B:p1.
	MappedA1, MappedA2, MappedB1 netip.AddrPort
	// Mapping is EIM if all three are equal, ADM if only the A ones are,
	// APDM otherwise.
	Mapping string
	// PortPreserved: MappedA1 has the local port.
	PortPreserved bool
	// A fresh socket sent only to A:p1; did datagrams to its mapping from
	// A:p2 (FromA2) and B:p1 (FromB1) reach it? Filtering is EIF for
	// yes/yes, ADF for yes/no, APDF for no/no ("?" for no/yes).
	FromA2, FromB1 bool
	Filtering      string
	// Hairpin: two sockets on the host, each having sent to A:p1, sent
	// to each other's mapped (public) address; both datagrams arrived.
	Hairpin bool
	// HairpinSource is the source the first socket saw on the second's
	// datagram (its public mapping, for an RFC 4787 hairpinning NAT).
	HairpinSource netip.AddrPort
}

// Probe timing: one attempt waits probeWait for an answer, a question is
// asked at most probeTries times. A "no" costs probeTries*probeWait.
const (
	probeWait  = 150 * time.Millisecond
	probeTries = 3
	// probeFirstTries covers the first datagram of a path, which may wait
	// for ARP, and lossy uplinks.
	probeFirstTries = 10
)

// Probe measures h's NAT behaviour against the lab's server (mapping,
// filtering, port preservation, hairpinning). It opens its own sockets,
// creates mappings in h's NAT and takes up to about two seconds; probes
// of different hosts may run at the same time.
func (l *Lab) Probe(h *Host) (Behavior, error) {
	var b Behavior
	srv := l.Server()

	// Server sockets A:p1, B:p1 (same port number) and A:p2.
	var a1, b1, a2 *net.UDPConn
	var err error
	for range 20 {
		if a1, err = srv.ListenUDP(netip.AddrPortFrom(serverAddr1, 0).String()); err != nil {
			return b, err
		}
		p1 := a1.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		if b1, err = srv.ListenUDP(netip.AddrPortFrom(serverAddr2, p1).String()); err == nil {
			break
		}
		a1.Close()
	}
	if err != nil {
		return b, err
	}
	defer a1.Close()
	defer b1.Close()
	if a2, err = srv.ListenUDP(netip.AddrPortFrom(serverAddr1, 0).String()); err != nil {
		return b, err
	}
	defer a2.Close()
	A1, A2, B1 := localAP(a1), localAP(a2), localAP(b1)

	var socks []*net.UDPConn
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	open := func() (*net.UDPConn, error) {
		c, err := h.ListenUDP(":0")
		if err == nil {
			socks = append(socks, c)
		}
		return c, err
	}
	nonce := newNonce()

	// Mapping.
	c, err := open()
	if err != nil {
		return b, err
	}
	b.Local = netip.AddrPortFrom(h.IP, localAP(c).Port())
	for _, step := range []struct {
		dst  *net.UDPConn
		addr netip.AddrPort
		out  *netip.AddrPort
		name string
	}{{a1, A1, &b.MappedA1, "m-A1"}, {a2, A2, &b.MappedA2, "m-A2"}, {b1, B1, &b.MappedB1, "m-B1"}} {
		from, ok, err := exchange(c, step.addr, step.dst, nonce+step.name, probeFirstTries)
		if err != nil {
			return b, err
		}
		if !ok {
			return b, fmt.Errorf("netlab: probe: no datagram from %s reached the server at %s", h.Name, step.addr)
		}
		*step.out = from
	}
	switch {
	case b.MappedA1 == b.MappedA2 && b.MappedA1 == b.MappedB1:
		b.Mapping = EIM
	case b.MappedA1 == b.MappedA2:
		b.Mapping = ADM
	default:
		b.Mapping = APDM
	}
	b.PortPreserved = b.MappedA1.Port() == b.Local.Port()

	// Filtering, on a socket that has sent to A:p1 only.
	f, err := open()
	if err != nil {
		return b, err
	}
	m, ok, err := exchange(f, A1, a1, nonce+"f-open", probeFirstTries)
	if err != nil {
		return b, err
	}
	if !ok {
		return b, fmt.Errorf("netlab: probe: no datagram from %s reached the server at %s", h.Name, A1)
	}
	if _, ok, err = exchange(a1, m, f, nonce+"f-A1", probeFirstTries); err != nil {
		return b, err
	} else if !ok {
		return b, fmt.Errorf("netlab: probe: the server's reply from %s did not reach %s", A1, h.Name)
	}
	if _, b.FromB1, err = exchange(b1, m, f, nonce+"f-B1", probeTries); err != nil {
		return b, err
	}
	if _, b.FromA2, err = exchange(a2, m, f, nonce+"f-A2", probeTries); err != nil {
		return b, err
	}
	switch {
	case b.FromA2 && b.FromB1:
		b.Filtering = EIF
	case b.FromA2:
		b.Filtering = ADF
	case !b.FromB1:
		b.Filtering = APDF
	default:
		b.Filtering = "?"
	}

	// Hairpinning: s1 and s2 learn their mappings from A:p1, then send to
	// each other's mapping, a few rounds (with two NAT layers the first
	// datagrams open the inner NAT's filter for the later ones).
	s1, err := open()
	if err != nil {
		return b, err
	}
	s2, err := open()
	if err != nil {
		return b, err
	}
	m1, ok1, err := exchange(s1, A1, a1, nonce+"h-1", probeFirstTries)
	if err != nil {
		return b, err
	}
	m2, ok2, err := exchange(s2, A1, a1, nonce+"h-2", probeFirstTries)
	if err != nil {
		return b, err
	}
	if !ok1 || !ok2 {
		return b, fmt.Errorf("netlab: probe: hairpin sockets of %s did not reach the server", h.Name)
	}
	var got12, got21 bool
	for range probeTries {
		if !got12 {
			if _, err := s1.WriteToUDPAddrPort([]byte(nonce+"h-12"), m2); err != nil {
				return b, err
			}
		}
		if !got21 {
			if _, err := s2.WriteToUDPAddrPort([]byte(nonce+"h-21"), m1); err != nil {
				return b, err
			}
		}
		if !got12 {
			if _, got12, err = await(s2, nonce+"h-12", probeWait); err != nil {
				return b, err
			}
		}
		if !got21 {
			var from netip.AddrPort
			if from, got21, err = await(s1, nonce+"h-21", probeWait); err != nil {
				return b, err
			}
			b.HairpinSource = from
		}
		if got12 && got21 {
			break
		}
	}
	b.Hairpin = got12 && got21
	return b, nil
}

// exchange sends token from c to dst until it arrives at rcv (at most
// tries times, waiting probeWait each) and returns the source address rcv
// saw.
func exchange(c *net.UDPConn, dst netip.AddrPort, rcv *net.UDPConn, token string, tries int) (netip.AddrPort, bool, error) {
	for range tries {
		if _, err := c.WriteToUDPAddrPort([]byte(token), dst); err != nil {
			return netip.AddrPort{}, false, err
		}
		from, ok, err := await(rcv, token, probeWait)
		if err != nil || ok {
			return from, ok, err
		}
	}
	return netip.AddrPort{}, false, nil
}

// await reads c for up to wait until a datagram with payload token
// arrives, skipping others (late copies of earlier questions).
func await(c *net.UDPConn, token string, wait time.Duration) (netip.AddrPort, bool, error) {
	deadline := time.Now().Add(wait)
	if err := c.SetReadDeadline(deadline); err != nil {
		return netip.AddrPort{}, false, err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return netip.AddrPort{}, false, nil
		}
		if err != nil {
			// ICMP errors surface as read errors on some paths: ignore them
			// until the deadline.
			if time.Now().Before(deadline) {
				continue
			}
			return netip.AddrPort{}, false, nil
		}
		if bytes.Equal(buf[:n], []byte(token)) {
			return netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), true, nil
		}
	}
}

func localAP(c *net.UDPConn) netip.AddrPort {
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func newNonce() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:]) + ":"
}

// behaviorRow is one line of formatTable.
type behaviorRow struct {
	Name     string
	Config   SiteConfig
	Behavior Behavior
}

// Describe returns a short text for a site configuration, e.g.
// "port-restricted behind symmetric, hairpin" or "port-restricted,
// dual-stack IPv6, open IPv6 firewall".
func (c SiteConfig) Describe() string {
	s := string(c.NAT)
	if s == "" {
		s = string(NATNone)
	}
	if c.Outer != "" && c.Outer != NATNone {
		s += " behind " + string(c.Outer)
	}
	if c.Hairpin {
		s += ", hairpin"
	}
	if c.AcceptInbound {
		s += ", accepts inbound"
	}
	switch c.IPv6 {
	case IPv6Dual:
		s += ", dual-stack IPv6"
	case IPv6Only:
		s += ", IPv6 only"
	}
	if c.IPv6Open {
		s += ", open IPv6 firewall"
	}
	return s
}

// formatTable writes rows as an aligned table: site, configuration,
// mapping, filtering, port preservation, hairpin, and the mapped addresses
// seen from A:p1 / A:p2 / B:p1.
func formatTable(w io.Writer, rows []behaviorRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "site\tconfig\tmapping\tfiltering\tport kept\thairpin\tmapped A:p1 / A:p2 / B:p1")
	yn := func(v bool) string {
		if v {
			return "yes"
		}
		return "no"
	}
	for _, r := range rows {
		b := r.Behavior
		mapped := []string{b.MappedA1.String(), b.MappedA2.String(), b.MappedB1.String()}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Config.Describe(), b.Mapping, b.Filtering,
			yn(b.PortPreserved), yn(b.Hairpin), strings.Join(mapped, " / "))
	}
	return tw.Flush()
}
