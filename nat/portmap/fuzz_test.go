package portmap

import (
	"errors"
	"net/netip"
	"net/url"
	"testing"
)

// FuzzParse feeds arbitrary datagrams to every answer parser: none may
// panic, and whatever they accept must be usable.
func FuzzParse(f *testing.F) {
	g := newFakeGW()
	req := &pcpMapRequest{client: testLocal, internal: 40000, lifetime: 7200}
	f.Add(g.handlePCP(req.marshal()))
	f.Add(g.handlePCP(pcpAnnounceRequest(testLocal)))
	f.Add(g.handlePMP(pmpExternalRequest()))
	f.Add(g.handlePMP(pmpMapRequest(40000, 40000, 7200)))
	f.Add([]byte{0, 129, 0, 1, 0, 0, 0, 0})
	f.Add([]byte("HTTP/1.1 200 OK\r\nST: " + ssdpSearch + "\r\nLOCATION: http://10.9.0.1:2189/rootDesc.xml\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nST: x:device:InternetGatewayDevice:1\r\nLOCATION: http://[::ffff:10.9.0.1]:1/\r\n\r\n"))
	f.Add([]byte(`<?xml version="1.0" encoding="ISO-8859-1"?><root xmlns="urn:schemas-upnp-org:device-1-0"><URLBase>http://10.9.0.1:5/</URLBase><device><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>ctl</controlURL></service></serviceList></device></root>`))
	loc, _ := url.Parse("http://10.9.0.1:2189/rootDesc.xml")
	f.Fuzz(func(t *testing.T, b []byte) {
		if res, err := parsePCPMap(b, req); err == nil {
			if !res.external.Addr().Is4() || res.external.Addr().IsUnspecified() || res.external.Port() == 0 || res.lifetime == 0 {
				t.Fatalf("PCP accepted %v for %v", res, b)
			}
		} else if !errors.Is(err, errSkip) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrMalformed) &&
			!errors.Is(err, ErrNoExternalAddress) && !errors.As(err, new(*ResultError)) {
			t.Fatalf("PCP error %v", err)
		}
		parsePCPAnnounce(b)
		if ip, err := parsePMPExternal(b); err == nil && (!ip.Is4() || ip.IsUnspecified()) {
			t.Fatalf("NAT-PMP external %v", ip)
		}
		if res, err := parsePMPMap(b, 40000, 7200); err == nil && (res.external == 0 || res.lifetime == 0) {
			t.Fatalf("NAT-PMP accepted %+v", res)
		}
		if u, err := parseSSDP(b, testGW); err == nil {
			if checkURL(u, testGW) != nil {
				t.Fatalf("SSDP accepted %v", u)
			}
			if a, err := netip.ParseAddr(u.Hostname()); err != nil || a.Unmap() != testGW {
				t.Fatalf("SSDP location %v is not on %v", u, testGW)
			}
		}
		if root, err := parseDescription(b, loc, testGW); err == nil {
			// Whatever the document says, the control URLs that would be
			// used are checked; and a URLBase that passed is on testGW.
			for _, kind := range upnpServiceTypes {
				for _, srv := range root.Device.FindService(kind) {
					u := srv.ControlURL.URL
					if srv.ControlURL.Ok && checkURL(&u, testGW) == nil && netip.MustParseAddr(u.Hostname()).Unmap() != testGW {
						t.Fatalf("control URL %v passed", &u)
					}
				}
			}
			if base := root.URLBase; base.Host != "" && checkURL(&base, testGW) != nil {
				t.Fatalf("URLBase %v accepted", &base)
			}
		}
	})
}
