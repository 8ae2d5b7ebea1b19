package p2p

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/secure"
)

// Attack tests: what a stranger with free identities gets from a node.
// Each drives real Nodes and fails on a node without the defence it names.

// rawInitiator crafts valid initiations from fresh identities toward a
// node, as an attacker's script would: it answers cookie replies and, when
// confirm is set, completes each handshake and proves its address with one
// authenticated packet, so the sessions it opens are as real as a peer's.
type rawInitiator struct {
	pc      net.PacketConn
	to      net.Addr
	peer    PeerID
	app     string
	confirm bool

	mu      sync.Mutex
	pending map[uint32]*secure.Initiation
	next    uint32
	sent    atomic.Int64 // bytes sent
	recv    atomic.Int64 // bytes received
	done    atomic.Int64 // handshakes completed
	fired   atomic.Int64 // initiations from fresh identities
}

// fire sends one initiation from a fresh identity.
func (r *rawInitiator) fire(t *testing.T) {
	key, err := secure.GenerateKey()
	if err != nil {
		t.Error(err)
		return
	}
	r.mu.Lock()
	r.next++
	idx := r.next
	r.mu.Unlock()
	payload := initPayload{version: protocolVersion, app: appHash(r.app), timestamp: uint64(time.Now().UnixNano()), epoch: uint64(idx)}
	in, err := secure.NewHandshaker(key).Initiate(secure.PublicKey(r.peer), idx, payload.encode())
	if err != nil {
		t.Error(err)
		return
	}
	r.mu.Lock()
	r.pending[idx] = in
	r.mu.Unlock()
	r.fired.Add(1)
	r.write(in.Message())
}

func (r *rawInitiator) write(b []byte) {
	if n, err := r.pc.WriteTo(b, r.to); err == nil {
		r.sent.Add(int64(n))
	}
}

// serve reads the node's answers until the socket closes.
func (r *rawInitiator) serve() {
	buf := make([]byte, 2048)
	for {
		n, _, err := r.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		r.recv.Add(int64(n))
		r.handle(buf[:n])
	}
}

func (r *rawInitiator) handle(b []byte) {
	switch b[0] {
	case secure.TypeCookieReply:
		idx, _ := secure.CookieReplyReceiverIndex(b)
		r.mu.Lock()
		in := r.pending[idx]
		r.mu.Unlock()
		if in != nil && in.ConsumeCookieReply(b) == nil {
			r.write(in.Message())
		}
	case secure.TypeResponse:
		idx, _ := secure.ResponseReceiverIndex(b)
		r.mu.Lock()
		in := r.pending[idx]
		delete(r.pending, idx)
		r.mu.Unlock()
		if in == nil {
			return
		}
		kp, _, err := in.ConsumeResponse(b)
		if err != nil {
			return
		}
		r.done.Add(1)
		if r.confirm {
			buf := make([]byte, secure.DataHeaderLen, secure.DataHeaderLen+secure.TagLen)
			if pkt, err := kp.Seal(buf, 0, 0); err == nil {
				r.write(pkt)
			}
		}
	}
}

