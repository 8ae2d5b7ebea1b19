package path

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gamewire/gamewire/internal/udpbatch"
)

type fakeSock struct {
	kind   Kind
	closed atomic.Bool
}

func (s *fakeSock) WriteTo([]byte, netip.AddrPort) error { return nil }
func (s *fakeSock) WriteBatch([]udpbatch.Message) error  { return nil }
func (s *fakeSock) Kind() Kind                           { return s.kind }
func (s *fakeSock) Closed() bool                         { return s.closed.Load() }
func ap(s string) netip.AddrPort                         { return netip.MustParseAddrPort(s) }
func route(sock Socket, addr string, gen uint64) Route {
	return Route{Remote: ap(addr), Sock: sock, Gen: gen}
}
func (r *recorder) RouteChanged(p *Peer[int], old, cur *Route, why Reason) { r.add(why, cur) }
func (r *recorder) Health(*Peer[int], time.Time) Health {
	if h := r.health.Load(); h != nil {
		return *h
	}
	return healthy
}

type change struct {
	why Reason
	to  netip.AddrPort
}

type recorder struct {
	mu     sync.Mutex
	got    []change
	health atomic.Pointer[Health] // what Health reports (nil: healthy)
}

func (r *recorder) add(why Reason, cur *Route) {
	r.mu.Lock()
	r.got = append(r.got, change{why, cur.Remote})
	r.mu.Unlock()
}

func (r *recorder) moves() []change {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []change
	for _, c := range r.got {
		if c.why != Begin && c.why != Establish {
			out = append(out, c)
		}
	}
	return out
}

var (
	mainSock  = &fakeSock{kind: Direct}
	relaySock = &fakeSock{kind: Relay}
	tcpSock   = &fakeSock{kind: TCP}
	healthy   = Health{RTT: 20 * time.Millisecond}
	failing   = Health{AckOverdue: 300 * time.Millisecond, RTT: 20 * time.Millisecond}
	silent    = Health{Quiet: 2 * time.Second, AckOverdue: time.Second}
)

// established makes a table with one peer established on r.
func established(t *testing.T, r Route) (*Table[int], *Peer[int], *recorder) {
	rec := &recorder{}
	tab := NewTable[int](rec, []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")})
	t.Cleanup(tab.Close)
	p := tab.NewPeer(1)
	tab.Begin(p, r)
	tab.Establish(p, r, 0)
	tab.Sync()
	return tab, p, rec
}

func TestSameAliases(t *testing.T) {
	cases := []struct {
		a, b string
		same bool
	}{
		{"127.0.0.1:5000", "[::1]:5000", true},
		{"[::ffff:203.0.113.5]:9", "203.0.113.5:9", true},
		{"127.0.0.1:5000", "[::1]:5001", false},
		{"127.0.1.1:5000", "127.0.1.2:5000", false}, // two nodes on two loopback addresses
		{"203.0.113.5:9", "[2001:db8::5]:9", false},
	}
	for _, c := range cases {
		a, b := route(mainSock, c.a, 1), route(mainSock, c.b, 1)
		if got := Same(&a, &b); got != c.same {
			t.Errorf("Same(%s, %s) = %v, want %v", c.a, c.b, got, c.same)
		}
	}
	a, b := route(mainSock, "203.0.113.5:9", 1), route(relaySock, "203.0.113.5:9", 1)
	if Same(&a, &b) {
		t.Error("one address over two sockets counted as one route")
	}
}

func TestClassOrder(t *testing.T) {
	pre := []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}
	order := []Route{route(relaySock, "198.51.100.1:1", 1), route(tcpSock, "198.51.100.1:1", 1),
		route(mainSock, "198.51.100.1:1", 1), route(mainSock, "10.0.0.1:1", 1), route(mainSock, "192.168.1.9:1", 1)}
	for i := 1; i < len(order); i++ {
		if classify(&order[i], pre) <= classify(&order[i-1], pre) {
			t.Errorf("%v over %v should rank above %v", order[i].Remote, order[i].Kind(), order[i-1].Kind())
		}
	}
}

