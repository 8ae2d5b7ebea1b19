package portmap

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// A fake UPnP IGD on loopback: an SSDP responder (a UDP socket the
// client's searches are redirected to, so nothing is multicast) and an
// HTTP server with the root description and a SOAP control URL. The
// gateway is 127.0.0.1.

var loopback = netip.MustParseAddr("127.0.0.1")

type fakeIGD struct {
	t       *testing.T
	ssdp    *net.UDPConn
	srv     *httptest.Server
	service string // service type URN

	mu       sync.Mutex
	location string                             // SSDP LOCATION (default: the root description)
	answerer *net.UDPConn                       // SSDP answers come from it (default: ssdp)
	desc     func(base string) string           // the root description
	faults   map[string][]int                   // per action: error codes for its next calls
	extIP    string                             // GetExternalIPAddress
	calls    []soapCall                         // actions performed
	soapBody func(action string) (string, bool) // overrides an action's answer body
	hits     []string                           // HTTP paths requested
	ctlPath  atomic.Pointer[string]             // the control URL's path
}

type soapCall struct {
	action string
	args   map[string]string
}

func newFakeIGD(t *testing.T, service string) *fakeIGD {
	t.Helper()
	f := &fakeIGD{t: t, service: service, extIP: "198.51.100.9", faults: map[string][]int{}}
	f.setCtl("/ctl/IPConn")
	var err error
	if f.ssdp, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serveHTTP))
	f.desc = f.defaultDesc
	done := make(chan struct{})
	go f.serveSSDP(done)
	t.Cleanup(func() {
		f.ssdp.Close()
		<-done
		f.srv.Close()
	})
	return f
}

func (f *fakeIGD) set(fn func(f *fakeIGD)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeIGD) actions() []soapCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]soapCall(nil), f.calls...)
}

func (f *fakeIGD) setCtl(path string) { f.ctlPath.Store(&path) }

func (f *fakeIGD) defaultDesc(base string) string {
	ctl := *f.ctlPath.Load()
	return `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>1</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType>
<friendlyName>fake</friendlyName>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType>
<serviceList><service>
<serviceType>` + f.service + `</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<SCPDURL>/scpd.xml</SCPDURL><controlURL>` + ctl + `</controlURL><eventSubURL>/evt/IPConn</eventSubURL>
</service></serviceList></device></deviceList></device></deviceList></device></root>`
}

func (f *fakeIGD) serveSSDP(done chan struct{}) {
	defer close(done)
	buf := make([]byte, 2048)
	for {
		n, from, err := f.ssdp.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if !strings.HasPrefix(string(buf[:n]), "M-SEARCH * HTTP/1.1\r\n") || !strings.Contains(string(buf[:n]), "ST: "+ssdpSearch) {
			continue
		}
		f.mu.Lock()
		loc, out := f.location, f.answerer
		f.mu.Unlock()
		if loc == "" {
			loc = f.srv.URL + "/rootDesc.xml"
		}
		if out == nil {
			out = f.ssdp
		}
		out.WriteToUDP([]byte("HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: "+ssdpSearch+
			"\r\nUSN: uuid:fake::"+ssdpSearch+"\r\nEXT:\r\nSERVER: fake UPnP/1.1\r\nLOCATION: "+loc+"\r\n\r\n"), from)
	}
}