// TestAttackPendingFlood: one source IP opens fresh, valid, confirmed
// sessions at 150 a second and never sends data, so the application never
// hears of them; five players from other addresses connect meanwhile and
// all get in. (With one small global count of pending sessions, 29 of 30
// such connects failed at once with NoRightsToApp.)
func TestAttackPendingFlood(t *testing.T) {
	leakcheck.Check(t)
	victim := loopbackNode(t, "127.0.0.1", Config{MaxPendingSessions: 64})
	pc, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	atk := &rawInitiator{pc: pc, to: victim.LocalAddr(), peer: victim.PeerID(), confirm: true, pending: map[uint32]*secure.Initiation{}}
	served := make(chan struct{})
	go func() { atk.serve(); close(served) }()
	stop := make(chan struct{})
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		tick := time.NewTicker(time.Second / 150)
		defer tick.Stop()
		for range 150 * 10 { // at most 10 s
			select {
			case <-stop:
				return
			case <-tick.C:
				atk.fire(t)
			}
		}
	}()
	defer func() {
		close(stop)
		<-flooded
		pc.Close()
		<-served
	}()
	// 100 fresh initiations: more than a global count of 64 pending
	// sessions holds.
	waitFor(t, 5*time.Second, "the flood", func() bool { return atk.fired.Load() >= 100 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go acceptAll(ctx, victim)
	players := make([]*Node, 5)
	for i := range players {
		players[i] = loopbackNode(t, netip.AddrFrom4([4]byte{127, 0, 0, byte(3 + i)}).String(), Config{})
		players[i].AddPeerAddr(victim.PeerID(), addrOf(victim))
		if err := players[i].SendP2PPacket(victim.PeerID(), []byte("hello"), SendReliable, 0); err != nil {
			t.Fatal(err)
		}
	}
	got := map[PeerID]bool{}
	for len(got) < len(players) {
		p, err := victim.Receive(ctx, 0)
		if err != nil {
			for _, pl := range players {
				st, _ := pl.GetP2PSessionState(victim.PeerID())
				t.Logf("player %v: %+v", pl.PeerID(), st)
			}
			t.Fatalf("%d of %d players got in during the flood (%v); victim %+v", len(got), len(players), err, victim.Stats())
		}
		got[p.From] = true
	}
	st := victim.Stats()
	t.Logf("flood: %d handshakes completed, %d cookies sent, %d pending refused, %d evicted", atk.done.Load(), st.CookiesSent, st.PendingRefused, st.PendingEvicted)
	if st.CookiesSent == 0 || st.PendingRefused == 0 {
		t.Fatalf("the flood was not met with cookies and its IP's share: %+v", st)
	}
	victim.Close()
	for _, p := range players {
		p.Close()
	}
}

// acceptAll accepts every session request until ctx ends.
func acceptAll(ctx context.Context, n *Node) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, open := <-n.Events():
			if !open {
				return
			}
			if r, ok := e.(SessionRequest); ok {
				n.AcceptP2PSessionWithUser(r.Peer)
			}
		}
	}
}

// TestAttackNoAmplification: one initiation, valid but from an address
// that never proves itself (spoofed, or replayed from a capture), is
// answered with the response alone: no keepalives, acknowledgements or
// control packets follow, and the node forgets the session. (The node used
// to send its keepalives too: twice the initiation's bytes.)
func TestAttackNoAmplification(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		victim := newMemNode(t, m, 2, Config{})
		raw := m.listen(7, 0)
		defer raw.Close()
		atk := &rawInitiator{pc: raw, to: victim.LocalAddr(), peer: victim.PeerID(), pending: map[uint32]*secure.Initiation{}}
		go atk.serve()
		atk.fire(t)
		time.Sleep(30 * time.Second)
		if atk.done.Load() != 1 {
			t.Fatalf("the initiation was not answered: %+v", victim.Stats())
		}
		if got, sent := atk.recv.Load(), atk.sent.Load(); got > sent {
			t.Fatalf("one initiation of %d bytes drew %d bytes", sent, got)
		}
		if st := victim.Stats(); st.UnconfirmedExpired != 1 {
			t.Fatalf("the unproven session was not forgotten: %+v", st)
		}
	})
}

// TestAttackSessionsPerIP: an application that accepts everyone still
// holds at most MaxSessionsPerIP sessions opened from one source IP; the
// rest are refused, and a player from another address gets in.
func TestAttackSessionsPerIP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		victim := newMemNode(t, m, 2, Config{MaxSessionsPerIP: 4})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go acceptAll(ctx, victim)
		var attackers []*Node
		for i := range 10 {
			a := newMemNode(t, m, 7, Config{ConnectTimeout: 3 * time.Second}) // one IP, many ports
			a.AddPeerAddr(victim.PeerID(), addrOf(victim))
			a.SendP2PPacket(victim.PeerID(), []byte{byte(i)}, SendReliable, 0)
			attackers = append(attackers, a)
			time.Sleep(50 * time.Millisecond)
		}
		other := newMemNode(t, m, 8, Config{})
		other.AddPeerAddr(victim.PeerID(), addrOf(victim))
		other.SendP2PPacket(victim.PeerID(), []byte("me too"), SendReliable, 0)
		time.Sleep(2 * time.Second)
		fromIP7, fromOther := 0, 0
		for {
			p, ok := victim.ReadP2PPacket(0)
			if !ok {
				break
			}
			if p.From == other.PeerID() {
				fromOther++
			} else {
				fromIP7++
			}
		}
		refused := 0
		for _, a := range attackers {
			if st, _ := a.GetP2PSessionState(victim.PeerID()); st.SessionError == SessionErrorNoRightsToApp {
				refused++
			}
		}
		if fromIP7 != 4 || refused != 6 || fromOther != 1 {
			t.Fatalf("from one IP %d delivered, %d refused (want 4 and 6); from another %d (%+v)", fromIP7, refused, fromOther, victim.Stats())
		}
		if victim.Stats().SessionsPerIPRefused == 0 {
			t.Fatal("refusals not counted")
		}
	})
}