func TestChoice(t *testing.T) {
	pub := route(mainSock, "198.51.100.1:4000", 1)
	cases := []struct {
		name string
		cur  Route
		why  Reason
		o    Offer
		move bool
	}{
		{"loopback alias", route(mainSock, "127.0.0.1:4000", 1), Heard, Offer{Route: route(mainSock, "[::1]:4000", 1), Health: healthy}, false},
		{"same class, healthy", pub, Heard, Offer{Route: route(mainSock, "[2001:db8::1]:4000", 1), Health: healthy}, false},
		{"same class, failing (NAT rebinding)", pub, Heard, Offer{Route: route(mainSock, "198.51.100.1:4001", 1), Health: failing}, true},
		{"better class", pub, Validated, Offer{Route: route(mainSock, "192.168.1.7:4000", 1), Health: healthy}, true},
		{"relay stragglers on a working direct path", pub, Heard, Offer{Route: route(relaySock, "203.0.113.9:50000", 1), Health: failing}, false},
		{"relay once the direct path is silent", pub, Offered, Offer{Route: route(relaySock, "203.0.113.9:50000", 1), Health: silent}, true},
		{"direct beats the relay", route(relaySock, "203.0.113.9:50000", 1), Validated, Offer{Route: pub, Health: healthy}, true},
		{"tcp beats the relay", route(relaySock, "203.0.113.9:50000", 1), Offered, Offer{Route: route(tcpSock, "198.51.100.1:4000", 1), Health: healthy}, true},
		{"one RTT sample is not sustained", pub, Validated, Offer{Route: route(mainSock, "198.51.100.2:4000", 1), RTT: 5 * time.Millisecond, Health: Health{RTT: 50 * time.Millisecond}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tab, p, rec := established(t, c.cur)
				time.Sleep(Settle) // past settling: only the rules for a settled session
				switch c.why {
				case Heard:
					tab.Heard(p, c.o.Route, func() Health { return c.o.Health })
				case Validated:
					tab.Validate(p, c.o)
				default:
					tab.Offer(p, c.o)
				}
				tab.Sync()
				moved := p.Route().Remote == c.o.Route.Remote && p.Route().Sock == c.o.Route.Sock
				if moved != c.move || len(rec.moves()) != map[bool]int{false: 0, true: 1}[c.move] {
					t.Fatalf("moved=%v (route %v, changes %v), want %v", moved, p.Route().Remote, rec.moves(), c.move)
				}
			})
		})
	}
}

// TestSustainedRTTMargin: a same-class route takes over on RTT only when
// its checks beat the current RTT by the margin twice, Sustain apart.
func TestSustainedRTTMargin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab, p, _ := established(t, route(mainSock, "198.51.100.1:4000", 1))
		time.Sleep(Settle)
		fast := Offer{Route: route(mainSock, "198.51.100.2:4000", 1), RTT: 10 * time.Millisecond, Health: Health{RTT: 60 * time.Millisecond}}
		tab.Validate(p, fast)
		tab.Sync()
		time.Sleep(Sustain / 2)
		tab.Validate(p, fast)
		tab.Sync()
		if p.Route().Remote == fast.Route.Remote {
			t.Fatal("moved on RTT before the margin was sustained")
		}
		time.Sleep(Sustain)
		tab.Validate(p, fast)
		tab.Sync()
		if p.Route().Remote != fast.Route.Remote {
			t.Fatal("a route 50 ms faster for over a second did not take over")
		}
		// A small margin never moves it back.
		back := Offer{Route: route(mainSock, "198.51.100.1:4000", 1), RTT: 9 * time.Millisecond, Health: Health{RTT: 10 * time.Millisecond}}
		for range 3 {
			tab.Validate(p, back)
			tab.Sync()
			time.Sleep(Sustain)
		}
		if p.Route().Remote != fast.Route.Remote {
			t.Fatal("moved back for a 1 ms margin")
		}
	})
}

