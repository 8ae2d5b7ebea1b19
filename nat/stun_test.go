package nat_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/nat"
	"github.com/gamewire/gamewire/rendezvous"
)

// plainServer is a STUN server on loopback that knows RFC 5389's Binding
// and nothing else, as most STUN servers: a request carrying an attribute
// it does not understand in the comprehension-required range (below
// 0x8000: PADDING is 0x0026) is not answered, as stund does (RFC 5389 would
// have it answer 420, which is no mapped address either). answer builds
// the datagrams that answer the others.
type plainServer struct {
	addr    netip.AddrPort
	padded  atomic.Int64 // padded requests refused
	plain   atomic.Int64 // requests answered
	answer  func(req *stun.Message, from netip.AddrPort) [][]byte
	conn    *net.UDPConn
	stopped sync.WaitGroup
}

func startPlainServer(t *testing.T, answer func(req *stun.Message, from netip.AddrPort) [][]byte) *plainServer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &plainServer{addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), answer: answer, conn: c}
	s.stopped.Add(1)
	go s.serve()
	t.Cleanup(func() {
		c.Close()
		s.stopped.Wait()
	})
	return s
}

func (s *plainServer) serve() {
	defer s.stopped.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if m.Decode() != nil || m.Type != stun.BindingRequest {
			continue
		}
		unknown := false
		for _, a := range m.Attributes {
			if a.Type < 0x8000 && a.Type != stun.AttrChangeRequest {
				unknown = true
			}
		}
		if unknown {
			s.padded.Add(1)
			continue
		}
		s.plain.Add(1)
		for _, b := range s.answer(m, from) {
			s.conn.WriteToUDPAddrPort(b, from)
		}
	}
}

// xorOnly answers as a plain RFC 5389 server: XOR-MAPPED-ADDRESS.
func xorOnly(req *stun.Message, from netip.AddrPort) [][]byte {
	m := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())})
	return [][]byte{m.Raw}
}

// stunClient is a STUN client on its own loopback socket, with a reader
// passing what arrives to Handle.
func stunClient(t *testing.T) (*nat.STUN, netip.AddrPort) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	st := nat.NewSTUN(func(b []byte, to netip.AddrPort) error { _, err := c.WriteToUDPAddrPort(b, to); return err })
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if nat.IsSTUN(buf[:n]) {
				st.Handle(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return st, c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestQueryServerWithoutPadding: a server that drops padded requests (any
// RFC 3489 or plain RFC 5389 server) answers the unpadded retransmission,
// and Discover learns the mapping from such a server as an extra one
// (Config.STUNServers), asking it unpadded first.
func TestQueryServerWithoutPadding(t *testing.T) {
	leakcheck.Check(t)
	srv := startPlainServer(t, xorOnly)
	st, me := stunClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := st.Query(ctx, srv.addr, nat.ChangeNone)
	if err != nil || r.Mapped != me {
		t.Fatalf("Query: %+v, %v; want mapped %v", r, err, me)
	}
	if srv.padded.Load() == 0 {
		t.Error("the first request was not padded: gamewire's own server would trim OTHER-ADDRESS from its answer")
	}

	b, err := nat.Discover(ctx, st, singleAddressServer(t), []netip.AddrPort{srv.addr})
	if err != nil || b.Mapped != me || b.Mapping != nat.MappingEndpointIndependent {
		t.Fatalf("Discover with a plain extra server: %+v, %v", b, err)
	}
}

// TestQueryClassicAnswer: an answer in RFC 3489's form (MAPPED-ADDRESS and
// CHANGED-ADDRESS, no XOR-MAPPED-ADDRESS) is taken, CHANGED-ADDRESS as the
// other address; an answer with no usable mapped address (here one
// sent just before the good one) leaves the query waiting for a good one.
func TestQueryClassicAnswer(t *testing.T) {
	leakcheck.Check(t)
	changed := netip.MustParseAddrPort("127.0.0.2:3479")
	srv := startPlainServer(t, func(req *stun.Message, from netip.AddrPort) [][]byte {
		empty := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess)
		m := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess)
		(&stun.MappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())}).AddTo(m)
		(&stun.MappedAddress{IP: changed.Addr().AsSlice(), Port: int(changed.Port())}).AddToAs(m, stun.AttrChangedAddress)
		return [][]byte{empty.Raw, m.Raw}
	})
	st, me := stunClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := st.Query(ctx, srv.addr, nat.ChangeNone)
	if err != nil || r.Mapped != me || r.Other != changed {
		t.Fatalf("Query: %+v, %v; want mapped %v, other %v", r, err, me, changed)
	}
}

// TestDiscoverDeadExtraServer: with a primary that has no second address,
// the mapping test uses whichever extra server answers; a dead first one
// does not stop it, and extras are asked unpadded first, since their bare
// answer is all the test needs. With the primary dead too, two live extras still show
// the mapping, and the error says the primary did not answer.
func TestDiscoverDeadExtraServer(t *testing.T) {
	leakcheck.Check(t)
	dead := blackhole(t)
	live := startPlainServer(t, xorOnly)
	live2 := startPlainServer(t, xorOnly)
	rv := singleAddressServer(t)
	st, me := stunClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	b, err := nat.Discover(ctx, st, rv, []netip.AddrPort{dead, live.addr})
	if err != nil || b.Mapped != me || b.Mapping != nat.MappingEndpointIndependent {
		t.Fatalf("dead first extra: %+v, %v; want mapped %v, endpoint-independent", b, err, me)
	}
	if n := live.padded.Load(); n != 0 {
		t.Errorf("%d padded requests to an extra server", n)
	}

	b, err = nat.Discover(ctx, st, dead, []netip.AddrPort{live.addr, dead, live2.addr})
	if !errors.Is(err, nat.ErrNoAnswer) || b.Mapping != nat.MappingEndpointIndependent || b.Mapped.IsValid() {
		t.Fatalf("dead primary: %+v, %v; want endpoint-independent from the extras and ErrNoAnswer", b, err)
	}
}

// blackhole is a bound UDP address that never answers.
func blackhole(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// singleAddressServer is a rendezvous server on one loopback address: a
// STUN server with no OTHER-ADDRESS.
func singleAddressServer(t *testing.T) netip.AddrPort {
	t.Helper()
	s, err := rendezvous.Listen(rendezvous.ServerConfig{}, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr()
}
