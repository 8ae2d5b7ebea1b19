package channels

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// linkFunc adapts a function to Link.
type linkFunc func([][]byte) error

func (f linkFunc) SendDatagrams(d [][]byte) error { return f(d) }

var discard = linkFunc(func([][]byte) error { return nil })

func TestFlagsValidate(t *testing.T) {
	for _, tc := range []struct {
		f   Flags
		ok  bool
		str string
	}{
		{Unreliable, true, "Unreliable"},
		{Reliable, true, "Reliable"},
		{Unsequenced, true, "Unreliable|Unsequenced"},
		{Unreliable | Unsequenced | FlushHint, true, "Unreliable|Unsequenced|FlushHint"},
		{Reliable | FlushHint, true, "Reliable|FlushHint"},
		{Reliable | Unsequenced, false, "Reliable|Unsequenced"},
		{Reliable | Unsequenced | FlushHint, false, "Reliable|Unsequenced|FlushHint"},
		{8, false, "Unreliable|Invalid"},
		{0x80 | Reliable, false, "Reliable|Invalid"},
	} {
		err := tc.f.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%v: Validate() = %v", tc.f, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidFlags) {
			t.Errorf("%v: error %v is not ErrInvalidFlags", tc.f, err)
		}
		if got := tc.f.String(); got != tc.str {
			t.Errorf("String() = %q, want %q", got, tc.str)
		}
	}
}

func TestSendRefusesInvalidFlagsAndSizes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := New(discard, Config{MaxReliableSize: 100000, SendQueueBytes: 200000, ReceiveWindow: 200000})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Send(0, []byte("x"), Reliable|Unsequenced); !errors.Is(err, ErrInvalidFlags) {
			t.Errorf("Reliable|Unsequenced: %v", err)
		}
		if err := c.Send(0, make([]byte, 100001), Reliable); !errors.Is(err, ErrTooLarge) {
			t.Errorf("reliable over max: %v", err)
		}
		if err := c.Send(0, make([]byte, 100000), Reliable); err != nil {
			t.Errorf("reliable at max: %v", err)
		}
		if err := c.Send(0, make([]byte, c.fragSize+1), Unreliable); !errors.Is(err, ErrTooLarge) {
			t.Errorf("unreliable over one datagram: %v", err)
		}
		if err := c.Send(0, make([]byte, c.fragSize), Unsequenced); err != nil {
			t.Errorf("unreliable of one datagram: %v", err)
		}
		if err := c.Send(0, nil, Reliable); err != nil {
			t.Errorf("empty message: %v", err)
		}
		// The queue: 100000 reliable bytes wait for acknowledgement, 200000
		// are allowed.
		if err := c.Send(1, make([]byte, 100000), Reliable); err != nil {
			t.Errorf("queue to its limit: %v", err)
		}
		if err := c.Send(1, []byte{1}, Reliable); !errors.Is(err, ErrQueueFull) {
			t.Errorf("queue past its limit: %v", err)
		}
		if s := c.Stats(); s.QueueFull != 1 {
			t.Errorf("QueueFull = %d", s.QueueFull)
		}
	})
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{MaxDatagramSize: 100},
		{MaxDatagramSize: 70000},
		{Headroom: -1},
		{MaxUnreliableSize: MaxUnreliableFragmented + 1},
		{MaxReliableSize: 8 << 20},                        // queue 4 MiB below it
		{ReceiveWindow: 1 << 20},                          // not above MaxReliableSize
		{MaxUnreliableSize: 60000, ReassemblyBytes: 1000}, // budget below one message
		{IdleTimeout: time.Second, KeepaliveInterval: 2 * time.Second},
		{InitialRTT: -time.Second},
	} {
		if _, err := cfg.withDefaults(); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	cfg, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxDatagramSize != 1164 || cfg.NagleDelay != 5*time.Millisecond || cfg.MaxReliableSize != 1<<20 ||
		cfg.IdleTimeout != 10*time.Second || cfg.KeepaliveInterval != time.Second {
		t.Errorf("defaults: %+v", cfg)
	}
	if cfg, _ := (Config{NagleDelay: -1}).withDefaults(); cfg.NagleDelay != 0 {
		t.Errorf("negative NagleDelay gave %v", cfg.NagleDelay)
	}
}

func TestIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net0 := simConfig{delay: 10 * time.Millisecond}
		p := newPair(t, net0, net0, Config{}, Config{})
		if err := p.a.Send(0, []byte("hello"), Reliable|FlushHint); err != nil {
			t.Fatal(err)
		}
		if !p.rb.waitFor(time.Second, func() bool { return len(p.rb.msgs) == 1 }) {
			t.Fatal("not delivered")
		}
		// The peer vanishes: nothing gets through either way.
		vanished := time.Now()
		p.net.setDrop(0, func([]byte) bool { return true })
		p.net.setDrop(1, func([]byte) bool { return true })
		select {
		case <-p.a.Done():
		case <-time.After(time.Minute):
			t.Fatal("no timeout")
		}
		if d := time.Since(vanished); d < DefaultIdleTimeout-time.Second || d > DefaultIdleTimeout+time.Second {
			t.Errorf("timed out after %v, want about %v", d, DefaultIdleTimeout)
		}
		if err := p.a.Err(); !errors.Is(err, ErrTimeout) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("Err() = %v", err)
		}
		if err := p.a.Send(0, []byte("x"), Reliable); !errors.Is(err, ErrTimeout) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("Send after timeout: %v", err)
		}
		if s := p.a.Stats(); s.ProbeTimeouts == 0 && s.PacketsSent < 5 {
			t.Errorf("no keepalives or probes while waiting: %+v", s)
		}
	})
}

func TestKeepaliveHoldsIdleConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net0 := simConfig{delay: 30 * time.Millisecond}
		p := newPair(t, net0, net0, Config{}, Config{})
		time.Sleep(3 * DefaultIdleTimeout)
		if err := p.a.Err(); err != nil {
			t.Fatalf("idle but live Conn ended: %v", err)
		}
		s := p.a.Stats()
		if s.PacketsSent < 25 || s.PacketsReceived < 25 {
			t.Errorf("keepalives: sent %d received %d in %v", s.PacketsSent, s.PacketsReceived, 3*DefaultIdleTimeout)
		}
		if s.SmoothedRTT < 55*time.Millisecond || s.SmoothedRTT > 80*time.Millisecond {
			t.Errorf("keepalives should measure the 60 ms RTT, got %v", s.SmoothedRTT)
		}
	})
}

func TestCloseTellsPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net0 := simConfig{delay: 10 * time.Millisecond}
		p := newPair(t, net0, net0, Config{}, Config{})
		if err := p.a.Close(); err != nil {
			t.Fatal(err)
		}
		if err := p.a.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		select {
		case <-p.b.Done():
		case <-time.After(time.Second):
			t.Fatal("peer not told")
		}
		if err := p.b.Err(); !errors.Is(err, ErrPeerClosed) {
			t.Errorf("peer Err() = %v", err)
		}
		for _, err := range []error{p.a.Send(0, nil, Reliable), p.a.Flush(), p.a.HandleDatagram([]byte{0x80, 0, 1})} {
			if !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
				t.Errorf("after Close: %v", err)
			}
		}
		if err := p.a.WaitSendQueue(context.Background()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("WaitSendQueue after Close: %v", err)
		}
	})
}

// countingLink counts datagrams that carry messages (not acknowledgements
// or pings alone) and forwards everything to a simDir.
type countingLink struct {
	Link
	mu    sync.Mutex
	sizes []int
}

func (l *countingLink) SendDatagrams(d [][]byte) error {
	l.mu.Lock()
	for _, b := range d {
		var p packetParser
		if _, _, err := p.parse(b); err != nil {
			panic(err)
		}
		for _, f := range p.frames {
			if f.typ&frameTypeMsgMask == frameTypeMsg {
				l.sizes = append(l.sizes, len(b))
				break
			}
		}
	}
	l.mu.Unlock()
	return l.Link.SendDatagrams(d)
}

func (l *countingLink) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sizes)
}

func TestNagleCoalescesAndFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net0 := simConfig{delay: 10 * time.Millisecond}
		n := newSimNet(net0, net0)
		defer n.close()
		link := &countingLink{Link: n.link(0)}
		rb := newCollector()
		a, err := New(link, Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		b, err := New(n.link(1), Config{Deliver: rb.deliver})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		n.attach(0, b)
		n.attach(1, a)

		// 40 small messages without FlushHint share one datagram, sent when
		// NagleDelay runs out.
		start := time.Now()
		for i := range 40 {
			if err := a.Send(uint16(i%4), payload(uint16(i%4), i/4, 20), Unreliable); err != nil {
				t.Fatal(err)
			}
		}
		if got := link.count(); got != 0 {
			t.Fatalf("%d datagrams sent before NagleDelay", got)
		}
		if !rb.waitFor(time.Second, func() bool { return len(rb.msgs) == 40 }) {
			t.Fatal("not delivered")
		}
		if d := time.Since(start); d != DefaultNagleDelay+net0.delay {
			t.Errorf("delivered after %v, want NagleDelay + delay = %v", d, DefaultNagleDelay+net0.delay)
		}
		if got := link.count(); got != 1 {
			t.Errorf("40 messages took %d datagrams", got)
		}

		// Enough for a full datagram goes at once.
		before := link.count()
		for i := range 60 {
			if err := a.Send(5, payload(5, i, 30), Reliable); err != nil {
				t.Fatal(err)
			}
		}
		if got := link.count() - before; got != 1 {
			t.Errorf("a full datagram of data: %d sent at once, want 1", got)
		}

		// FlushHint sends now, with what was buffered before it. (Between
		// keepalives: buffered data rides on any datagram that leaves.)
		time.Sleep(1500 * time.Millisecond)
		before = link.count()
		a.Send(6, []byte("buffered-1"), Reliable)
		a.Send(6, []byte("buffered-2"), Unreliable)
		if link.count() != before {
			t.Fatal("buffered data sent early")
		}
		a.Send(7, []byte("flush"), Reliable|FlushHint)
		if got := link.count() - before; got != 1 {
			t.Errorf("FlushHint sent %d datagrams, want 1", got)
		}
		// Flush does the same without a message.
		time.Sleep(1500 * time.Millisecond)
		before = link.count()
		a.Send(6, []byte("buffered-3"), Unsequenced)
		if err := a.Flush(); err != nil {
			t.Fatal(err)
		}
		if got := link.count() - before; got != 1 {
			t.Errorf("Flush sent %d datagrams, want 1", got)
		}
	})
}

func TestNagleDisabled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		sent := 0
		link := linkFunc(func(d [][]byte) error {
			mu.Lock()
			sent += len(d)
			mu.Unlock()
			return nil
		})
		c, err := New(link, Config{NagleDelay: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := range 5 {
			c.Send(0, []byte{byte(i)}, Unreliable)
		}
		mu.Lock()
		defer mu.Unlock()
		if sent != 5 {
			t.Errorf("NagleDelay < 0: %d datagrams for 5 messages", sent)
		}
	})
}

// TestPeerNeverAcks: a sender whose peer acknowledges nothing stops at its
// queue limit with bounded state, then times out.
func TestPeerNeverAcks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const queue = 1 << 20
		c, err := New(discard, Config{MaxReliableSize: 64 << 10, SendQueueBytes: queue})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sent := 0
		for {
			err := c.Send(uint16(sent%8), make([]byte, 1000+sent%3000), Reliable)
			if errors.Is(err, ErrQueueFull) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			sent++
		}
		for range 150 {
			time.Sleep(100 * time.Millisecond)
			c.Send(0, make([]byte, 10), Unsequenced) // keep offering unreliable data too
			c.mu.Lock()
			queued, inFlight, window, ptos := c.queuedBytes, c.inFlight, c.cc.congestionWindow(), int(c.stats.ptos)
			hist, retx := c.history.n, c.retxCount
			c.mu.Unlock()
			if queued > 2*queue { // past the bound, channels below their fair share still send
				t.Fatalf("queue %d over twice its bound %d", queued, queue)
			}
			// A datagram may start while in flight is under the window, and
			// each probe timeout may send two past it (RFC 9002 §6.2.4);
			// backoff bounds how many there are.
			if inFlight > window+(1+2*ptos)*DefaultMaxDatagramSize {
				t.Fatalf("in flight %d over window %d after %d probe timeouts", inFlight, window, ptos)
			}
			if hist > 4096 || retx > 4096 {
				t.Fatalf("history %d, retransmission queue %d", hist, retx)
			}
			if c.Err() != nil {
				break
			}
		}
		if err := c.Err(); !errors.Is(err, ErrTimeout) {
			t.Fatalf("Err() = %v, want timeout", err)
		}
		t.Logf("queued %d messages before ErrQueueFull", sent)
	})
}

