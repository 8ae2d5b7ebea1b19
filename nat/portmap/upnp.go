package portmap

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/soap"
)

// UPnP IGD: SSDP discovery (UPnP Device Architecture 1.1 §1.3), the root
// device description, and the WANIPConnection / WANPPPConnection SOAP
// actions, through huin/goupnp's description types and generated clients.
// What is fetched and from where is decided here, not by goupnp: its
// discovery asks every interface and fetches whatever LOCATION a responder
// names, with its package-wide HTTP client and no size limit.
const (
	ssdpPort    = 1900
	ssdpSearch  = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
	upnpUDP     = "UDP" // upper case: some routers refuse "udp"
	maxLease    = 604800
	maxDescSize = 256 << 10 // a root device description
	maxSOAPSize = 64 << 10  // a SOAP answer
	maxHeader   = 16 << 10
	httpTimeout = 5 * time.Second // one HTTP request, headers and body
	ssdpWait    = 2 * time.Second // MX is 1: answers come within a second
)

var ssdpGroup = netip.AddrPortFrom(netip.AddrFrom4([4]byte{239, 255, 255, 250}), ssdpPort)

// UPnP error codes (WANIPConnection:2 §2.4).
const (
	upnpConflict           = 718 // ConflictInMappingEntry
	upnpSamePortRequired   = 724 // SamePortValuesRequired
	upnpOnlyPermanentLease = 725 // OnlyPermanentLeasesSupported
)

// igdClient is what the three WAN connection services share.
type igdClient interface {
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
	AddPortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string,
		internalPort uint16, internalClient string, enabled bool, description string, lease uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string) error
}

// anyPortMapper is WANIPConnection:2's AddAnyPortMapping: the gateway
// picks a free external port itself.
type anyPortMapper interface {
	AddAnyPortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string,
		internalPort uint16, internalClient string, enabled bool, description string, lease uint32) (uint16, error)
}

// upnpService is a WAN connection service found on the gateway.
type upnpService struct {
	gw      netip.Addr
	kind    string // its service type URN
	control *url.URL
	client  igdClient
}

// upnpServiceTypes in order of preference.
var upnpServiceTypes = []string{
	internetgateway2.URN_WANIPConnection_2,
	internetgateway2.URN_WANIPConnection_1,
	internetgateway2.URN_WANPPPConnection_1,
}

// trustedGateway checks that UPnP may talk to gw at all: only a private,
// link-local or loopback address, the kind a home router's LAN side has.
func trustedGateway(gw netip.Addr) error {
	gw = gw.Unmap()
	if gw.IsPrivate() || gw.IsLinkLocalUnicast() || gw.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: gateway %v is not a private or link-local address", ErrUntrustedURL, gw)
}

// checkURL accepts only http://<gw>[:port]/... with gw as a literal.
func checkURL(u *url.URL, gw netip.Addr) error {
	if u.Scheme != "http" || u.User != nil || u.Opaque != "" {
		return fmt.Errorf("%w: %q", ErrUntrustedURL, u.Redacted())
	}
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil || a.Unmap() != gw.Unmap() {
		return fmt.Errorf("%w: %q is not on %v", ErrUntrustedURL, u.Redacted(), gw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%w: %q", ErrUntrustedURL, u.Redacted())
		}
	}
	return nil
}

// discoverUPnP finds the gateway's WAN connection service: an SSDP search
// answered by gw, its root device description, and the first service in
// upnpServiceTypes whose control URL is on gw and that reports an
// external address. It does not look at the connection's status nor at
// whether the external address is private: a gateway behind another NAT
// still maps ports, and the caller decides what the address is worth.
func (c *Client) discoverUPnP(ctx context.Context, gw, local netip.Addr) (*upnpService, error) {
	if err := trustedGateway(gw); err != nil {
		return nil, err
	}
	loc, err := c.ssdp(ctx, gw, local)
	if err != nil {
		return nil, err
	}
	root, err := c.description(ctx, loc, gw)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, kind := range upnpServiceTypes {
		for _, srv := range root.Device.FindService(kind) {
			if !srv.ControlURL.Ok {
				errs = append(errs, fmt.Errorf("%w: %s has no control URL", ErrMalformed, kind))
				continue
			}
			u := srv.ControlURL.URL
			if err := checkURL(&u, gw); err != nil {
				errs = append(errs, err)
				continue
			}
			s := &upnpService{gw: gw, kind: kind, control: &u, client: c.igdClient(root, loc, srv)}
			if _, err := c.upnpExternalIP(ctx, s); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", kind, err))
				continue
			}
			return s, nil
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%w: the IGD at %s has no WANIPConnection or WANPPPConnection service", ErrUnsupported, loc.Redacted())
	}
	return nil, errors.Join(errs...)
}

