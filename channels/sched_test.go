package channels

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// sentFrameOf is one reliable frame a test Conn sent, in order.
type sentFrameOf struct {
	channel uint16
	bytes   int
}

// drain queues msgs (channel and size, in order) on c, lets it send
// everything at once (no congestion window, no pacing, a peer that never
// acknowledges) and returns the reliable frames in the order they went out.
func drain(t *testing.T, c *Conn, msgs [][2]int) []sentFrameOf {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	cc := newCubic(c.cfg.MaxDatagramSize)
	cc.window = 1 << 30
	c.cc = cc
	c.pacer.setRate(0)
	c.peerMaxData = 1 << 40
	for _, m := range msgs {
		sc := c.sendChannelLocked(uint16(m[0]))
		c.enqueueLocked(sc, kindReliable, make([]byte, m[1]), now)
	}
	c.flushReq = true
	for c.newChans > 0 {
		if b := c.buildLocked(now); b == nil {
			t.Fatalf("nothing built with %d channels waiting", c.newChans)
		} else {
			putBatch(b)
		}
	}
	var out []sentFrameOf
	for i := range c.history.n {
		for _, f := range c.history.slot(i).frames {
			out = append(out, sentFrameOf{f.msg.channel, len(f.msg.fragment(int(f.frag), c.fragSize))})
		}
	}
	return out
}

// schedConn is a Conn whose datagrams go nowhere.
func schedConn(t *testing.T, cfg Config) *Conn {
	t.Helper()
	cfg.NoRedundancy = true // copies would blur who got which bytes
	c, err := New(linkFunc(func([][]byte) error { return nil }), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestChannelPriorityLevels: a channel of a lower level sends all its
// reliable data before one of a higher level sends any, however the
// messages were queued; channels of one level share.
func TestChannelPriorityLevels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := schedConn(t, Config{ChannelPriority: func(ch uint16) Priority {
			return Priority{Level: int(ch / 10)} // 1, 2: level 0; 10: level 1
		}})
		full := 20 * c.fragSize // whole fragments: no room left beside one
		frames := drain(t, c, [][2]int{{10, full}, {1, full}, {2, full}, {10, full}})
		seenHigh := false
		var first [2]int // bytes of channels 1 and 2 among the first 20 frames
		for i, f := range frames {
			switch {
			case f.channel == 10:
				seenHigh = true
			case seenHigh:
				t.Fatalf("frame %d: channel %d (level 0) after channel 10 (level 1) began", i, f.channel)
			}
			if i < 20 && f.channel != 10 {
				first[f.channel-1] += f.bytes
			}
		}
		if first[0] != first[1] {
			t.Errorf("first 20 frames: channel 1 sent %d bytes, channel 2 %d, want equal shares", first[0], first[1])
		}
	})
}

// TestChannelPriorityWeights: within a level, channels share by weight,
// in bytes, whatever the size of their messages: small messages on one
// channel and large ones on another get equal bytes by default, and 3:1
// with weights 3 and 1.
func TestChannelPriorityWeights(t *testing.T) {
	for _, w := range []int{0, 3} {
		synctest.Test(t, func(t *testing.T) {
			c := schedConn(t, Config{})
			if err := c.SetChannelPriority(1, Priority{Weight: w}); err != nil {
				t.Fatal(err)
			}
			var msgs [][2]int
			for i := range 1000 { // 300 KB and 500 KB
				msgs = append(msgs, [2]int{1, 300})
				if i%10 == 0 {
					msgs = append(msgs, [2]int{2, 5000})
				}
			}
			frames := drain(t, c, msgs)
			var bytes [3]int
			total := 0
			for _, f := range frames {
				if total >= 200_000 { // both still have data here
					break
				}
				bytes[f.channel] += f.bytes
				total += f.bytes
			}
			want := float64(max(w, 1))
			ratio := float64(bytes[1]) / float64(bytes[2])
			t.Logf("weights %v:1, messages of 300 and 5000 bytes: %d and %d bytes, %.2f:1", want, bytes[1], bytes[2], ratio)
			if ratio < 0.9*want || ratio > 1.1*want {
				t.Errorf("bytes sent %.2f:1, want %v:1", ratio, want)
			}
		})
	}
}

// TestSetChannelPriority: a channel moved to a lower level while it has
// data queued goes first from the next datagram on; invalid weights are
// refused.
func TestSetChannelPriority(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := schedConn(t, Config{})
		c.mu.Lock()
		for _, ch := range []uint16{1, 2} {
			c.enqueueLocked(c.sendChannelLocked(ch), kindReliable, make([]byte, 10*c.fragSize), time.Now())
		}
		c.mu.Unlock()
		if err := c.SetChannelPriority(2, Priority{Level: -1}); err != nil {
			t.Fatal(err)
		}
		frames := drain(t, c, nil)
		for i, f := range frames[:10] {
			if f.channel != 2 {
				t.Fatalf("frame %d from channel %d, want channel 2's ten first", i, f.channel)
			}
		}
		for _, w := range []int{-1, MaxWeight + 1} {
			if err := c.SetChannelPriority(3, Priority{Weight: w}); !errors.Is(err, ErrInvalidPriority) {
				t.Errorf("weight %d: %v, want ErrInvalidPriority", w, err)
			}
		}
		c.Close()
		if err := c.SetChannelPriority(3, Priority{}); !errors.Is(err, ErrClosed) {
			t.Errorf("after Close: %v, want ErrClosed", err)
		}
	})
}
