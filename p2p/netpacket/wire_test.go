package netpacket

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"testing"

	"github.com/gamewire/gamewire/channels"
)

// TestWireGolden pins the byte layouts documented in the package doc.
func TestWireGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		hex  string
	}{
		{"data to everyone", appendData(nil, Broadcast, []byte("hi")), "ffff6869"},
		{"data from client 3", appendData(nil, 3, []byte{0xAB}), "0003ab"},
		{"join", appendJoin(nil, "v1"), "01017631"},
		{"join without version", appendJoin(nil, ""), "0101"},
		{"welcome 2 of 31", appendWelcome(nil, 2, 31), "020002001f"},
		{"refuse version", appendRefuse(nil, ReasonVersion, "v1"), "03017631"},
		{"refuse full", appendRefuse(nil, ReasonFull, "v1"), "0303"},
	} {
		if h := hex.EncodeToString(tc.got); h != tc.hex {
			t.Errorf("%s: %s, want %s", tc.name, h, tc.hex)
		}
	}
}

func TestParseErrors(t *testing.T) {
	long := make([]byte, 2+MaxVersionLen+1)
	long[0], long[1] = msgJoin, wireVersion
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"data empty", second(parseData(nil)), errShort},
		{"data header only", second(parseData([]byte{0, 1})), errShort},
		{"data too long", second(parseData(make([]byte, dataHeaderLen+MaxPacketSize+1))), errLong},
		{"join short", third(parseJoin([]byte{msgJoin})), errShort},
		{"join wrong type", third(parseJoin([]byte{msgWelcome, 1})), errBadType},
		{"join version too long", third(parseJoin(long)), errLong},
		{"welcome long", third(parseWelcome([]byte{msgWelcome, 0, 1, 0, 2, 0})), errLong},
		{"welcome wrong type", third(parseWelcome([]byte{msgJoin, 0, 1, 0, 2})), errBadType},
		{"welcome id 0", third(parseWelcome([]byte{msgWelcome, 0, 0, 0, 2})), errBadID},
		{"welcome id over max", third(parseWelcome([]byte{msgWelcome, 0, 3, 0, 2})), errBadID},
		{"refuse short", third(parseRefuse([]byte{msgRefuse})), errShort},
		{"refuse wrong type", third(parseRefuse([]byte{msgJoin, 1})), errBadType},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if _, _, err := parseData(make([]byte, dataHeaderLen+MaxPacketSize)); err != nil {
		t.Errorf("a 64 KiB packet: %v", err)
	}
}

func second[A, B any](_ A, _ B, err error) error { return err }
func third[A, B any](_ A, _ B, err error) error  { return err }

// FuzzWire: no input makes a parser panic, and what a parser accepts
// encodes back to the same bytes.
func FuzzWire(f *testing.F) {
	f.Add([]byte{0x01, 0x01, 'v'})
	f.Add([]byte{0x02, 0, 1, 0, 31})
	f.Add([]byte{0x03, 0x01, 'v'})
	f.Add([]byte{0xFF, 0xFF, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		if id, payload, err := parseData(b); err == nil && !bytes.Equal(appendData(nil, id, payload), b) {
			t.Errorf("data % x", b)
		}
		if wire, v, err := parseJoin(b); err == nil && wire == wireVersion && !bytes.Equal(appendJoin(nil, v), b) {
			t.Errorf("join % x", b)
		}
		if id, maxID, err := parseWelcome(b); err == nil && !bytes.Equal(appendWelcome(nil, id, maxID), b) {
			t.Errorf("welcome % x", b)
		}
		if r, v, err := parseRefuse(b); err == nil {
			want := b[:2] // only a version refusal carries the version
			if r == ReasonVersion {
				want = b
			}
			if !bytes.Equal(appendRefuse(nil, r, v), want) {
				t.Errorf("refuse % x", b)
			}
		}
	})
}