// igdClient builds goupnp's generated client for srv, with the Client's
// HTTP client (bounded answers, no redirects, Config.Dial).
func (c *Client) igdClient(root *goupnp.RootDevice, loc *url.URL, srv *goupnp.Service) igdClient {
	sc := srv.NewSOAPClient()
	sc.HTTPClient = *c.httpClient(maxSOAPSize)
	gc := goupnp.ServiceClient{SOAPClient: sc, RootDevice: root, Location: loc, Service: srv}
	switch srv.ServiceType {
	case internetgateway2.URN_WANIPConnection_2:
		return &internetgateway2.WANIPConnection2{ServiceClient: gc}
	case internetgateway2.URN_WANIPConnection_1:
		return &internetgateway2.WANIPConnection1{ServiceClient: gc}
	default:
		return &internetgateway2.WANPPPConnection1{ServiceClient: gc}
	}
}

// ssdp sends an M-SEARCH for an IGD to the SSDP group and to gw itself
// (at 0, 250 and 750 ms) and returns the LOCATION of the first valid
// answer that comes from gw and points at gw. Answers from other
// addresses, and answers that do not parse, are dropped and counted.
func (c *Client) ssdp(ctx context.Context, gw, local netip.Addr) (*url.URL, error) {
	laddr := ":0"
	if local.IsValid() {
		laddr = netip.AddrPortFrom(local, 0).String()
	}
	pc, err := c.listenPacket(ctx, "udp4", laddr)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()

	req := []byte("M-SEARCH * HTTP/1.1\r\n" +
		"HOST: 239.255.255.250:1900\r\n" +
		"MAN: \"ssdp:discover\"\r\n" +
		"MX: 1\r\n" +
		"ST: " + ssdpSearch + "\r\n\r\n")
	start := time.Now()
	// Sends at 0, 250 and 750 ms; answers awaited until ssdpWait.
	deadlines := []time.Duration{250 * time.Millisecond, 750 * time.Millisecond, ssdpWait}
	buf := make([]byte, 2048)
	var lastErr error
	for _, d := range deadlines {
		pc.WriteTo(req, net.UDPAddrFromAddrPort(ssdpGroup))
		pc.WriteTo(req, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw, ssdpPort)))
		if err := pc.SetReadDeadline(start.Add(d)); err != nil {
			return nil, c.ioError(ctx, err)
		}
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
					break
				}
				return nil, c.ioError(ctx, err)
			}
			src, ok := netip.AddrFromSlice(udpIP(from))
			if !ok || src.Unmap() != gw.Unmap() {
				c.dropped.Add(1)
				continue
			}
			loc, err := parseSSDP(buf[:n], gw)
			if err != nil {
				c.dropped.Add(1)
				if !errors.Is(err, errSkip) {
					lastErr = err
				}
				continue
			}
			return loc, nil
		}
	}
	if lastErr != nil {
		return nil, lastErr
	}
	return nil, fmt.Errorf("%w: no SSDP answer from %v", ErrNoResponse, gw)
}

func udpIP(a net.Addr) net.IP {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.IP
	}
	return nil
}

