package p2p

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gamewire/gamewire/channels"
)

// newMemNode starts a Node on m at host; the test's cleanup closes it.
func newMemNode(t *testing.T, m *memNet, host byte, cfg Config) *Node {
	t.Helper()
	pc := m.listen(host, 0)
	cfg.PacketConn = pc
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		pc.Close()
	})
	return n
}

func addrOf(n *Node) netip.AddrPort {
	ap := n.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// introduce tells each node where the other is.
func introduce(a, b *Node) {
	a.AddPeerAddr(b.PeerID(), addrOf(b))
	b.AddPeerAddr(a.PeerID(), addrOf(a))
}

// nextEvent waits for n's next event matching want, failing the test when
// none comes within timeout (fake time inside a synctest bubble).
func nextEvent(t *testing.T, n *Node, timeout time.Duration, want func(Event) bool) Event {
	t.Helper()
	e := awaitEvent(n, timeout, want)
	if e == nil {
		t.Fatalf("no matching event within %v", timeout)
	}
	return e
}

// awaitEvent waits for n's next event matching want; nil if none comes
// within timeout, or the node closed.
func awaitEvent(n *Node, timeout time.Duration, want func(Event) bool) Event {
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-n.Events():
			if !ok {
				return nil
			}
			if want(e) {
				return e
			}
		case <-deadline:
			return nil
		}
	}
}

func isRequest(from PeerID) func(Event) bool {
	return func(e Event) bool { r, ok := e.(SessionRequest); return ok && r.Peer == from }
}

func isFail(peer PeerID, want SessionError) func(Event) bool {
	return func(e Event) bool { f, ok := e.(SessionConnectFail); return ok && f.Peer == peer && f.Error == want }
}

// recvData waits for a packet on channel and returns its data as a string.
func recvData(t *testing.T, n *Node, channel int, timeout time.Duration) Packet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	p, err := n.Receive(ctx, channel)
	if err != nil {
		t.Fatalf("Receive on %d: %v", channel, err)
	}
	return p
}

// noEvent asserts no event arrives for d.
func noEvent(t *testing.T, n *Node, d time.Duration) {
	t.Helper()
	select {
	case e := <-n.Events():
		t.Fatalf("unexpected event %#v", e)
	case <-time.After(d):
	}
}

func TestSessionAcceptFlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := newMemNode(t, m, 1, Config{AppID: "g"}), newMemNode(t, m, 2, Config{AppID: "g"})
		introduce(a, b)
		if _, ok := a.GetP2PSessionState(b.PeerID()); ok {
			t.Fatal("state without a session")
		}
		if err := a.SendP2PPacket(b.PeerID(), []byte("hello"), SendReliable, 3); err != nil {
			t.Fatal(err)
		}
		st, ok := a.GetP2PSessionState(b.PeerID())
		if !ok || !st.Connecting || st.ConnectionActive {
			t.Fatalf("after send: %+v %v", st, ok)
		}
		nextEvent(t, b, time.Second, isRequest(a.PeerID()))
		if _, ok := b.ReadP2PPacket(3); ok {
			t.Fatal("data delivered before accept")
		}
		if st, _ := a.GetP2PSessionState(b.PeerID()); st.ConnectionActive || !st.Connecting {
			t.Fatalf("initiator active before the peer accepted: %+v", st)
		}
		if !b.AcceptP2PSessionWithUser(a.PeerID()) {
			t.Fatal("accept refused")
		}
		p := recvData(t, b, 3, time.Second)
		if string(p.Data) != "hello" || p.From != a.PeerID() || p.Channel != 3 {
			t.Fatalf("got %+v", p)
		}
		time.Sleep(100 * time.Millisecond)
		st, _ = a.GetP2PSessionState(b.PeerID())
		if !st.ConnectionActive || st.Connecting || st.RemoteAddr != addrOf(b) || st.Path != PathDirect {
			t.Fatalf("initiator after accept: %+v", st)
		}
		// Replies need no acceptance: a sent first.
		b.SendP2PPacket(a.PeerID(), []byte("hi"), SendReliable, 3)
		if p := recvData(t, a, 3, time.Second); string(p.Data) != "hi" {
			t.Fatalf("reply %q", p.Data)
		}
		noEvent(t, a, time.Second)
	})
}