func (f *fakeIGD) serveHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.hits = append(f.hits, r.URL.Path)
	desc, ctl := f.desc, *f.ctlPath.Load()
	f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/rootDesc.xml":
		io.WriteString(w, desc(f.srv.URL))
	case r.Method == http.MethodPost && r.URL.Path == ctl:
		f.serveSOAP(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeIGD) serveSOAP(w http.ResponseWriter, r *http.Request) {
	ns, action, _ := strings.Cut(strings.Trim(r.Header.Get("SOAPACTION"), `"`), "#")
	if ns != f.service {
		http.Error(w, "wrong service "+ns, http.StatusBadRequest)
		return
	}
	var env struct {
		Body struct {
			Inner []byte `xml:",innerxml"`
		} `xml:"Body"`
	}
	b, _ := io.ReadAll(r.Body)
	if err := xml.Unmarshal(b, &env); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var act struct {
		Args []struct {
			XMLName xml.Name
			Value   string `xml:",chardata"`
		} `xml:",any"`
	}
	xml.Unmarshal(env.Body.Inner, &act)
	call := soapCall{action: action, args: map[string]string{}}
	for _, a := range act.Args {
		call.args[a.XMLName.Local] = a.Value
	}
	f.mu.Lock()
	f.calls = append(f.calls, call)
	var code int
	if q := f.faults[action]; len(q) > 0 {
		code, f.faults[action] = q[0], q[1:]
	}
	override := f.soapBody
	ext := f.extIP
	f.mu.Unlock()
	if code != 0 {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>error %d</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`, code, code)
		return
	}
	if override != nil {
		if body, ok := override(action); ok {
			io.WriteString(w, body)
			return
		}
	}
	var out string
	switch action {
	case "GetExternalIPAddress":
		out = "<NewExternalIPAddress>" + ext + "</NewExternalIPAddress>"
	case "AddAnyPortMapping":
		out = "<NewReservedPort>" + call.args["NewExternalPort"] + "</NewReservedPort>"
	}
	fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%sResponse xmlns:u="%s">%s</u:%sResponse></s:Body></s:Envelope>`, action, f.service, out, action)
}

// redirectPC sends everything written to it to the fake's SSDP socket.
type redirectPC struct {
	net.PacketConn
	to net.Addr
}

func (p redirectPC) WriteTo(b []byte, _ net.Addr) (int, error) { return p.PacketConn.WriteTo(b, p.to) }