// TestRoute: each flag combination takes its documented class, and
// unreliable packets over MaxUnreliableSize go reliably.
func TestRoute(t *testing.T) {
	for _, tc := range []struct {
		flags    Flags
		size     int
		channel  int
		cf       channels.Flags
		upgraded bool
	}{
		{Unreliable, 10, channelSequenced, channels.Unreliable, false},
		{Reliable, 10, channelReliable, channels.Reliable, false},
		{Unsequenced, 10, channelUnsequenced, channels.Unreliable | channels.Unsequenced, false},
		{Reliable | Unsequenced, 10, channelReliable, channels.Reliable, false},
		{FlushHint, 10, channelSequenced, channels.FlushHint, false},
		{Reliable | FlushHint, 10, channelReliable, channels.Reliable | channels.FlushHint, false},
		{Unsequenced | FlushHint, 10, channelUnsequenced, channels.Unsequenced | channels.FlushHint, false},
		{Reliable | Unsequenced | FlushHint, 10, channelReliable, channels.Reliable | channels.FlushHint, false},
		{Unreliable, MaxUnreliableSize, channelSequenced, channels.Unreliable, false},
		{Unreliable, MaxUnreliableSize + 1, channelReliable, channels.Reliable, true},
		{Unsequenced | FlushHint, MaxPacketSize, channelReliable, channels.Reliable | channels.FlushHint, true},
	} {
		ch, cf, up := route(tc.flags, tc.size)
		if ch != tc.channel || cf != tc.cf || up != tc.upgraded {
			t.Errorf("route(%v, %d) = %#x %v %v", tc.flags, tc.size, ch, cf, up)
		}
		if cf.Validate() != nil {
			t.Errorf("route(%v) gave invalid flags %v", tc.flags, cf)
		}
	}
	if MaxUnreliableSize != 1198 {
		t.Errorf("MaxUnreliableSize %d", MaxUnreliableSize)
	}
}

func TestFlagsString(t *testing.T) {
	for f, want := range map[Flags]string{
		Unreliable:                         "Unreliable",
		Reliable | FlushHint:               "Reliable|FlushHint",
		Unsequenced:                        "Unreliable|Unsequenced",
		Reliable | Unsequenced | FlushHint: "Reliable|Unsequenced|FlushHint",
		8:                                  "Unreliable|Invalid",
	} {
		if got := f.String(); got != want {
			t.Errorf("%d: %q, want %q", int(f), got, want)
		}
	}
}

func TestErrors(t *testing.T) {
	v := &RefusedError{Reason: ReasonVersion, LocalVersion: "a", RemoteVersion: "b"}
	full := &RefusedError{Reason: ReasonFull}
	switch {
	case !errors.Is(v, ErrRefused) || !errors.Is(v, ErrVersionMismatch):
		t.Error("version refusal does not match")
	case !errors.Is(full, ErrRefused) || errors.Is(full, ErrVersionMismatch):
		t.Error("full refusal matches wrongly")
	case !errors.Is(ErrClosed, net.ErrClosed):
		t.Error("ErrClosed does not match net.ErrClosed")
	case Reason(9).String() != "reason 9" || (&RefusedError{Reason: 9}).Error() != "netpacket: refused: reason 9":
		t.Error("unknown reason text")
	}
}

func TestConfig(t *testing.T) {
	ok := Callbacks{Start: func(uint16, SendFunc, func()) {}, Receive: func([]byte, uint16) {}}
	for _, tc := range []struct {
		name string
		cb   Callbacks
		cfg  Config
		want error
	}{
		{"no Start", Callbacks{Receive: ok.Receive}, Config{}, ErrMissingCallback},
		{"no Receive", Callbacks{Start: ok.Start}, Config{}, ErrMissingCallback},
		{"long version", Callbacks{Start: ok.Start, Receive: ok.Receive, ProtocolVersion: string(make([]byte, 256))}, Config{}, ErrVersionTooLong},
		{"MaxClients 0xFFFF", ok, Config{MaxClients: 0xFFFF}, ErrBadConfig},
		{"negative MaxClients", ok, Config{MaxClients: -1}, ErrBadConfig},
		{"negative JoinTimeout", ok, Config{JoinTimeout: -1}, ErrBadConfig},
	} {
		if _, err := NewHost(nil, tc.cb, tc.cfg); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	cfg, err := Config{}.withDefaults()
	if err != nil || cfg.MaxClients != 31 || cfg.JoinTimeout != DefaultJoinTimeout || cfg.Logger == nil {
		t.Errorf("defaults %+v %v", cfg, err)
	}
	if cfg, err := (Config{MaxClients: 0xFFFE}).withDefaults(); err != nil || cfg.MaxClients != 0xFFFE {
		t.Errorf("MaxClients 0xFFFE: %v", err)
	}
}