// TestImplicitAccept: sending to a peer that is waiting on us accepts it.
func TestImplicitAccept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := newMemNode(t, m, 1, Config{}), newMemNode(t, m, 2, Config{})
		introduce(a, b)
		a.SendP2PPacket(b.PeerID(), []byte("one"), SendReliable, 0)
		nextEvent(t, b, time.Second, isRequest(a.PeerID()))
		b.SendP2PPacket(a.PeerID(), []byte("two"), SendReliable, 0) // accepts a
		if p := recvData(t, b, 0, time.Second); string(p.Data) != "one" {
			t.Fatalf("held data: %q", p.Data)
		}
		if p := recvData(t, a, 0, time.Second); string(p.Data) != "two" {
			t.Fatalf("reply: %q", p.Data)
		}
	})
}

func TestSessionRequestRepeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := newMemNode(t, m, 1, Config{}), newMemNode(t, m, 2, Config{})
		introduce(a, b)
		start := time.Now()
		var got []time.Duration
		go func() {
			for i := range 40 {
				a.SendP2PPacket(b.PeerID(), []byte{byte(i)}, SendUnreliable, 0)
				time.Sleep(250 * time.Millisecond)
			}
		}()
		for len(got) < 4 {
			nextEvent(t, b, 5*time.Second, isRequest(a.PeerID()))
			got = append(got, time.Since(start))
		}
		for i := 1; i < len(got); i++ {
			if d := got[i] - got[i-1]; d < requestRepeat || d > requestRepeat+time.Second {
				t.Errorf("requests at %v: gap %v, want about %v", got, d, requestRepeat)
			}
		}
		// When the peer stops sending, so do the requests.
		time.Sleep(10 * time.Second)
		for len(b.Events()) > 0 {
			<-b.Events()
		}
		noEvent(t, b, 5*time.Second)
	})
}

// TestUnacceptedTimesOut: a request never answered fails the sender with
// Timeout at ConnectTimeout, exactly once, and drops the held data; the
// next send starts a fresh attempt.
func TestUnacceptedTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := newMemNode(t, m, 1, Config{}), newMemNode(t, m, 2, Config{})
		introduce(a, b)
		start := time.Now()
		a.SendP2PPacket(b.PeerID(), []byte("ignored"), SendReliable, 0)
		nextEvent(t, b, time.Second, isRequest(a.PeerID()))
		nextEvent(t, a, time.Minute, isFail(b.PeerID(), SessionErrorTimeout))
		if d := time.Since(start); d < DefaultConnectTimeout || d > DefaultConnectTimeout+time.Second {
			t.Errorf("failed after %v, want %v", d, DefaultConnectTimeout)
		}
		st, ok := a.GetP2PSessionState(b.PeerID())
		if !ok || st.SessionError != SessionErrorTimeout || st.Connecting || st.ConnectionActive || st.BytesQueuedForSend != 0 {
			t.Fatalf("after failure: %+v %v", st, ok)
		}
		noEvent(t, a, 5*time.Second) // one failure only
		time.Sleep(30 * time.Second)
		if b.AcceptP2PSessionWithUser(a.PeerID()) {
			t.Fatal("held session still there after ConnectTimeout")
		}
		if _, ok := b.ReadP2PPacket(0); ok {
			t.Fatal("dropped data delivered")
		}
		// A fresh attempt.
		a.SendP2PPacket(b.PeerID(), []byte("again"), SendReliable, 0)
		nextEvent(t, b, time.Second, isRequest(a.PeerID()))
		b.AcceptP2PSessionWithUser(a.PeerID())
		if p := recvData(t, b, 0, time.Second); string(p.Data) != "again" {
			t.Fatalf("fresh attempt delivered %q", p.Data)
		}
	})
}

// TestConnectTimeoutNoPath: nobody answers; one failure at ConnectTimeout.
func TestConnectTimeoutNoPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a := newMemNode(t, m, 1, Config{ConnectTimeout: 5 * time.Second})
		ghost, _ := NewIdentity()
		a.AddPeerAddr(ghost.PeerID(), netip.MustParseAddrPort("10.0.0.99:9"))
		start := time.Now()
		for i := range 3 {
			if err := a.SendP2PPacket(ghost.PeerID(), make([]byte, 100), SendReliable, i); err != nil {
				t.Fatal(err)
			}
		}
		if st, _ := a.GetP2PSessionState(ghost.PeerID()); st.BytesQueuedForSend != 300 || st.PacketsQueuedForSend != 3 {
			t.Fatalf("queued: %+v", st)
		}
		nextEvent(t, a, time.Minute, isFail(ghost.PeerID(), SessionErrorTimeout))
		if d := time.Since(start); d != 5*time.Second && (d < 5*time.Second || d > 5*time.Second+maintenancePeriod) {
			t.Errorf("failed after %v", d)
		}
		if st, _ := a.GetP2PSessionState(ghost.PeerID()); st.BytesQueuedForSend != 0 {
			t.Fatalf("queue kept after failure: %+v", st)
		}
		noEvent(t, a, 10*time.Second)
	})
}