// client returns a UPnP-only Client for the fake. Every TCP dial goes
// through it and is recorded: none may go anywhere but the gateway.
func (f *fakeIGD) client(t *testing.T, cfg Config) (*Client, *[]string) {
	t.Helper()
	var mu sync.Mutex
	var dials []string
	cfg.LocalPort = 40000
	cfg.Gateway = loopback
	if cfg.Protocols == nil {
		cfg.Protocols = []Protocol{UPnP}
	}
	cfg.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		if network == "tcp" {
			mu.Lock()
			dials = append(dials, address)
			mu.Unlock()
		}
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
	cfg.ListenPacket = func(ctx context.Context, network, address string) (net.PacketConn, error) {
		var lc net.ListenConfig
		pc, err := lc.ListenPacket(ctx, network, "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		return redirectPC{pc, f.ssdp.LocalAddr()}, nil
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c, &dials
}

func (f *fakeIGD) port() string { return strings.TrimPrefix(f.srv.URL, "http://127.0.0.1:") }

// TestUPnPMapRenewDelete: WANIPConnection:2 maps with AddAnyPortMapping
// for the local address and port, renews with AddPortMapping of the
// reserved port, and Close deletes it; a private external address is
// accepted as it is.
func TestUPnPMapRenewDelete(t *testing.T) {
	leakcheck.Check(t)
	f := newFakeIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:2")
	f.set(func(f *fakeIGD) { f.extIP = "192.168.100.2" })
	c, dials := f.client(t, Config{Lifetime: 2 * time.Second})
	m, err := c.Map(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if m.Protocol != UPnP || m.External != netip.MustParseAddrPort("192.168.100.2:40000") ||
		m.Internal != netip.MustParseAddrPort("127.0.0.1:40000") || m.Lifetime != 2*time.Second {
		t.Fatalf("mapping %+v", m)
	}
	calls := f.actions()
	var add *soapCall
	for i := range calls {
		if calls[i].action == "AddAnyPortMapping" {
			add = &calls[i]
		}
	}
	want := map[string]string{"NewRemoteHost": "", "NewExternalPort": "40000", "NewProtocol": "UDP",
		"NewInternalPort": "40000", "NewInternalClient": "127.0.0.1", "NewEnabled": "1",
		"NewPortMappingDescription": DefaultDescription, "NewLeaseDuration": "2"}
	if add == nil || fmt.Sprint(add.args) != fmt.Sprint(want) {
		t.Fatalf("AddAnyPortMapping call %+v, want args %v (all calls %+v)", add, want, calls)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().Renewals < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if c.Stats().Renewals < 1 {
		t.Fatal("no renewal within 5 s of a 2 s lease")
	}
	calls = f.actions()
	var renew *soapCall
	for i := range calls {
		if calls[i].action == "AddPortMapping" {
			renew = &calls[i]
		}
	}
	if renew == nil || renew.args["NewExternalPort"] != "40000" {
		t.Fatalf("renewal %+v", renew)
	}
	if err := c.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	calls = f.actions()
	last := calls[len(calls)-1]
	if last.action != "DeletePortMapping" || last.args["NewExternalPort"] != "40000" || last.args["NewProtocol"] != "UDP" {
		t.Fatalf("last call %+v, want DeletePortMapping of UDP 40000", last)
	}
	for _, d := range *dials {
		if d != "127.0.0.1:"+f.port() {
			t.Fatalf("dialled %s", d)
		}
	}
}

// TestUPnPv1Faults: WANIPConnection:1 has no AddAnyPortMapping; a lease
// refused with 725 becomes permanent, a conflict (718) moves to another
// port.
func TestUPnPv1Faults(t *testing.T) {
	leakcheck.Check(t)
	f := newFakeIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:1")
	f.set(func(f *fakeIGD) { f.faults["AddPortMapping"] = []int{upnpOnlyPermanentLease, upnpConflict} })
	c, _ := f.client(t, Config{})
	m, err := c.Map(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var adds []soapCall
	for _, call := range f.actions() {
		if strings.HasPrefix(call.action, "Add") {
			adds = append(adds, call)
		}
	}
	if len(adds) != 3 || adds[0].action != "AddPortMapping" || adds[0].args["NewLeaseDuration"] != "7200" ||
		adds[1].args["NewLeaseDuration"] != "0" || adds[1].args["NewExternalPort"] != "40000" ||
		adds[2].args["NewLeaseDuration"] != "0" || adds[2].args["NewExternalPort"] == "40000" {
		t.Fatalf("add calls %+v", adds)
	}
	if m.External.Port() == 40000 || strconv.Itoa(int(m.External.Port())) != adds[2].args["NewExternalPort"] || !m.Expires.IsZero() {
		t.Fatalf("mapping %+v after the conflict, want the third call's port and no expiry", m)
	}
}

// TestUPnPErrors: a SOAP fault that is not retried ends Map with a
// *ResultError carrying the code.
func TestUPnPErrors(t *testing.T) {
	leakcheck.Check(t)
	f := newFakeIGD(t, "urn:schemas-upnp-org:service:WANPPPConnection:1")
	f.set(func(f *fakeIGD) { f.faults["AddPortMapping"] = []int{606} })
	c, _ := f.client(t, Config{})
	_, err := c.Map(t.Context())
	var re *ResultError
	if !errors.As(err, &re) || re.Protocol != UPnP || re.Code != 606 {
		t.Fatalf("Map: %v", err)
	}
}

// TestUPnPUntrusted: LOCATION, URLBase and control URLs off the
// gateway's address, SSDP answers from another address, and a gateway
// with a public address are refused, and nothing off the gateway is
// contacted.
func TestUPnPUntrusted(t *testing.T) {
	leakcheck.Check(t)
	// A server on another loopback address stands for an attacker's.
	other, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2: %v", err)
	}
	otherURL := "http://" + other.Addr().String()
	var otherHits sync.Mutex
	hits := 0
	otherSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Lock()
		hits++
		otherHits.Unlock()
	})}
	go otherSrv.Serve(other)
	t.Cleanup(func() { otherSrv.Close() })

	withService := func(desc string, base, control string) string {
		desc = strings.Replace(desc, "<controlURL>/ctl/IPConn</controlURL>", "<controlURL>"+control+"</controlURL>", 1)
		if base != "" {
			desc = strings.Replace(desc, "<specVersion>", "<URLBase>"+base+"</URLBase><specVersion>", 1)
		}
		return desc
	}
	cases := []struct {
		name  string
		setup func(f *fakeIGD)
		want  error
	}{
		{"location off the gateway", func(f *fakeIGD) { f.location = otherURL + "/rootDesc.xml" }, ErrUntrustedURL},
		{"location by name", func(f *fakeIGD) { f.location = "http://localhost:" + f.port() + "/rootDesc.xml" }, ErrUntrustedURL},
		{"location https", func(f *fakeIGD) { f.location = "https://127.0.0.1:" + f.port() + "/rootDesc.xml" }, ErrUntrustedURL},
		{"URLBase off the gateway", func(f *fakeIGD) {
			d := f.defaultDesc("")
			f.desc = func(string) string { return withService(d, otherURL+"/", "ctl/IPConn") }
		}, ErrUntrustedURL},
		{"absolute control URL off the gateway", func(f *fakeIGD) {
			d := f.defaultDesc("")
			f.desc = func(string) string { return withService(d, "", otherURL+"/ctl/IPConn") }
		}, ErrUntrustedURL},
		{"SSDP answer from another address", func(f *fakeIGD) {
			a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Close() })
			f.answerer = a
		}, ErrNoResponse},
	}
	t.Cleanup(func() {
		otherHits.Lock()
		defer otherHits.Unlock()
		if hits != 0 {
			t.Errorf("the other server got %d requests", hits)
		}
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // most wait out the 2 s SSDP window
			f := newFakeIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:1")
			f.set(tc.setup)
			c, dials := f.client(t, Config{})
			_, err := c.Map(t.Context())
			if !errors.Is(err, tc.want) {
				t.Fatalf("Map: %v, want %v", err, tc.want)
			}
			for _, d := range *dials {
				if d != "127.0.0.1:"+f.port() {
					t.Fatalf("dialled %s", d)
				}
			}
			if tc.want == ErrNoResponse && c.Stats().Dropped == 0 {
				t.Fatal("the foreign SSDP answers were not counted as dropped")
			}
		})
	}
	// A public gateway address: no SSDP search at all.
	c, err := New(Config{LocalPort: 40000, Gateway: netip.MustParseAddr("192.0.2.1"), Protocols: []Protocol{UPnP},
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			if network != "udp4" {
				t.Errorf("dialled %s %s", network, address)
			}
			return (&net.Dialer{}).DialContext(ctx, "udp4", "127.0.0.1:9") // only connected, for the local address
		},
		ListenPacket: func(context.Context, string, string) (net.PacketConn, error) {
			t.Error("an SSDP socket for a public gateway")
			return nil, errTest
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Map(t.Context()); !errors.Is(err, ErrUntrustedURL) {
		t.Fatalf("public gateway: %v", err)
	}
}

// TestUPnPBounded: descriptions and SOAP answers over their limits, a
// redirect and garbage XML fail with clear errors.
func TestUPnPBounded(t *testing.T) {
	leakcheck.Check(t)
	huge := strings.Repeat("<!-- padding -->", maxDescSize/16+1)
	cases := []struct {
		name  string
		setup func(f *fakeIGD)
		want  error
	}{
		{"huge description", func(f *fakeIGD) {
			d := f.defaultDesc("")
			f.desc = func(string) string { return strings.Replace(d, "<friendlyName>", huge+"<friendlyName>", 1) }
		}, ErrTooLarge},
		{"garbage description", func(f *fakeIGD) { f.desc = func(string) string { return "<root><device>" } }, ErrMalformed},
		{"redirected description", func(f *fakeIGD) { f.location = f.srv.URL + "/moved" }, ErrMalformed},
		{"no WAN service", func(f *fakeIGD) {
			d := f.defaultDesc("")
			f.desc = func(string) string {
				return strings.Replace(d, f.service, "urn:schemas-upnp-org:service:Layer3Forwarding:1", 1)
			}
		}, ErrUnsupported},
		{"no external address", func(f *fakeIGD) { f.extIP = "0.0.0.0" }, ErrNoExternalAddress},
		{"huge SOAP answer", func(f *fakeIGD) {
			f.soapBody = func(action string) (string, bool) {
				return strings.Repeat(" ", maxSOAPSize+1), action == "GetExternalIPAddress"
			}
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:1")
			if tc.name == "redirected description" {
				f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/moved" {
						http.Redirect(w, r, "http://127.0.0.2/rootDesc.xml", http.StatusFound)
						return
					}
					f.serveHTTP(w, r)
				})
			}
			f.set(tc.setup)
			c, _ := f.client(t, Config{})
			_, err := c.Map(t.Context())
			if err == nil {
				t.Fatal("Map succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Map: %v, want %v", err, tc.want)
			}
			if tc.want == nil && !strings.Contains(err.Error(), ErrTooLarge.Error()) {
				t.Fatalf("Map: %v, want %v", err, ErrTooLarge)
			}
		})
	}
}

