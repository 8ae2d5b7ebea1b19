package portmap

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

func mustMap(t *testing.T, c *Client) Mapping {
	t.Helper()
	m, err := c.Map(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func closeClient(t *testing.T, c *Client) {
	t.Helper()
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestMapRenewDelete: for PCP and NAT-PMP, Map returns the gateway's
// mapping, the Client renews it at half the granted lifetime (PCP with
// the same nonce, both suggesting the external port they have), and
// Close deletes it (lifetime 0; PCP with the nonce, NAT-PMP with
// external port 0).
func TestMapRenewDelete(t *testing.T) {
	for _, proto := range []Protocol{PCP, NATPMP} {
		t.Run(string(proto), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newFakeGW()
				g.maxLife = 600
				g.nextExt = 50123
				c := testClient(g, Config{Protocols: []Protocol{proto}, Lifetime: time.Hour})
				start := time.Now()
				m := mustMap(t, c)
				want := Mapping{Protocol: proto, External: netip.AddrPortFrom(testExtIP, 50123),
					Internal: netip.AddrPortFrom(testLocal, 40000), Gateway: testGW,
					Lifetime: 600 * time.Second, Expires: start.Add(600 * time.Second)}
				if !m.Expires.Equal(want.Expires) {
					t.Fatalf("Expires %v, want %v", m.Expires.Sub(start), want.Expires.Sub(start))
				}
				m.Expires, want.Expires = time.Time{}, time.Time{}
				if m != want {
					t.Fatalf("Map = %+v\nwant %+v", m, want)
				}
				first := g.reqs()
				if proto == NATPMP && (len(first) != 2 || first[0].op != pmpOpExternal) {
					t.Fatalf("NAT-PMP requests %+v: want the external address first, then the mapping", first)
				}
				mreq := first[len(first)-1]
				if mreq.internal != 40000 || mreq.suggest != 40000 || mreq.lifetime != 3600 {
					t.Fatalf("first mapping request %+v: want internal 40000, suggested 40000, lifetime 3600", mreq)
				}

				time.Sleep(299 * time.Second)
				if n := len(g.reqs()); n != len(first) {
					t.Fatalf("%d requests before half the lifetime, want %d", n, len(first))
				}
				time.Sleep(2 * time.Second)
				synctest.Wait()
				reqs := g.reqs()
				renew := reqs[len(reqs)-1]
				if renew.at.Sub(start) != 300*time.Second || renew.suggest != 50123 || renew.lifetime != 3600 {
					t.Fatalf("renewal %+v at %v: want at 300s suggesting 50123 for 3600 s", renew, renew.at.Sub(start))
				}
				if proto == PCP && renew.nonce != mreq.nonce {
					t.Fatal("PCP renewal with another nonce")
				}
				if cur, _ := c.Current(); !cur.Expires.Equal(start.Add(900 * time.Second)) {
					t.Fatalf("after renewal Expires = %v, want %v", cur.Expires.Sub(start), 900*time.Second)
				}
				if st := c.Stats(); st.Renewals != 1 {
					t.Fatalf("stats %+v, want 1 renewal", st)
				}

				closeClient(t, c)
				reqs = g.reqs()
				del := reqs[len(reqs)-1]
				if del.lifetime != 0 || (proto == PCP && del.nonce != mreq.nonce) || (proto == NATPMP && del.suggest != 0) {
					t.Fatalf("deletion request %+v", del)
				}
				if _, ok := g.mapping(40000); ok {
					t.Fatal("mapping still on the gateway after Close")
				}
				if _, err := c.Map(t.Context()); err != ErrClosed {
					t.Fatalf("Map after Close: %v", err)
				}
				if err := c.Close(context.Background()); err != nil {
					t.Fatalf("second Close: %v", err)
				}
			})
		})
	}
}

// TestRetransmitSchedule: requests go out at 0, 250, 750 and 1750 ms,
// and after 3.75 s without an answer Map fails with ErrNoResponse.
func TestRetransmitSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeGW()
		g.silent = true
		c := testClient(g, Config{Protocols: []Protocol{PCP}})
		defer closeClient(t, c)
		start := time.Now()
		done := make(chan error)
		go func() {
			_, err := c.Map(context.Background())
			done <- err
		}()
		err := <-done
		if !errors.Is(err, ErrNoResponse) {
			t.Fatalf("Map: %v, want ErrNoResponse", err)
		}
		if d := time.Since(start); d != 3750*time.Millisecond {
			t.Fatalf("gave up after %v, want 3.75s", d)
		}
	})
}