// TestPeerGoesSilent: an established session whose peer vanishes fails
// with Timeout.
func TestPeerGoesSilent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := connectedPair(t, m)
		m.setFilter(func(from, to netip.AddrPort, b []byte) []byte { return nil })
		start := time.Now()
		nextEvent(t, a, time.Minute, isFail(b.PeerID(), SessionErrorTimeout))
		if d := time.Since(start); d < channels.DefaultIdleTimeout || d > channels.DefaultIdleTimeout+time.Second {
			t.Errorf("silent peer detected after %v", d)
		}
	})
}

func TestCloseSessionTellsPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := connectedPair(t, m)
		if !a.CloseP2PSessionWithUser(b.PeerID()) {
			t.Fatal("close reported no session")
		}
		if a.CloseP2PSessionWithUser(b.PeerID()) {
			t.Fatal("second close reported a session")
		}
		nextEvent(t, b, time.Second, func(e Event) bool { c, ok := e.(SessionClosed); return ok && c.Peer == a.PeerID() })
		if _, ok := b.GetP2PSessionState(a.PeerID()); ok {
			t.Fatal("peer still reports the session")
		}
		// New data from b raises a new request at a.
		b.SendP2PPacket(a.PeerID(), []byte("again"), SendReliable, 0)
		nextEvent(t, a, 2*time.Second, isRequest(b.PeerID()))
	})
}

// TestRefuseSession: closing a session the peer opened, unaccepted, fails
// the peer with NoRightsToApp.
func TestRefuseSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := newMemNode(t, m, 1, Config{}), newMemNode(t, m, 2, Config{})
		introduce(a, b)
		a.SendP2PPacket(b.PeerID(), []byte("let me in"), SendReliable, 0)
		nextEvent(t, b, time.Second, isRequest(a.PeerID()))
		b.CloseP2PSessionWithUser(a.PeerID())
		nextEvent(t, a, time.Second, isFail(b.PeerID(), SessionErrorNoRightsToApp))
		if st, ok := a.GetP2PSessionState(b.PeerID()); !ok || st.SessionError != SessionErrorNoRightsToApp {
			t.Fatalf("%+v %v", st, ok)
		}
	})
}

func TestRefusalSurvivesLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := newMemNode(t, m, 1, Config{}), newMemNode(t, m, 2, Config{})
		introduce(a, b)
		a.SendP2PPacket(b.PeerID(), []byte("let me in"), SendReliable, 0)
		nextEvent(t, b, time.Second, isRequest(a.PeerID()))
		// Lose everything b sends for a while: the first refusal is lost.
		m.setFilter(func(from, to netip.AddrPort, p []byte) []byte {
			if from == addrOf(b) {
				return nil
			}
			return p
		})
		b.CloseP2PSessionWithUser(a.PeerID())
		time.Sleep(300 * time.Millisecond)
		m.setFilter(nil)
		nextEvent(t, a, 5*time.Second, isFail(b.PeerID(), SessionErrorNoRightsToApp))
	})
}

func TestCloseChannel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := newMemNode(t, m, 1, Config{}), newMemNode(t, m, 2, Config{})
		introduce(a, b)
		b.AddPeerAddr(a.PeerID(), addrOf(a))
		for _, ch := range []int{1, 2} {
			a.SendP2PPacket(b.PeerID(), []byte(fmt.Sprint("on ", ch)), SendReliable, ch)
		}
		b.SendP2PPacket(a.PeerID(), []byte("hi"), SendReliable, 1) // accept
		time.Sleep(200 * time.Millisecond)
		if _, ok := b.IsP2PPacketAvailable(1); !ok {
			t.Fatal("nothing on channel 1")
		}
		if !b.CloseP2PChannelWithUser(a.PeerID(), 1) {
			t.Fatal("channel 1 not open")
		}
		if _, ok := b.ReadP2PPacket(1); ok {
			t.Fatal("closed channel's data still readable")
		}
		if b.CloseP2PChannelWithUser(a.PeerID(), 7) {
			t.Fatal("closed a channel never used")
		}
		if _, ok := b.GetP2PSessionState(a.PeerID()); !ok {
			t.Fatal("session closed with channel 2 still open")
		}
		if p := recvData(t, b, 2, time.Second); string(p.Data) != "on 2" {
			t.Fatalf("channel 2: %q", p.Data)
		}
		if !b.CloseP2PChannelWithUser(a.PeerID(), 2) {
			t.Fatal("channel 2 not open")
		}
		if _, ok := b.GetP2PSessionState(a.PeerID()); ok {
			t.Fatal("closing the last channel left the session open")
		}
		nextEvent(t, a, time.Second, func(e Event) bool { _, ok := e.(SessionClosed); return ok })
	})
}

func TestAppIDMismatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := newMemNode(t, m, 1, Config{AppID: "chess"}), newMemNode(t, m, 2, Config{AppID: "go"})
		introduce(a, b)
		a.SendP2PPacket(b.PeerID(), []byte("x"), SendReliable, 0)
		nextEvent(t, a, time.Second, isFail(b.PeerID(), SessionErrorNotRunningApp))
		noEvent(t, b, time.Second) // b never raised a request
	})
}

func TestSendTypeTable(t *testing.T) {
	for _, tc := range []struct {
		t       SendType
		flags   channels.Flags
		max     int
		queued  bool // before the session connects
		ordered bool
	}{
		{SendUnreliable, 6, 1200, true, false},
		{SendUnreliableNoDelay, 6, 1200, false, false},
		{SendReliable, 5, 1 << 20, true, true},
		{SendReliableWithBuffering, 1, 1 << 20, true, true},
	} {
		t.Run(tc.t.String(), func(t *testing.T) {
			if tc.t.Flags() != tc.flags {
				t.Fatalf("Flags() = %d, want %d", tc.t.Flags(), tc.flags)
			}
			synctest.Test(t, func(t *testing.T) {
				m := newMemNet(5 * time.Millisecond)
				a, b := newMemNode(t, m, 1, Config{}), newMemNode(t, m, 2, Config{})
				if err := a.SendP2PPacket(b.PeerID(), make([]byte, tc.max+1), tc.t, 0); !errors.Is(err, ErrTooLarge) {
					t.Fatalf("over the limit: %v", err)
				}
				// Before the session connects (no address yet).
				if err := a.SendP2PPacket(b.PeerID(), make([]byte, tc.max), tc.t, 0); err != nil {
					t.Fatalf("at the limit: %v", err)
				}
				st, _ := a.GetP2PSessionState(b.PeerID())
				if queued := st.PacketsQueuedForSend == 1; queued != tc.queued {
					t.Fatalf("queued before connect: %v, want %v", queued, tc.queued)
				}
				introduce(a, b)
				b.SendP2PPacket(a.PeerID(), []byte("accept"), SendReliable, 9)
				if tc.queued {
					p := recvData(t, b, 0, 2*time.Second)
					if len(p.Data) != tc.max {
						t.Fatalf("got %d bytes", len(p.Data))
					}
				}
				recvData(t, a, 9, 2*time.Second)
				time.Sleep(100 * time.Millisecond)
				// Connected now: every send type goes through.
				for i := range 50 {
					a.SendP2PPacket(b.PeerID(), []byte{byte(i)}, tc.t, 1)
				}
				for i := range 50 {
					p := recvData(t, b, 1, 2*time.Second)
					if tc.ordered && p.Data[0] != byte(i) {
						t.Fatalf("reliable order: got %d, want %d", p.Data[0], i)
					}
				}
				if _, ok := b.ReadP2PPacket(0); ok {
					t.Fatal("NoDelay packet delivered after being dropped")
				}
			})
		})
	}
}

func TestSendErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(0)
		a := newMemNode(t, m, 1, Config{})
		other, _ := NewIdentity()
		for _, tc := range []struct {
			err  error
			call func() error
		}{
			{ErrInvalidChannel, func() error { return a.SendP2PPacket(other.PeerID(), nil, SendReliable, -1) }},
			{ErrInvalidChannel, func() error { return a.SendP2PPacket(other.PeerID(), nil, SendReliable, 65536) }},
			{ErrInvalidSendType, func() error { return a.SendP2PPacket(other.PeerID(), nil, 4, 0) }},
			{ErrInvalidFlags, func() error { return a.Send(other.PeerID(), nil, channels.Reliable|channels.Unsequenced, 0) }},
			{ErrSelf, func() error { return a.SendP2PPacket(a.PeerID(), nil, SendReliable, 0) }},
			{ErrTooLarge, func() error { return a.Send(other.PeerID(), make([]byte, 1201), channels.Unreliable, 0) }},
		} {
			if err := tc.call(); !errors.Is(err, tc.err) {
				t.Errorf("got %v, want %v", err, tc.err)
			}
		}
		// The queue before connecting is bounded.
		var err error
		for range 10 {
			if err = a.SendP2PPacket(other.PeerID(), make([]byte, MaxReliableSize), SendReliable, 0); err != nil {
				break
			}
		}
		if !errors.Is(err, ErrQueueFull) {
			t.Errorf("unbounded queue: %v", err)
		}
	})
}

func TestCloseNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := connectedPair(t, m)
		ctx := context.Background()
		done := make(chan error)
		go func() { _, err := a.Receive(ctx, 5); done <- err }()
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked Receive: %v", err)
		}
		for _, err := range []error{
			a.SendP2PPacket(b.PeerID(), nil, SendReliable, 0),
			a.Send(b.PeerID(), nil, channels.Reliable, 0),
			a.Flush(b.PeerID()),
			func() error { _, err := a.Receive(ctx, 0); return err }(),
		} {
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("after Close: %v", err)
			}
		}
		nextEvent(t, b, time.Second, func(e Event) bool { _, ok := e.(SessionClosed); return ok })
	})
}

// TestLastWordsSurviveClose: what a peer sent before closing stays
// readable after its close arrives.
func TestLastWordsSurviveClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := connected(t, m)
		a.SendP2PPacket(b.PeerID(), []byte("bye"), SendReliable, 4)
		time.Sleep(100 * time.Millisecond) // delivered and acknowledged
		a.CloseP2PSessionWithUser(b.PeerID())
		nextEvent(t, b, time.Second, func(e Event) bool { _, ok := e.(SessionClosed); return ok })
		if p, ok := b.ReadP2PPacket(4); !ok || string(p.Data) != "bye" {
			t.Fatalf("last words lost: %q %v", p.Data, ok)
		}
	})
}

// TestShutdownIsNotRefusal: a node closing while a peer waits for it to
// accept does not make the peer's attempt fail with NoRightsToApp.
func TestShutdownIsNotRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := newMemNode(t, m, 1, Config{ConnectTimeout: 3 * time.Second}), newMemNode(t, m, 2, Config{})
		introduce(a, b)
		a.SendP2PPacket(b.PeerID(), []byte("hello?"), SendReliable, 0)
		nextEvent(t, b, time.Second, isRequest(a.PeerID()))
		b.Close()
		e := nextEvent(t, a, 10*time.Second, func(e Event) bool { _, ok := e.(SessionConnectFail); return ok })
		if f := e.(SessionConnectFail); f.Error != SessionErrorTimeout {
			t.Fatalf("peer's shutdown reported as %v", f.Error)
		}
	})
}

// connectedPair starts two nodes on m that know each other's address and
// have each accepted the other: both sent a reliable message on channel 0,
// and both were received.
func connectedPair(t *testing.T, m *memNet) (a, b *Node) {
	t.Helper()
	a, b = newMemNode(t, m, 1, Config{}), newMemNode(t, m, 2, Config{})
	introduce(a, b)
	a.SendP2PPacket(b.PeerID(), []byte("x"), SendReliable, 0)
	b.SendP2PPacket(a.PeerID(), []byte("y"), SendReliable, 0)
	recvData(t, a, 0, time.Second)
	recvData(t, b, 0, time.Second)
	return a, b
}

// TestSendContextWaitsForRoom: with the peer not reading, sends fill the
// queue; SendContext then waits (until its deadline, which it returns) and
// goes through once the peer reads and acknowledges.
func TestSendContextWaitsForRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(5 * time.Millisecond)
		a, b := connectedPair(t, m)
		msg := make([]byte, MaxReliableSize)
		// Fill b's receive window and a's queue: full, and still full once
		// whatever was in flight has been acknowledged.
		full := false
		for range 256 {
			if err := a.Send(b.PeerID(), msg, channels.Reliable, 3); errors.Is(err, ErrQueueFull) {
				time.Sleep(2 * time.Second)
				if err := a.Send(b.PeerID(), msg, channels.Reliable, 3); errors.Is(err, ErrQueueFull) {
					full = true
					break
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !full {
			t.Fatal("the queue never filled with the peer not reading")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := a.SendContext(ctx, b.PeerID(), msg, channels.Reliable, 3)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("with no room: %v, want the deadline", err)
		}
		done := make(chan error, 1)
		go func() { done <- a.SendContext(context.Background(), b.PeerID(), msg, channels.Reliable, 3) }()
		for {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				return
			default:
			}
			if _, ok := b.ReadP2PPacket(3); !ok {
				time.Sleep(10 * time.Millisecond)
			}
		}
	})
}