// parseSSDP reads an SSDP search answer (an HTTP response in one
// datagram) and returns its LOCATION, which must be on gw. Answers for
// other search targets are errSkip.
func parseSSDP(b []byte, gw netip.Addr) (*url.URL, error) {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), &http.Request{Method: "M-SEARCH"})
	if err != nil {
		return nil, errSkip
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errSkip
	}
	st := resp.Header.Get("ST")
	if !strings.Contains(st, ":device:InternetGatewayDevice:") &&
		!strings.Contains(st, ":service:WANIPConnection:") && !strings.Contains(st, ":service:WANPPPConnection:") {
		return nil, errSkip
	}
	loc, err := url.Parse(strings.TrimSpace(resp.Header.Get("LOCATION")))
	if err != nil {
		return nil, fmt.Errorf("%w: SSDP LOCATION: %v", ErrMalformed, err)
	}
	if err := checkURL(loc, gw); err != nil {
		return nil, err
	}
	return loc, nil
}

// description fetches and parses the root device description at loc.
func (c *Client) description(ctx context.Context, loc *url.URL, gw netip.Addr) (*goupnp.RootDevice, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.httpClient(maxDescSize).Do(req)
	if err != nil {
		return nil, fmt.Errorf("portmap: upnp: fetching %s: %w", loc.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s answered %s", ErrMalformed, loc.Redacted(), resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("portmap: upnp: reading %s: %w", loc.Redacted(), err)
	}
	return parseDescription(body, loc, gw)
}

// parseDescription parses a root device description fetched from loc and
// resolves its URLs against URLBase (which must be on gw too) or loc.
func parseDescription(body []byte, loc *url.URL, gw netip.Addr) (*goupnp.RootDevice, error) {
	root := new(goupnp.RootDevice)
	d := xml.NewDecoder(bytes.NewReader(body))
	d.DefaultSpace = goupnp.DeviceXMLNamespace
	d.CharsetReader = charsetReader
	if err := d.Decode(root); err != nil {
		return nil, fmt.Errorf("%w: device description: %v", ErrMalformed, err)
	}
	base := loc
	if s := strings.TrimSpace(root.URLBaseStr); s != "" {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%w: URLBase: %v", ErrMalformed, err)
		}
		if err := checkURL(u, gw); err != nil {
			return nil, err
		}
		base = u
	}
	root.SetURLBase(base)
	return root, nil
}

// charsetReader lets descriptions declare ISO-8859-1 or US-ASCII, as some
// routers do; encoding/xml reads UTF-8 only.
func charsetReader(charset string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "iso-8859-1", "latin1", "latin-1", "us-ascii", "ascii":
		b, err := io.ReadAll(in)
		if err != nil {
			return nil, err
		}
		var out strings.Builder
		for _, ch := range b {
			out.WriteRune(rune(ch))
		}
		return strings.NewReader(out.String()), nil
	}
	return nil, fmt.Errorf("unsupported charset %q", charset)
}

// httpClient returns an HTTP client for the gateway: Config.Dial, no
// proxy, no redirects, no kept connections, bounded headers, answers
// longer than limit fail with ErrTooLarge, httpTimeout per request.
func (c *Client) httpClient(limit int64) *http.Client {
	t := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return c.dial(ctx, network, addr)
		},
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: maxHeader,
		ResponseHeaderTimeout:  httpTimeout,
	}
	return &http.Client{
		Transport: limitTransport{t, limit},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a 3xx is then an error status
		},
		Timeout: httpTimeout,
	}
}

type limitTransport struct {
	rt    http.RoundTripper
	limit int64
}

func (t limitTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.limit {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, resp.ContentLength)
	}
	resp.Body = &limitedBody{rc: resp.Body, left: t.limit}
	return resp, nil
}