// TestRetransmitTimes: a gateway that ignores the first three requests
// is answered at 1.75 s, the fourth send.
func TestRetransmitTimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeGW()
		var mu sync.Mutex
		var sends []time.Duration
		start := time.Now()
		g.strays = func([]byte) [][]byte {
			mu.Lock()
			sends = append(sends, time.Since(start))
			mu.Unlock()
			return nil
		}
		g.drop = 3 // strays is not called for dropped requests
		c := testClient(g, Config{Protocols: []Protocol{PCP}})
		defer closeClient(t, c)
		mustMap(t, c)
		if d := time.Since(start); d != 1750*time.Millisecond {
			t.Fatalf("mapped after %v, want 1.75s (sends at 0, 0.25, 0.75, 1.75 s)", d)
		}
		if len(sends) != 1 || sends[0] != 1750*time.Millisecond {
			t.Fatalf("answered sends at %v", sends)
		}
	})
}

// TestContextBoundsMap: Map returns at ctx's deadline.
func TestContextBoundsMap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeGW()
		g.silent = true
		c := testClient(g, Config{})
		defer closeClient(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Map(ctx)
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrNoResponse) {
			t.Fatalf("Map: %v", err)
		}
		if d := time.Since(start); d > 600*time.Millisecond {
			t.Fatalf("Map took %v past its 600ms deadline", d)
		}
	})
}

// TestStraysDropped: datagrams that are not the answer (wrong nonce,
// port, opcode, version, length) are dropped and counted, and the answer
// after them is taken.
func TestStraysDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeGW()
		const strays = 9
		g.strays = func(req []byte) [][]byte {
			if req[0] != pcpVersion || req[1] != pcpOpMap {
				return nil
			}
			good := g.pcpAnswer(req, 0, 120)
			binary.BigEndian.PutUint16(good[pcpHeaderLen+18:], 1234)
			putAddr16(good[pcpHeaderLen+20:], netip.MustParseAddr("198.51.100.66"))
			mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
			return [][]byte{
				mut(func(b []byte) []byte { b[pcpHeaderLen] ^= 1; return b }),               // other nonce
				mut(func(b []byte) []byte { b[pcpHeaderLen+17] ^= 1; return b }),            // other internal port
				mut(func(b []byte) []byte { b[pcpHeaderLen+12] = 6; return b }),             // TCP
				mut(func(b []byte) []byte { b[1] = pcpOpMap; return b }),                    // a request, not an answer
				mut(func(b []byte) []byte { b[1] = pcpReply | pcpOpAnnounce; return b }),    // other opcode
				mut(func(b []byte) []byte { b[0] = 3; return b }),                           // other version
				mut(func(b []byte) []byte { return b[:pcpMapLen-4] }),                       // truncated
				mut(func(b []byte) []byte { return append(b, 0) }),                          // not a multiple of 4
				mut(func(b []byte) []byte { return append(b, make([]byte, pcpMaxLen)...) }), // too long
			}
		}
		c := testClient(g, Config{Protocols: []Protocol{PCP}})
		defer closeClient(t, c)
		start := time.Now()
		m := mustMap(t, c)
		if m.External != netip.AddrPortFrom(testExtIP, 40000) {
			t.Fatalf("mapped %v: took a stray", m.External)
		}
		if time.Since(start) != 0 {
			t.Fatal("waited for a retransmission")
		}
		if st := c.Stats(); st.Dropped != strays {
			t.Fatalf("dropped %d, want %d", st.Dropped, strays)
		}
	})
}

// TestNATPMPStraysDropped: the same for NAT-PMP: other opcodes, other
// internal ports, short and versioned datagrams are dropped.
func TestNATPMPStraysDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeGW()
		g.strays = func(req []byte) [][]byte {
			if req[0] != pmpVersion {
				return nil
			}
			other := make([]byte, 16)
			other[1] = pmpReply + pmpOpMapUDP
			binary.BigEndian.PutUint16(other[8:10], 40001) // another internal port
			binary.BigEndian.PutUint16(other[10:12], 999)
			binary.BigEndian.PutUint32(other[12:16], 60)
			return [][]byte{
				other,
				{0, pmpReply + 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, // TCP opcode
				{0, pmpReply},          // short
				{2, pmpReply, 0, 0, 0}, // another version
				{0, pmpReply + pmpOpExternal, 0, 0, 0, 0, 0, 1}, // short success
			}
		}
		c := testClient(g, Config{Protocols: []Protocol{NATPMP}})
		defer closeClient(t, c)
		m := mustMap(t, c)
		if m.External != netip.AddrPortFrom(testExtIP, 40000) {
			t.Fatalf("mapped %v", m.External)
		}
		// Two exchanges (external address, mapping), five strays each;
		// "other" and the TCP answer fit the external request's opcode
		// check only as strays too.
		if st := c.Stats(); st.Dropped != 10 {
			t.Fatalf("dropped %d, want 10", st.Dropped)
		}
	})
}