// TestFragmentFlood: a hostile peer sends first fragments of ever new large
// messages and never completes one. Held bytes stay within the windows.
func TestFragmentFlood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := New(discard, Config{MaxUnreliableSize: 60000})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		data := make([]byte, 1000)
		var refused, accepted int
		for i := range 20000 {
			var b []byte
			b = appendHeader(b, uint64(i))
			ch := uint16(i % 70000 % 65536)
			switch i % 3 {
			case 0: // reliable, 1 MiB claimed
				b = appendMsg(b, kindReliable, true, ch, uint64(i), 1<<20, 1000, 0, data, true)
			case 1: // sequenced unreliable
				b = appendMsg(b, kindSequenced, true, ch, uint64(i), 60000, 1000, 3, data, true)
			default: // unsequenced
				b = appendMsg(b, kindUnsequenced, true, ch, uint64(i), 50000, 1000, 7, data, false)
			}
			switch err := c.HandleDatagram(b); {
			case err == nil:
				accepted++
			case errors.Is(err, ErrFlowControl):
				refused++
			default:
				t.Fatalf("datagram %d: %v", i, err)
			}
		}
		c.mu.Lock()
		charged, limit := c.charged, c.maxDataLimit()
		held := 0
		for _, rc := range c.recvChans {
			for _, m := range rc.pending {
				held += len(m.data)
			}
		}
		partial, drops := c.partialBytes, c.stats.reassemblyDrops
		c.mu.Unlock()
		if charged > limit {
			t.Errorf("charged %d past the window %d", charged, limit)
		}
		if held > c.cfg.ReceiveWindow {
			t.Errorf("holding %d bytes of reliable data, window %d", held, c.cfg.ReceiveWindow)
		}
		if partial > c.cfg.ReassemblyBytes {
			t.Errorf("reassembly %d over budget %d", partial, c.cfg.ReassemblyBytes)
		}
		if refused == 0 || drops == 0 {
			t.Errorf("flood not refused: %d flow-control drops, %d reassembly drops", refused, drops)
		}
		t.Logf("accepted %d, refused %d; holding %d reliable bytes, %d partial bytes", accepted, refused, held, partial)
	})
}

func TestHandleDatagramErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := New(discard, Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, b := range [][]byte{nil, {0x80}, {0x00, 1, 1}, {0xC0, 1, 1}, {0x81, 1, 1}, {0x80, 1, 0x7F}} {
			if err := c.HandleDatagram(b); !errors.Is(err, ErrMalformed) {
				t.Errorf("% x: %v", b, err)
			}
		}
		ping := []byte{0x80, 9, frameTypePing}
		if err := c.HandleDatagram(ping); err != nil {
			t.Fatal(err)
		}
		if err := c.HandleDatagram(ping); !errors.Is(err, ErrDuplicate) {
			t.Errorf("duplicate: %v", err)
		}
		// An ACK for a packet never sent.
		ack := appendAck([]byte{0x80, 10}, []pnRange{{0, 50}}, 0, 0, 100)
		if err := c.HandleDatagram(ack); !errors.Is(err, ErrMalformed) {
			t.Errorf("ack of unsent packet: %v", err)
		}
		s := c.Stats()
		if s.Malformed != 7 || s.Duplicates != 1 {
			t.Errorf("counted %d malformed, %d duplicates", s.Malformed, s.Duplicates)
		}
	})
}

// TestDeliverMaySend: a Deliver callback that answers with Send must not
// deadlock.
func TestDeliverMaySend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net0 := simConfig{delay: 5 * time.Millisecond}
		n := newSimNet(net0, net0)
		defer n.close()
		ra := newCollector()
		a, _ := New(n.link(0), Config{Deliver: ra.deliver})
		var b *Conn
		b, _ = New(n.link(1), Config{Deliver: func(m Message) {
			b.Send(m.Channel, append([]byte("echo:"), m.Data...), Reliable|FlushHint)
		}})
		n.attach(0, b)
		n.attach(1, a)
		defer a.Close()
		defer b.Close()
		for i := range 100 {
			a.Send(1, []byte{byte(i)}, Reliable|FlushHint)
		}
		if !ra.waitFor(5*time.Second, func() bool { return len(ra.msgs) == 100 }) {
			t.Fatalf("%d echoes", ra.len())
		}
		for i, m := range ra.snapshot() {
			if !bytes.Equal(m.Data, []byte{'e', 'c', 'h', 'o', ':', byte(i)}) {
				t.Fatalf("echo %d: %q", i, m.Data)
			}
		}
	})
}

