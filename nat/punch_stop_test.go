package nat

import (
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// birthdaySock is a birthday socket that records its probes and whether it
// was closed.
type birthdaySock struct {
	mu     sync.Mutex
	probes [][12]byte // transaction IDs sent
	closed bool
}

func (s *birthdaySock) WriteTo(b []byte, to netip.AddrPort) error {
	pr, ok := ParseProbe(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok && !pr.Ack {
		s.probes = append(s.probes, pr.TxID)
	}
	return nil
}

func (s *birthdaySock) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

func (s *birthdaySock) state() (txs [][12]byte, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][12]byte(nil), s.probes...), s.closed
}

// TestPunchStopDuringAcks: acks that adopt birthday sockets (a validated
// path on one of them marks it kept) arrive while Stop runs. Under -race
// this hammers Stop's reading of which sockets are kept against
// HandleProbe's writing it; and every socket is either adopted (reported
// by OnPath, left open) or closed, never both.
func TestPunchStopDuringAcks(t *testing.T) {
	for round := range 4 {
		synctest.Test(t, func(t *testing.T) {
			self, peer := key32(), key32()
			key := NewProbeKey([]byte("dh"), self, peer)
			public := netip.MustParseAddrPort("198.51.100.7:5000")
			elsewhere := netip.MustParseAddrPort("198.51.100.7:5001") // a better (peer-reflexive) path
			var mu sync.Mutex
			var socks []*birthdaySock
			adopted := map[Socket]bool{}
			p := StartPunch(PunchConfig{Local: self, Peer: peer, Key: key, Main: &recordSock{},
				OpenSocket: func() (Socket, error) {
					s := &birthdaySock{}
					mu.Lock()
					socks = append(socks, s)
					mu.Unlock()
					return s, nil
				},
				LocalMapping: MappingEndpointDependent, PeerMapping: MappingEndpointIndependent,
				Candidates: []Candidate{{Addr: public, Kind: KindServerRefl}},
				OnPath: func(path Path) {
					mu.Lock()
					adopted[path.Socket] = true
					mu.Unlock()
				}})
			time.Sleep(birthdayDelay + 2*punchPace)
			mu.Lock()
			all := append([]*birthdaySock(nil), socks...)
			mu.Unlock()
			if len(all) != birthdaySocks {
				t.Fatalf("round %d: %d birthday sockets after birthdayDelay, want %d", round, len(all), birthdaySocks)
			}
			ack := func(s *birthdaySock, from netip.AddrPort) {
				txs, _ := s.state()
				for _, id := range txs {
					p.HandleProbe((&Probe{Ack: true, Sender: peer, TxID: id}).Append(nil, &key), from, s)
				}
			}

			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				p.Stop()
			}()
			var wg sync.WaitGroup
			const hammers = 4
			for h := range hammers {
				wg.Go(func() {
					for i := h; i < len(all)-1; i += hammers {
						ack(all[i], public)
					}
				})
			}
			// The last socket's ack comes once Stop has begun (it has
			// taken the birthday sockets, or is about to return): a
			// better path than any above, so it is adopted if at all.
			wg.Go(func() {
				for i := 0; p.Stats().Sockets != 0; i++ {
					if i > 1e7 {
						t.Error("Stop never took the birthday sockets")
						return
					}
					runtime.Gosched()
				}
				ack(all[len(all)-1], elsewhere)
			})
			wg.Wait()
			<-stopped

			mu.Lock()
			defer mu.Unlock()
			for i, s := range all {
				_, closed := s.state()
				if adopted[s] == closed {
					t.Errorf("round %d: birthday socket %d: adopted %v, closed by Stop %v: want exactly one", round, i, adopted[s], closed)
				}
			}
		})
	}
}