// TestResultErrors: error result codes end the request at once with a
// *ResultError naming the code.
func TestResultErrors(t *testing.T) {
	cases := []struct {
		proto Protocol
		code  int
		name  string
	}{
		{PCP, 2, "NOT_AUTHORIZED"},
		{PCP, 8, "NO_RESOURCES"},
		{PCP, 200, ""},
		{NATPMP, 2, "Not Authorized/Refused"},
		{NATPMP, 4, "Out of resources"},
	}
	for _, tc := range cases {
		synctest.Test(t, func(t *testing.T) {
			g := newFakeGW()
			g.result = tc.code
			c := testClient(g, Config{Protocols: []Protocol{tc.proto}})
			defer closeClient(t, c)
			start := time.Now()
			_, err := c.Map(context.Background())
			var re *ResultError
			if !errors.As(err, &re) || re.Protocol != tc.proto || re.Code != tc.code || re.Name != tc.name {
				t.Fatalf("%s result %d: Map error %v (%#v)", tc.proto, tc.code, err, re)
			}
			if errors.Is(err, ErrUnsupported) {
				t.Fatalf("%v matches ErrUnsupported", err)
			}
			if time.Since(start) != 0 {
				t.Fatal("an error answer was retransmitted")
			}
			if _, ok := c.Current(); ok {
				t.Fatal("a mapping after an error")
			}
		})
	}
}

// TestFallbackToNATPMP: a NAT-PMP-only gateway answers PCP with version
// 0 "unsupported version"; with the default protocols Map maps with
// NAT-PMP, after probing all at once.
func TestFallbackToNATPMP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeGW()
		g.pcp = false
		c := testClient(g, Config{Protocols: []Protocol{PCP, NATPMP}})
		defer closeClient(t, c)
		a, err := c.Probe(context.Background())
		if err != nil || a != (Availability{Gateway: testGW, NATPMP: true}) {
			t.Fatalf("Probe = %+v, %v", a, err)
		}
		start := time.Now()
		m := mustMap(t, c)
		if m.Protocol != NATPMP || time.Since(start) != 0 {
			t.Fatalf("mapped with %s after %v", m.Protocol, time.Since(start))
		}
	})
	synctest.Test(t, func(t *testing.T) {
		g := newFakeGW()
		g.pcp = false
		c := testClient(g, Config{Protocols: []Protocol{PCP}})
		defer closeClient(t, c)
		if _, err := c.Map(context.Background()); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("PCP only, NAT-PMP gateway: %v, want ErrUnsupported", err)
		}
	})
}

// TestChangeLossAndRemap: OnChange hears of a renewal that moved the
// external port, of the loss when renewals fail until the mapping
// expires, and of the new mapping once the gateway answers again.
func TestChangeLossAndRemap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeGW()
		g.maxLife = 100
		var mu sync.Mutex
		var changes []Mapping
		c := testClient(g, Config{Protocols: []Protocol{PCP}, OnChange: func(m Mapping) {
			mu.Lock()
			changes = append(changes, m)
			mu.Unlock()
		}})
		defer closeClient(t, c)
		got := func() []Mapping {
			synctest.Wait()
			mu.Lock()
			defer mu.Unlock()
			return append([]Mapping(nil), changes...)
		}
		mustMap(t, c)

		// The gateway lost its state (a reboot) and gives another port.
		g.set(func(g *fakeGW) { g.maps = map[uint16]*fakeMapping{}; g.nextExt = 41000 })
		time.Sleep(50 * time.Second)
		if ch := got(); len(ch) != 1 || ch[0].External != netip.AddrPortFrom(testExtIP, 41000) {
			t.Fatalf("changes after the moved renewal: %+v", ch)
		}

		// Then it stops answering: renewals at 100 s, then retries until
		// the mapping expires at 150 s.
		g.set(func(g *fakeGW) { g.silent = true })
		time.Sleep(100*time.Second + 10*time.Second)
		ch := got()
		if len(ch) != 2 || ch[1].Valid() || ch[1].Protocol != PCP {
			t.Fatalf("changes after the gateway went silent: %+v", ch)
		}
		if _, ok := c.Current(); ok {
			t.Fatal("Current still has the expired mapping")
		}
		if st := c.Stats(); st.Lost != 1 {
			t.Fatalf("stats %+v, want 1 lost", st)
		}

		// Back: the Client maps again within its 30 s retry.
		// Its old mapping has expired there too.
		g.set(func(g *fakeGW) { g.silent = false; g.nextExt = 42000; g.maps = map[uint16]*fakeMapping{} })
		time.Sleep(31 * time.Second)
		ch = got()
		if len(ch) != 3 || ch[2].External != netip.AddrPortFrom(testExtIP, 42000) {
			t.Fatalf("changes after the gateway came back: %+v", ch)
		}
	})
}