func TestConcurrentSenders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net0 := simConfig{seed: 9, loss: 0.02, delay: 5 * time.Millisecond}
		p := newPair(t, net0, net0, Config{}, Config{})
		var want []Message
		var wg sync.WaitGroup
		for g := range 4 {
			msgs := make([]Message, 300)
			for i := range msgs {
				msgs[i] = Message{Channel: uint16(g), Flags: Reliable, Data: payload(uint16(g), i, 10+i%500)}
			}
			want = append(want, msgs...)
			wg.Go(func() { sendAll(t, p.a, msgs) })
		}
		go p.b.Stats() // stats from another goroutine while traffic runs
		wg.Wait()
		if !p.rb.waitFor(time.Minute, func() bool { return len(p.rb.msgs) == len(want) }) {
			t.Fatalf("%d of %d", p.rb.len(), len(want))
		}
		checkReliable(t, want, p.rb.snapshot())
	})
}

// TestStatsTellTheTruth compares Stats with what the simulated path did.
func TestStatsTellTheTruth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net0 := simConfig{seed: 11, loss: 0.05, delay: 25 * time.Millisecond}
		p := newPair(t, net0, net0, Config{}, Config{})
		// 60 Hz of 100-byte reliable messages for 20 s.
		for i := range 1200 {
			if err := p.a.Send(0, payload(0, i, 100), Reliable|FlushHint); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second / 60)
		}
		if !p.rb.waitFor(10*time.Second, func() bool { return len(p.rb.msgs) == 1200 }) {
			t.Fatalf("delivered %d", p.rb.len())
		}
		time.Sleep(time.Second)
		s := p.a.Stats()
		sent, lost, _, _ := p.net.counts(0)
		if s.PacketsSent != uint64(sent) {
			t.Errorf("PacketsSent %d, path saw %d", s.PacketsSent, sent)
		}
		if s.SmoothedRTT < 50*time.Millisecond || s.SmoothedRTT > 60*time.Millisecond || s.MinRTT < 50*time.Millisecond {
			t.Errorf("RTT smoothed %v min %v, path RTT 50 ms", s.SmoothedRTT, s.MinRTT)
		}
		pathLoss := 100 * float64(lost) / float64(sent)
		if s.LossPercentLifetime < pathLoss-2.5 || s.LossPercentLifetime > pathLoss+2.5 {
			t.Errorf("loss %.1f%%, path dropped %.1f%%", s.LossPercentLifetime, pathLoss)
		}
		if s.QueuedBytes != 0 || s.QueuedMessages != 0 || s.BytesInFlight > 100 {
			t.Errorf("after delivery: queued %d bytes %d messages, %d in flight", s.QueuedBytes, s.QueuedMessages, s.BytesInFlight)
		}
		if s.MessagesSent != 1200 || p.b.Stats().MessagesReceived != 1200 {
			t.Errorf("messages sent %d received %d", s.MessagesSent, p.b.Stats().MessagesReceived)
		}
		if s.CongestionWindow < 2*DefaultMaxDatagramSize || s.Retransmissions == 0 {
			t.Errorf("cwnd %d, retransmissions %d", s.CongestionWindow, s.Retransmissions)
		}
		t.Logf("%+v", s)
	})
}

func TestStatsRates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net0 := simConfig{delay: 10 * time.Millisecond}
		p := newPair(t, net0, net0, Config{}, Config{})
		// 100 datagrams a second of about 500 bytes, for 3 s.
		for range 300 {
			p.a.Send(0, make([]byte, 500), Unsequenced|FlushHint)
			time.Sleep(10 * time.Millisecond)
		}
		s := p.a.Stats()
		if s.PacketsSentPerSecond < 95 || s.PacketsSentPerSecond > 110 {
			t.Errorf("%.1f packets/s, want about 100", s.PacketsSentPerSecond)
		}
		if s.BytesSentPerSecond < 95*500 || s.BytesSentPerSecond > 110*520 {
			t.Errorf("%.0f bytes/s, want about 51000", s.BytesSentPerSecond)
		}
		if r := p.b.Stats().PacketsReceivedPerSecond; r < 95 || r > 110 {
			t.Errorf("peer receives %.1f packets/s", r)
		}
	})
}

func TestUnreliableExpiresInQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := New(discard, Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Fill the congestion window with reliable data nobody acknowledges.
		for range 100 {
			c.Send(0, make([]byte, 1000), Reliable|FlushHint)
		}
		c.Send(1, []byte("late"), Unsequenced|FlushHint)
		if s := c.Stats(); s.QueuedMessages != 101 {
			t.Fatalf("queued %d", s.QueuedMessages)
		}
		time.Sleep(5 * time.Second) // probes time out; the unreliable message ages
		s := c.Stats()
		if s.UnreliableExpired != 1 {
			t.Errorf("UnreliableExpired = %d", s.UnreliableExpired)
		}
	})
}

