package rendezvous

import (
	"crypto/rand"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
)

// tableServer is a server with no sockets of its own: its answers go to a
// recordConn.
func tableServer(tb testing.TB, maxPeers int) *Server {
	tb.Helper()
	s := newServer(ServerConfig{Conns: []net.PacketConn{&recordConn{}}, TTL: time.Minute, MaxPeers: maxPeers})
	s.addrs = []netip.AddrPort{netip.MustParseAddrPort("203.0.113.1:3478")}
	rand.Read(s.private[:])
	pub, err := curve25519.X25519(s.private[:], curve25519.Basepoint)
	if err != nil {
		tb.Fatal(err)
	}
	copy(s.public[:], pub)
	return s
}

// fillTable registers n made-up peers, each from its own address in
// 100.64.0.0/10, as accepted at the time at.
func fillTable(s *Server, n int, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range n {
		var k Key
		rand.Read(k[:])
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}), 50000)
		s.peers.accept(s.peers.add(k, sessionKey{}), origin{addr: src}, at)
	}
}

// newRegisters builds n REGISTERs from new identities, each from its own
// source address in 10.0.0.0/8 with that address's cookie.
func newRegisters(tb testing.TB, s *Server, n int) ([][]byte, []netip.AddrPort) {
	tb.Helper()
	msgs, srcs := make([][]byte, n), make([]netip.AddrPort, n)
	for i := range n {
		priv, pub := newKeypair(tb)
		k, err := deriveKey(priv, s.public, pub, s.public)
		if err != nil {
			tb.Fatal(err)
		}
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 40000)
		cookie, _ := s.cookies(src, [cookieLen]byte{}, time.Now())
		r := Register{Peer: pub, Timestamp: uint64(time.Now().UnixNano()), Cookie: cookie}
		msgs[i], srcs[i] = r.encode(&k), src
	}
	return msgs, srcs
}

func (s *Server) evictWork() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peers.work
}

// TestEvictionDoesNotScan: with 100000 registrations held, expired or
// live at MaxPeers, a REGISTER costs the eviction index a look at each
// list's front, plus one per entry it drops: never a scan.
func TestEvictionDoesNotScan(t *testing.T) {
	const held = 100000
	perMessage := func(s *Server, msgs [][]byte, srcs []netip.AddrPort) uint64 {
		var most uint64
		for i := range msgs {
			w := s.evictWork()
			s.handle(origin{addr: srcs[i]}, msgs[i])
			most = max(most, s.evictWork()-w)
		}
		return most
	}

	s := tableServer(t, held)
	fillTable(s, held, time.Now().Add(-2*time.Minute)) // all expired
	msgs, srcs := newRegisters(t, s, 21)
	w := s.evictWork()
	s.handle(origin{addr: srcs[0]}, msgs[0])
	if got := s.evictWork() - w; got > held+4 {
		t.Fatalf("evicting %d expired registrations looked at %d entries", held, got)
	}
	if st := s.Stats(); st.Evicted != held || st.Registered != 1 || st.Registrations != 1 {
		t.Fatalf("evicted %d, registered %d, accepted %d; want %d, 1, 1", st.Evicted, st.Registered, st.Registrations, held)
	}
	if most := perMessage(s, msgs[1:], srcs[1:]); most > 4 {
		t.Fatalf("a REGISTER looked at %d entries with %d tombstones held", most, held)
	}

	s = tableServer(t, held)
	fillTable(s, held, time.Now()) // all live: the table is full
	msgs, srcs = newRegisters(t, s, 20)
	if most := perMessage(s, msgs, srcs); most > 4 {
		t.Fatalf("a REGISTER at a full table looked at %d entries", most)
	}
	if st := s.Stats(); st.Full != 20 || st.Registered != held {
		t.Fatalf("full %d, registered %d; want 20, %d", st.Full, st.Registered, held)
	}
}

// BenchmarkRegisterManyPeers: the cost of a REGISTER from a new identity
// (its Diffie-Hellman included) with no registration held, with 100000
// expired ones, and with 100000 live ones filling MaxPeers (refused as
// Full). Before the eviction index the last one scanned the whole table
// for every REGISTER. Run with -benchtime=2000x: setup makes one identity
// per iteration.
func BenchmarkRegisterManyPeers(b *testing.B) {
	for _, tc := range []struct {
		name    string
		held    int
		expired bool
	}{{"held=0", 0, false}, {"expired=100000", 100000, true}, {"live-full=100000", 100000, false}} {
		b.Run(tc.name, func(b *testing.B) {
			s := tableServer(b, 100000)
			at := time.Now()
			if tc.expired {
				at = at.Add(-2 * time.Minute)
			}
			fillTable(s, tc.held, at)
			msgs, srcs := newRegisters(b, s, b.N)
			before := s.Stats()
			b.ResetTimer()
			for i := range b.N {
				s.handle(origin{addr: srcs[i]}, msgs[i])
			}
			b.StopTimer()
			b.ReportMetric(float64(s.Stats().Registrations-before.Registrations)/float64(b.N), "accepted/op")
		})
	}
}
