package leakcheck

import (
	"strings"
	"testing"
	"time"
)

// fakeT records what Check reports instead of failing the real test.
type fakeT struct {
	testing.TB
	cleanups []func()
	errors   []string
}

func (f *fakeT) Helper()                   {}
func (f *fakeT) Cleanup(fn func())         { f.cleanups = append(f.cleanups, fn) }
func (f *fakeT) Errorf(s string, a ...any) { f.errors = append(f.errors, s) }

func (f *fakeT) finish() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func TestCheckFindsLeak(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	ft := &fakeT{TB: t}
	Check(ft)
	go func() { <-stop }()
	ft.finish()
	if len(ft.errors) != 1 || !strings.Contains(ft.errors[0], "leaked") {
		t.Fatalf("leak not reported: %v", ft.errors)
	}
}

func TestCheckAllowsExitingGoroutines(t *testing.T) {
	ft := &fakeT{TB: t}
	Check(ft)
	go func() { time.Sleep(50 * time.Millisecond) }()
	ft.finish()
	if len(ft.errors) != 0 {
		t.Fatalf("goroutine that exits was reported: %v", ft.errors)
	}
}