// limitedBody fails with ErrTooLarge once more than its limit is read
// (io.LimitReader would end quietly and leave a truncated document).
type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n > 0 {
			return 0, ErrTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// upnpCode returns the UPnP error code of a SOAP fault, or 0.
func upnpCode(err error) int {
	var f *soap.SOAPFaultError
	if errors.As(err, &f) {
		return f.Detail.UPnPError.Errorcode
	}
	return 0
}

// upnpError turns a SOAP fault into a *ResultError (other errors pass).
func upnpError(err error) error {
	var f *soap.SOAPFaultError
	if errors.As(err, &f) {
		return &ResultError{Protocol: UPnP, Code: f.Detail.UPnPError.Errorcode, Name: f.Detail.UPnPError.ErrorDescription}
	}
	return err
}

func (c *Client) upnpExternalIP(ctx context.Context, s *upnpService) (netip.Addr, error) {
	str, err := s.client.GetExternalIPAddressCtx(ctx)
	if err != nil {
		return netip.Addr{}, upnpError(err)
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(str))
	if err != nil || !ip.Unmap().Is4() || ip.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("%w: GetExternalIPAddress said %q", ErrNoExternalAddress, str)
	}
	return ip.Unmap(), nil
}

// upnpMap adds (or, with prev, renews) the UDP mapping of the local port
// to local through s. The first mapping asks for the local port as the
// external one (WANIPConnection:2 lets the gateway pick another if it is
// taken); on a conflict it tries random ports, three at most; a gateway
// that only keeps permanent mappings gets lease 0.
func (c *Client) upnpMap(ctx context.Context, s *upnpService, local netip.Addr, prev *mapping) (*mapping, error) {
	lease := c.leaseSeconds(maxLease)
	ext := c.cfg.LocalPort
	if prev != nil {
		ext = prev.External.Port()
		if prev.Expires.IsZero() {
			lease = 0
		}
	}
	internal := local.String()
	desc := c.cfg.Description
	var err error
	added := false
	if a, ok := s.client.(anyPortMapper); ok && prev == nil {
		var port uint16
		port, err = a.AddAnyPortMappingCtx(ctx, "", ext, upnpUDP, c.cfg.LocalPort, internal, true, desc, lease)
		switch {
		case err == nil && port != 0:
			ext, added = port, true
		case err == nil:
			err = fmt.Errorf("%w: AddAnyPortMapping reserved port 0", ErrMalformed)
		case upnpCode(err) == upnpOnlyPermanentLease:
			lease = 0
		}
		if err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	for try := 0; !added && try < 4; try++ {
		err = s.client.AddPortMappingCtx(ctx, "", ext, upnpUDP, c.cfg.LocalPort, internal, true, desc, lease)
		if err == nil {
			added = true
			break
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		switch upnpCode(err) {
		case upnpOnlyPermanentLease:
			if lease != 0 {
				lease = 0
				try--
				continue
			}
		case upnpConflict:
			ext = uint16(1024 + rand.IntN(65536-1024))
			continue
		case upnpSamePortRequired:
			if ext != c.cfg.LocalPort {
				ext = c.cfg.LocalPort
				continue
			}
		}
		return nil, upnpError(err)
	}
	if !added {
		return nil, upnpError(err)
	}
	ip, err := c.upnpExternalIP(ctx, s)
	if err != nil {
		// The mapping exists but is no use without its address.
		c.upnpDelete(ctx, s, ext)
		return nil, err
	}
	now := time.Now()
	m := &mapping{upnp: s}
	m.Protocol = UPnP
	m.External = netip.AddrPortFrom(ip, ext)
	m.Internal = netip.AddrPortFrom(local, c.cfg.LocalPort)
	m.Gateway = s.gw
	m.Lifetime = time.Duration(lease) * time.Second
	if lease == 0 {
		// Permanent: the gateway keeps it until deleted. It is still
		// re-added every half Lifetime, which restores it after a
		// gateway restart and notices a changed external address; and
		// it counts as lost when that fails for a whole Lifetime.
		m.renewAt = now.Add(c.cfg.Lifetime / 2)
		m.deadline = now.Add(c.cfg.Lifetime)
	} else {
		m.Expires = now.Add(m.Lifetime)
		m.deadline = m.Expires
		m.renewAt = now.Add(m.Lifetime / 2)
	}
	return m, nil
}

func (c *Client) upnpDelete(ctx context.Context, s *upnpService, ext uint16) error {
	return upnpError(s.client.DeletePortMappingCtx(ctx, "", ext, upnpUDP))
}