// TestSettleWindow: right after establishment a validated path of the same
// class with a higher check priority replaces the handshake's route.
func TestSettleWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab, p, _ := established(t, route(mainSock, "198.51.100.1:4000", 1))
		better := Offer{Route: route(mainSock, "198.51.100.1:4010", 1), Pref: 100, Health: healthy}
		tab.Validate(p, better)
		tab.Sync()
		if p.Route().Remote != better.Route.Remote {
			t.Fatal("a better validated path while settling did not take over")
		}
		time.Sleep(Settle)
		tab.Validate(p, Offer{Route: route(mainSock, "198.51.100.1:4020", 1), Pref: 200, Health: healthy})
		tab.Sync()
		if p.Route().Remote != better.Route.Remote {
			t.Fatal("a same-class path moved a settled session that works")
		}
	})
}

// TestSettleNotSlower: while settling, a better check priority does not
// take the session onto a path its check measured slower by the margin;
// one as fast takes over.
func TestSettleNotSlower(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab, p, _ := established(t, route(mainSock, "198.51.100.1:4000", 1))
		cur := Health{RTT: 20 * time.Millisecond}
		slow := Offer{Route: route(mainSock, "[2001:db8::1]:4000", 1), Pref: 100, RTT: 40 * time.Millisecond, Health: cur}
		tab.Validate(p, slow)
		tab.Sync()
		if p.Route().Remote != netip.MustParseAddrPort("198.51.100.1:4000") {
			t.Fatal("moved to a path twice as slow for its check priority")
		}
		fast := Offer{Route: route(mainSock, "[2001:db8::1]:4000", 1), Pref: 100, RTT: 21 * time.Millisecond, Health: cur}
		tab.Validate(p, fast)
		tab.Sync()
		if p.Route().Remote != fast.Route.Remote {
			t.Fatal("a better validated path, as fast, did not take over while settling")
		}
	})
}

// TestChangeBound: a route that keeps being beaten (two paths each
// validated as better in turn) moves at most MaxChangesPerMinute times a
// minute while the current one works, and at once when it fails.
func TestChangeBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab, p, rec := established(t, route(relaySock, "203.0.113.9:50000", 1))
		time.Sleep(Settle)
		direct := Offer{Route: route(mainSock, "198.51.100.1:4000", 1), Health: healthy}
		relayed := Offer{Route: route(relaySock, "203.0.113.9:50000", 1), Health: silent}
		for range 20 {
			tab.Validate(p, direct)
			tab.Offer(p, Offer{Route: relayed.Route, Health: Health{Quiet: LostAfter}}) // direct went quiet a moment
			tab.Sync()
			time.Sleep(time.Second)
		}
		n := len(rec.moves())
		if n > MaxChangesPerMinute+2 {
			t.Fatalf("%d route changes in 20 s, bound %d a minute", n, MaxChangesPerMinute)
		}
		if tab.Stats().Suppressed == 0 {
			t.Fatal("no move was suppressed")
		}
		// The bound never keeps a session on a failing route.
		cur := p.Route()
		other := direct
		if cur.Kind() == Direct {
			other = Offer{Route: route(mainSock, "198.51.100.1:4001", 1), Health: failing}
		} else {
			other.Health = failing
		}
		tab.Offer(p, other)
		tab.Sync()
		if p.Route().Remote != other.Route.Remote {
			t.Fatalf("stayed on a failing route (%v) past the bound", cur.Remote)
		}
	})
}