// TestUPnPLatin1: a description declaring ISO-8859-1 is read.
func TestUPnPLatin1(t *testing.T) {
	leakcheck.Check(t)
	f := newFakeIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:1")
	d := f.defaultDesc("")
	f.set(func(f *fakeIGD) {
		f.desc = func(string) string {
			return strings.Replace(strings.Replace(d, `<?xml version="1.0"?>`, `<?xml version="1.0" encoding="ISO-8859-1"?>`, 1),
				"<friendlyName>fake", "<friendlyName>Bo\xeete", 1)
		}
	})
	c, _ := f.client(t, Config{})
	if _, err := c.Map(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestProbeAll: with the fake IGD and silent PCP/NAT-PMP (nothing on
// their port: refused), Probe reports UPnP only and the default Map uses
// it.
func TestProbeAll(t *testing.T) {
	leakcheck.Check(t)
	f := newFakeIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:2")
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := pc.LocalAddr().String()
	pc.Close()
	c, _ := f.client(t, Config{Protocols: []Protocol{PCP, NATPMP, UPnP}})
	dial := c.cfg.Dial
	c.cfg.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		if network == "udp4" {
			address = closedPort
		}
		return dial(ctx, network, address)
	}
	a, err := c.Probe(t.Context())
	if err != nil || a != (Availability{Gateway: loopback, UPnP: true}) {
		t.Fatalf("Probe = %+v, %v", a, err)
	}
	m, err := c.Map(t.Context())
	if err != nil || m.Protocol != UPnP {
		t.Fatalf("Map = %+v, %v", m, err)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestUPnPRediscovers: a router that restarted with its control URL
// elsewhere fails the renewals; once the mapping is lost the Client finds
// the service again (not the stale one it knew) and maps anew.
func TestUPnPRediscovers(t *testing.T) {
	leakcheck.Check(t)
	f := newFakeIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:2")
	c, _ := f.client(t, Config{Lifetime: 2 * time.Second})
	m, err := c.Map(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f.setCtl("/ctl/moved")
	waitFor(t, "the mapping lost and made again", func() bool {
		cur, ok := c.Current()
		return c.Stats().Lost == 1 && ok && cur.External == m.External
	})
	var moved, descs int
	f.mu.Lock()
	for _, h := range f.hits {
		switch h {
		case "/ctl/moved":
			moved++
		case "/rootDesc.xml":
			descs++
		}
	}
	f.mu.Unlock()
	if moved == 0 || descs != 2 {
		t.Fatalf("control requests at the new URL: %d, description fetches: %d (want 2)", moved, descs)
	}
}

// TestUPnPPermanentLost: a permanent mapping whose re-adding fails for a
// whole Lifetime counts as lost, and OnChange says so.
func TestUPnPPermanentLost(t *testing.T) {
	leakcheck.Check(t)
	f := newFakeIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:1")
	f.set(func(f *fakeIGD) { f.faults["AddPortMapping"] = []int{upnpOnlyPermanentLease} })
	lost := make(chan Mapping, 4)
	c, _ := f.client(t, Config{Lifetime: 2 * time.Second, OnChange: func(m Mapping) { lost <- m }})
	m, err := c.Map(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !m.Expires.IsZero() {
		t.Fatalf("mapping %+v: want a permanent one", m)
	}
	f.set(func(f *fakeIGD) {
		f.faults["AddPortMapping"] = make([]int, 1000)
		for i := range f.faults["AddPortMapping"] {
			f.faults["AddPortMapping"][i] = 501
		}
	})
	start := time.Now()
	select {
	case ch := <-lost:
		if ch.Valid() || ch.Protocol != UPnP {
			t.Fatalf("OnChange(%+v), want the loss", ch)
		}
		if d := time.Since(start); d < time.Second {
			t.Fatalf("lost after %v: before its Lifetime", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no loss reported")
	}
}