// TestCloseEndsMap: Close during a Map waiting on a silent gateway makes
// Map return ErrClosed at once, and nothing is left running.
func TestCloseEndsMap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeGW()
		g.silent = true
		c := testClient(g, Config{})
		done := make(chan error)
		go func() {
			_, err := c.Map(context.Background())
			done <- err
		}()
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		if err := c.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != ErrClosed {
			t.Fatalf("Map: %v, want ErrClosed", err)
		}
		if time.Since(start) != 0 {
			t.Fatalf("Close and Map took %v", time.Since(start))
		}
	})
}

// TestCloseBounded: Close with a gateway that no longer answers returns
// at its context's deadline.
func TestCloseBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeGW()
		c := testClient(g, Config{Protocols: []Protocol{NATPMP}})
		mustMap(t, c)
		g.set(func(g *fakeGW) { g.silent = true })
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		err := c.Close(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Fatalf("Close = %v after %v, want the deadline after 1s", err, time.Since(start))
		}
	})
}

// TestPortUnreachable: over real sockets, a gateway with nothing on the
// port answers ICMP port unreachable, and Map fails at once.
func TestPortUnreachable(t *testing.T) {
	leakcheck.Check(t)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := pc.LocalAddr().String()
	pc.Close()
	c, err := New(Config{LocalPort: 40000, Gateway: netip.MustParseAddr("127.0.0.1"), Protocols: []Protocol{PCP},
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, closedPort)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	start := time.Now()
	_, err = c.Map(context.Background())
	if !errors.Is(err, ErrNoResponse) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("Map: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %v", d)
	}
}

// TestNewValidates: bad configurations are refused by New.
func TestNewValidates(t *testing.T) {
	bad := []Config{
		{},
		{LocalPort: 1, Protocols: []Protocol{"socks"}},
		{LocalPort: 1, Protocols: []Protocol{PCP, PCP}},
		{LocalPort: 1, Lifetime: time.Second},
		{LocalPort: 1, Gateway: netip.MustParseAddr("fe80::1")},
		{LocalPort: 1, LocalAddr: netip.MustParseAddr("::1")},
	}
	for _, cfg := range bad {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// TestLocalAddrMismatch: a LocalAddr other than the address that
// reaches the gateway is an error, not a mapping for the wrong host.
func TestLocalAddrMismatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeGW()
		c := testClient(g, Config{LocalAddr: netip.MustParseAddr("10.9.0.3")})
		defer closeClient(t, c)
		if _, err := c.Map(context.Background()); err == nil || !strings.Contains(err.Error(), "not LocalAddr") {
			t.Fatalf("Map: %v", err)
		}
	})
}

// TestParseProcRoute reads a routing table with two default routes.
func TestParseProcRoute(t *testing.T) {
	const table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
		"eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
		"eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n" +
		"tun0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0\n"
	gw, err := parseProcRoute(strings.NewReader(table))
	if err != nil || gw != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("parseProcRoute = %v, %v; want 10.0.0.1 (eth0, the lowest metric with a gateway)", gw, err)
	}
	_, err = parseProcRoute(strings.NewReader(table[:strings.Index(table, "\n")+1]))
	if !errors.Is(err, ErrNoGateway) {
		t.Fatalf("no routes: %v", err)
	}
}