// TestGenerations: offers from an earlier attempt are ignored, and a new
// attempt starts the chooser over.
func TestGenerations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab, p, _ := established(t, route(mainSock, "198.51.100.1:4000", 1))
		tab.Begin(p, route(mainSock, "198.51.100.1:5000", 2))
		tab.Heard(p, route(mainSock, "192.168.1.7:4000", 1), func() Health { return failing }) // the old attempt's straggler
		tab.Sync()
		if r := p.Route(); r.Gen != 2 || r.Remote.Port() != 5000 {
			t.Fatalf("route %v gen %d after the new attempt began", r.Remote, r.Gen)
		}
		tab.Heard(p, route(mainSock, "192.168.1.7:4000", 2), func() Health { return failing })
		tab.Sync()
		if p.Route().Remote.Port() != 5000 {
			t.Fatal("an unestablished attempt's route moved on a Heard offer")
		}
		tab.Establish(p, route(mainSock, "198.51.100.1:5000", 2), 0)
		tab.Begin(p, route(mainSock, "198.51.100.1:6000", 2)) // late
		tab.Sync()
		if p.Route().Remote.Port() != 5000 {
			t.Fatal("a late Begin moved an established attempt")
		}
	})
}

// TestHeardCoalesced: packets from one address post one offer per heardGap.
func TestHeardCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab, p, _ := established(t, route(mainSock, "198.51.100.1:4000", 1))
		time.Sleep(Settle)
		r := route(mainSock, "198.51.100.1:4001", 1)
		for range 10000 {
			tab.Heard(p, r, func() Health { return healthy })
		}
		tab.mu.Lock()
		queued := len(tab.queue)
		tab.mu.Unlock()
		if queued > 1 {
			t.Fatalf("%d events queued for 10000 packets from one address", queued)
		}
		tab.Sync()
	})
}

// TestPostNeverBlocks: posting while the reporter is busy (as a session
// lock held by the poster would make it) neither blocks nor grows the
// queue past its bound.
func TestPostNeverBlocks(t *testing.T) {
	gate := make(chan struct{})
	rep := reporterFunc(func() { <-gate })
	tab := NewTable[int](rep, nil)
	p := tab.NewPeer(1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2 * queueMax {
			tab.Begin(p, route(mainSock, "198.51.100.1:4000", uint64(i+1)))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("posting blocked on a busy owner")
	}
	if tab.Stats().Dropped == 0 {
		t.Fatal("a full queue dropped nothing")
	}
	close(gate)
	tab.Close()
}

type reporterFunc func()

func (f reporterFunc) RouteChanged(*Peer[int], *Route, *Route, Reason) { f() }
func (f reporterFunc) Health(*Peer[int], time.Time) Health             { return healthy }

// TestNoSwingWhileFailing: while acknowledgements are overdue, packets
// from two routes in turn (stragglers from the old one) move the session
// once, not on every packet, even when no time passes.
func TestNoSwingWhileFailing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab, p, rec := established(t, route(mainSock, "198.51.100.1:4000", 1))
		time.Sleep(Settle)
		x, y := route(mainSock, "198.51.100.1:4000", 1), route(mainSock, "198.51.100.1:4001", 1)
		for i := range 1000 {
			r := x
			if i%2 == 0 {
				r = y
			}
			tab.Heard(p, r, func() Health { return failing })
			p.heard.Store(nil) // defeat the per-address coalescing: every packet offers
			tab.Sync()
		}
		if n := len(rec.moves()); n != 1 {
			t.Fatalf("%d moves for packets alternating between two routes at one instant", n)
		}
		time.Sleep(MinDwell)
		tab.Heard(p, x, func() Health { return failing })
		tab.Sync()
		if p.Route().Remote != x.Remote {
			t.Fatal("a route still failing after MinDwell was not left")
		}
	})
}

