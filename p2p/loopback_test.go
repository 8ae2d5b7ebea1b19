package p2p

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/internal/secure"
)

// loopbackNode starts a Node on a real UDP socket at ip.
func loopbackNode(t *testing.T, ip string, cfg Config) *Node {
	t.Helper()
	cfg.ListenAddr = net.JoinHostPort(ip, "0")
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLoopbackAllSendTypes runs two Nodes over real sockets: every send
// type, a 1 MiB message, Close, and no goroutine left behind.
func TestLoopbackAllSendTypes(t *testing.T) {
	leakcheck.Check(t)
	a := loopbackNode(t, "127.0.0.1", Config{AppID: "loop"})
	b := loopbackNode(t, "127.0.0.1", Config{AppID: "loop"})
	introduce(a, b)
	b.SendP2PPacket(a.PeerID(), []byte("hello"), SendReliable, 0) // b opens and accepts
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case e := <-a.Events():
		if r, ok := e.(SessionRequest); !ok || r.Peer != b.PeerID() {
			t.Fatalf("event %#v", e)
		}
	case <-ctx.Done():
		t.Fatal("no session request")
	}
	a.AcceptP2PSessionWithUser(b.PeerID())
	if p, err := a.Receive(ctx, 0); err != nil || string(p.Data) != "hello" {
		t.Fatalf("%q %v", p.Data, err)
	}
	big := bytes.Repeat([]byte("gamewire"), MaxReliableSize/8)
	for ch, st := range []SendType{SendUnreliable, SendUnreliableNoDelay, SendReliable, SendReliableWithBuffering} {
		for i := range 10 {
			if err := a.SendP2PPacket(b.PeerID(), []byte{byte(ch), byte(i)}, st, ch+1); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.Send(b.PeerID(), []byte("sequenced"), channels.Unreliable, 9)
	a.SendP2PPacket(b.PeerID(), big, SendReliable, 10)
	for ch := 1; ch <= 4; ch++ {
		for i := range 10 {
			p, err := b.Receive(ctx, ch)
			if err != nil {
				t.Fatalf("channel %d: %v", ch, err)
			}
			if ch >= 3 && p.Data[1] != byte(i) { // reliable ones in order
				t.Fatalf("channel %d: got #%d, want #%d", ch, p.Data[1], i)
			}
		}
	}
	if p, err := b.Receive(ctx, 9); err != nil || string(p.Data) != "sequenced" {
		t.Fatalf("sequenced: %q %v", p.Data, err)
	}
	if p, err := b.Receive(ctx, 10); err != nil || !bytes.Equal(p.Data, big) {
		t.Fatalf("1 MiB message: %d bytes, %v", len(p.Data), err)
	}
	st, ok := a.GetP2PSessionState(b.PeerID())
	if !ok || !st.ConnectionActive || st.SmoothedRTT <= 0 || st.SmoothedRTT > time.Second || st.BytesSent < MaxReliableSize {
		t.Fatalf("state %+v", st)
	}
	a.Close()
	b.Close()
}

// floodAttacker sends valid initiations to victim from many source ports on
// 127.0.0.2, optionally answering cookie replies as a real peer would.
type floodAttacker struct {
	conns       []*net.UDPConn
	inits       []*secure.Initiation
	mus         []*sync.Mutex // an Initiation is not safe for concurrent use
	sent, recvd atomic.Int64  // bytes
	wg          sync.WaitGroup
}

func newFloodAttacker(t *testing.T, victim *Node, ports int, answerCookies bool) *floodAttacker {
	t.Helper()
	fa := &floodAttacker{}
	victimPub := secure.PublicKey(victim.PeerID())
	for i := range ports {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
		if err != nil {
			t.Skipf("cannot bind 127.0.0.2: %v", err)
		}
		key, _ := secure.GenerateKey()
		in, err := secure.NewHandshaker(key).Initiate(victimPub, uint32(i+1), make([]byte, secure.InitiationPayloadLen))
		if err != nil {
			t.Fatal(err)
		}
		mu := new(sync.Mutex)
		fa.conns, fa.inits, fa.mus = append(fa.conns, c), append(fa.inits, in), append(fa.mus, mu)
		fa.wg.Add(1)
		go func() {
			defer fa.wg.Done()
			buf := make([]byte, 2048)
			for {
				n, _, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				fa.recvd.Add(int64(n))
				if answerCookies && buf[0] == secure.TypeCookieReply {
					mu.Lock()
					in.ConsumeCookieReply(buf[:n])
					mu.Unlock()
				}
			}
		}()
	}
	return fa
}

// run floods for d, at most maxPackets datagrams.
func (fa *floodAttacker) run(victim netip.AddrPort, d time.Duration, maxPackets int) int {
	end := time.Now().Add(d)
	sent := 0
	for sent < maxPackets && time.Now().Before(end) {
		for i, c := range fa.conns {
			fa.mus[i].Lock()
			msg := fa.inits[i].Message()
			fa.mus[i].Unlock()
			c.WriteToUDPAddrPort(msg, victim)
			fa.sent.Add(int64(len(msg)))
			sent++
		}
		time.Sleep(time.Millisecond)
	}
	return sent
}

func (fa *floodAttacker) close() {
	for _, c := range fa.conns {
		c.Close()
	}
	fa.wg.Wait()
}

// TestHandshakeFlood: a flood of valid initiations from many source ports
// makes the victim demand cookies and rate-limit, so the expensive work it
// does stays bounded, it never answers with more bytes than it got, and a
// real peer still connects meanwhile.
func TestHandshakeFlood(t *testing.T) {
	for _, answerCookies := range []bool{false, true} {
		name := "ignores-cookies"
		if answerCookies {
			name = "answers-cookies"
		}
		t.Run(name, func(t *testing.T) {
			leakcheck.Check(t)
			victim := loopbackNode(t, "127.0.0.1", Config{})
			fa := newFloodAttacker(t, victim, 100, answerCookies)
			defer fa.close()
			alice := loopbackNode(t, "127.0.0.1", Config{})
			introduce(alice, victim)
			const floodFor = 3 * time.Second
			var sent int
			done := make(chan struct{})
			go func() {
				defer close(done)
				sent = fa.run(addrOf(victim), floodFor, 200000)
			}()
			time.Sleep(300 * time.Millisecond) // let the flood build up
			start := time.Now()
			alice.SendP2PPacket(victim.PeerID(), []byte("real"), SendReliable, 0)
			victim.SendP2PPacket(alice.PeerID(), []byte("real"), SendReliable, 0)
			waitFor(t, 10*time.Second, "the real session under flood", func() bool {
				st, ok := alice.GetP2PSessionState(victim.PeerID())
				return ok && st.ConnectionActive
			})
			connectTime := time.Since(start)
			<-done
			time.Sleep(200 * time.Millisecond)
			s := victim.Stats()
			// Without load the first initiations are processed; past the load
			// threshold only those with a valid cookie, each source address
			// at 20 a second after a burst of 5.
			budget := uint64(handshakeQueueLen + 5 + 20*int(floodFor/time.Second) + 10)
			t.Logf("%d initiations sent; victim did %d handshakes, sent %d cookies, rate-limited %d, dropped %d; real peer connected in %v; attacker sent %d bytes, received %d",
				sent, s.Handshakes, s.CookiesSent, s.RateLimited, s.HandshakeDropped, connectTime, fa.sent.Load(), fa.recvd.Load())
			if s.Handshakes > budget {
				t.Errorf("victim did %d handshakes, budget %d", s.Handshakes, budget)
			}
			if fa.recvd.Load() > fa.sent.Load() {
				t.Errorf("amplification: %d bytes back for %d", fa.recvd.Load(), fa.sent.Load())
			}
			if s.CookiesSent == 0 {
				t.Error("no cookies: the node never counted itself under load")
			}
		})
	}
}
