package p2p

import (
	"context"
	"errors"
	"sync"
	"time"
)

// registration is what the application can see of the node's
// registration: registered or not, and why not. The maintenance goroutine
// updates it from the rendezvous clients on every tick (traversal.tick);
// WaitRegistered waits on changed. mu is a leaf lock.
type registration struct {
	mu         sync.Mutex
	registered bool
	err        error
	changed    chan struct{} // closed and replaced at every change
}

func newRegistration() *registration {
	return &registration{changed: make(chan struct{})}
}

// set records the state and reports whether it changed.
func (r *registration) set(registered bool, err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.registered == registered && r.err == err {
		return false
	}
	r.registered, r.err = registered, err
	close(r.changed)
	r.changed = make(chan struct{})
	return true
}

func (r *registration) get() (bool, error, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.registered, r.err, r.changed
}

// status reads the clients' state (UDP, and TCP while it runs): registered
// on either, else the most telling reason either gives.
func (t *traversal) status(now time.Time) (bool, error) {
	var why error
	for _, c := range t.clients() {
		ok, err := c.Status(now)
		if ok {
			return true, nil
		}
		if err == ErrServerKey || why == nil {
			why = err
		}
	}
	return false, why
}

// noteRegistration publishes the registration state and raises
// RegistrationChanged when it changed (maintenance goroutine).
func (t *traversal) noteRegistration(now time.Time) {
	ok, err := t.status(now)
	if t.reg.set(ok, err) {
		t.n.events.push(RegistrationChanged{Registered: ok, Err: err})
	}
}

// WaitRegistered waits until the rendezvous server holds the node's
// registration, and returns nil then. It returns ErrServerKey at once when
// the server's key is not the pinned one, ErrNoRendezvous without a
// server, ErrClosed when the node closes, and otherwise, when ctx ends,
// ctx's error joined with what the node knows of the cause
// (ErrServerUnreachable, say).
func (n *Node) WaitRegistered(ctx context.Context) error {
	if n.trav == nil {
		return ErrNoRendezvous
	}
	for {
		ok, err, changed := n.trav.reg.get()
		switch {
		case n.isClosed():
			return ErrClosed
		case ok:
			return nil
		case err == ErrServerKey:
			return err
		}
		select {
		case <-changed:
		case <-n.done:
			return ErrClosed
		case <-ctx.Done():
			if err != nil {
				return errors.Join(ctx.Err(), err)
			}
			return ctx.Err()
		}
	}
}