// TestDoAndMust: functions run on the owner in the order posted, between
// the route events; with the owner busy and the queue full, Do drops (and
// counts) while Must still queues; after Close neither runs and Must says
// so, so the caller can clean up.
func TestDoAndMust(t *testing.T) {
	gate, busy := make(chan struct{}), make(chan struct{})
	tab := NewTable[int](&recorder{}, nil)
	var order []int
	tab.Do(func() { close(busy); <-gate }) // the owner is busy until gate closes
	<-busy
	for i := range queueMax {
		if !tab.Do(func() { order = append(order, i) }) {
			t.Fatalf("Do %d dropped below the bound", i)
		}
	}
	if tab.Do(func() { t.Error("a dropped function ran") }) {
		t.Fatal("Do past the bound was queued")
	}
	if tab.Stats().Dropped != 1 {
		t.Fatalf("dropped %d, want 1", tab.Stats().Dropped)
	}
	mustRan := false
	if !tab.Must(func() { mustRan = true }) {
		t.Fatal("Must refused while the table runs")
	}
	close(gate)
	tab.Sync()
	if !mustRan || len(order) != queueMax {
		t.Fatalf("Must ran %v, %d of %d Do functions ran", mustRan, len(order), queueMax)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("function %d ran in place %d", v, i)
		}
	}
	tab.Close()
	if tab.Must(func() { t.Error("ran after Close") }) || tab.Do(func() { t.Error("ran after Close") }) {
		t.Fatal("posting after Close was accepted")
	}
}

// TestRefusedOfferRechecked: a route the peer was heard on while the
// current one still worked is taken once the current one fails, with no
// further offer (the peer backing off its retransmissions may not send
// again for seconds); one refused in the dwell after a move is taken once
// the dwell is over and the route fails; and a pending offer expires.
func TestRefusedOfferRechecked(t *testing.T) {
	t.Run("failing later", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			tab, p, rec := established(t, route(mainSock, "198.51.100.1:4000", 1))
			time.Sleep(Settle)
			moved := route(mainSock, "198.51.100.1:4001", 1)
			tab.Heard(p, moved, func() Health { return healthy })
			tab.Sync()
			time.Sleep(time.Second)
			if p.Route().Remote != ap("198.51.100.1:4000") {
				t.Fatal("moved while the current route was healthy")
			}
			rec.health.Store(&failing)
			time.Sleep(2 * recheckEvery)
			tab.Sync()
			if p.Route().Remote != moved.Remote || len(rec.moves()) != 1 || rec.moves()[0].why != Heard {
				t.Fatalf("route %v, moves %v: the pending offer was not taken once the route failed", p.Route().Remote, rec.moves())
			}
		})
	})
	t.Run("after the dwell", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			tab, p, rec := established(t, route(mainSock, "198.51.100.1:4000", 1))
			time.Sleep(Settle)
			rec.health.Store(&failing)
			r2, r3 := route(mainSock, "198.51.100.1:4001", 1), route(mainSock, "198.51.100.1:4002", 1)
			tab.Heard(p, r2, func() Health { return failing })
			tab.Sync()
			time.Sleep(MinDwell / 2)
			tab.Heard(p, r3, func() Health { return failing }) // the NAT rebound again
			tab.Sync()
			if p.Route().Remote != r2.Remote {
				t.Fatalf("route %v: the dwell did not hold", p.Route().Remote)
			}
			time.Sleep(MinDwell/2 + 2*recheckEvery)
			tab.Sync()
			if p.Route().Remote != r3.Remote {
				t.Fatalf("route %v, moves %v: the offer refused in the dwell was not taken after it", p.Route().Remote, rec.moves())
			}
		})
	})
	t.Run("expires", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			tab, p, rec := established(t, route(mainSock, "198.51.100.1:4000", 1))
			time.Sleep(Settle)
			tab.Heard(p, route(mainSock, "198.51.100.1:4001", 1), func() Health { return healthy })
			tab.Sync()
			time.Sleep(pendingFor + recheckEvery)
			tab.Sync()
			rec.health.Store(&failing)
			time.Sleep(2 * recheckEvery)
			tab.Sync()
			if len(rec.moves()) != 0 {
				t.Fatalf("moved to a route last heard %v ago: %v", pendingFor, rec.moves())
			}
		})
	})
}
