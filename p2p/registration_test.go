package p2p

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gamewire/gamewire/internal/leakcheck"
)

// TestWaitRegistered: WaitRegistered returns nil once the server holds the
// registration, and RegistrationChanged says so.
func TestWaitRegistered(t *testing.T) {
	leakcheck.Check(t)
	srv := startRendezvous(t)
	n := loopbackNode(t, "127.0.0.1", Config{Rendezvous: PeerID(srv.PublicKey()).String() + "@" + srv.Addr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitRegistered(ctx); err != nil {
		t.Fatal(err)
	}
	e := awaitEvent(n, 5*time.Second, func(e Event) bool { _, ok := e.(RegistrationChanged); return ok })
	if r, ok := e.(RegistrationChanged); !ok || !r.Registered || r.Err != nil {
		t.Fatalf("event %#v", e)
	}
	n.Close()
	if err := n.WaitRegistered(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestWaitRegisteredWrongKey: a server whose key is not the pinned one is
// reported as such, at once, not as silence.
func TestWaitRegisteredWrongKey(t *testing.T) {
	leakcheck.Check(t)
	srv := startRendezvous(t)
	other, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	n := loopbackNode(t, "127.0.0.1", Config{Rendezvous: other.PeerID().String() + "@" + srv.Addr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitRegistered(ctx); !errors.Is(err, ErrServerKey) {
		t.Fatalf("got %v, want ErrServerKey", err)
	}
	e := awaitEvent(n, 5*time.Second, func(e Event) bool { _, ok := e.(RegistrationChanged); return ok })
	if r, ok := e.(RegistrationChanged); !ok || r.Registered || !errors.Is(r.Err, ErrServerKey) {
		t.Fatalf("event %#v", e)
	}
	n.Close()
}

// TestWaitRegisteredUnreachable: a server that never answers makes
// WaitRegistered end with the context's error and ErrServerUnreachable
// (the NAT test waits 2 s for the server first, then registration tries
// for 3 s).
func TestWaitRegisteredUnreachable(t *testing.T) {
	leakcheck.Check(t)
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	n := loopbackNode(t, "127.0.0.1", Config{Rendezvous: silent.LocalAddr().String(), DisableDirectTCP: true,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nil, errors.New("no TCP in this test")
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 6500*time.Millisecond)
	defer cancel()
	err = n.WaitRegistered(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrServerUnreachable) {
		t.Fatalf("got %v, want the deadline and ErrServerUnreachable", err)
	}
	n.Close()
}