// TestReleaseOnRead: with ReleaseOnRead, a receiver that does not release
// stops the sender at its window; releasing lets the rest through.
func TestReleaseOnRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net0 := simConfig{delay: 5 * time.Millisecond}
		const window = 200 << 10
		cfgB := Config{ReleaseOnRead: true, MaxReliableSize: 64 << 10, ReceiveWindow: window}
		p := newPair(t, net0, net0, Config{MaxReliableSize: 64 << 10}, cfgB)
		const n, size = 40, 20000
		go sendAll(t, p.a, func() []Message {
			var msgs []Message
			for i := range n {
				msgs = append(msgs, Message{Channel: 1, Flags: Reliable, Data: payload(1, i, size)})
			}
			return msgs
		}())
		time.Sleep(5 * time.Second)
		held := p.rb.len()
		if held*(size+msgCostOverhead) > window || held < window/(size+msgCostOverhead)-1 {
			t.Fatalf("%d messages delivered without release; window holds %d", held, window/(size+msgCostOverhead))
		}
		if s := p.b.Stats(); s.FlowControlDrops != 0 {
			t.Fatalf("sender overran the window: %d drops", s.FlowControlDrops)
		}
		// Release as a reader would, one message at a time.
		released := 0
		for released < n {
			if p.rb.len() > released {
				p.b.Release(size)
				released++
				continue
			}
			if !p.rb.waitFor(5*time.Second, func() bool { return len(p.rb.msgs) > released }) {
				t.Fatalf("stuck after %d releases, %d delivered", released, p.rb.len())
			}
		}
		checkReliable(t, func() []Message {
			var msgs []Message
			for i := range n {
				msgs = append(msgs, Message{Channel: 1, Flags: Reliable, Data: payload(1, i, size)})
			}
			return msgs
		}(), p.rb.snapshot())
	})
}

// TestSetReceiveWindow grows a small window and the sender uses it.
func TestSetReceiveWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net0 := simConfig{delay: 5 * time.Millisecond}
		cfgB := Config{ReleaseOnRead: true, MaxReliableSize: 64 << 10, ReceiveWindow: 100 << 10}
		p := newPair(t, net0, net0, Config{MaxReliableSize: 64 << 10}, cfgB)
		for i := range 20 {
			if err := p.a.Send(1, payload(1, i, 20000), Reliable); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(2 * time.Second)
		before := p.rb.len()
		p.b.SetReceiveWindow(50 << 10) // smaller: ignored
		time.Sleep(time.Second)
		if p.rb.len() != before {
			t.Fatalf("shrinking the window let more through")
		}
		p.b.SetReceiveWindow(1 << 20)
		if !p.rb.waitFor(2*time.Second, func() bool { return len(p.rb.msgs) == 20 }) {
			t.Fatalf("grown window: %d of 20 delivered (%d before)", p.rb.len(), before)
		}
		if before >= 20 || before < 3 {
			t.Fatalf("%d delivered through a 100 KiB window", before)
		}
	})
}

// TestAckOverdue: the figure grows while the path is dead, a stream
// running or not, and is zero once the peer acknowledges again.
func TestAckOverdue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net0 := simConfig{delay: 10 * time.Millisecond}
		p := newPair(t, net0, net0, Config{}, Config{})
		send := func(i int) {
			if err := p.a.Send(0, []byte{byte(i)}, Reliable|FlushHint); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 20 {
			send(i)
			time.Sleep(10 * time.Millisecond)
			if d := p.a.AckOverdue(); d != 0 {
				t.Fatalf("healthy path: ack overdue by %v", d)
			}
		}
		p.net.setDrop(0, func([]byte) bool { return true })
		for i := range 100 { // a message every 10 ms: probe timeouts keep moving
			send(20 + i)
			time.Sleep(10 * time.Millisecond)
		}
		if d := p.a.AckOverdue(); d < 800*time.Millisecond {
			t.Fatalf("a second of silence: ack overdue by %v, want most of it", d)
		}
		p.net.setDrop(0, nil)
		if !p.rb.waitFor(5*time.Second, func() bool { return len(p.rb.msgs) == 120 }) {
			t.Fatalf("%d of 120 messages arrived after the path came back", len(p.rb.msgs))
		}
		time.Sleep(200 * time.Millisecond)
		if d := p.a.AckOverdue(); d != 0 {
			t.Errorf("path back: ack overdue by %v", d)
		}
	})
}
