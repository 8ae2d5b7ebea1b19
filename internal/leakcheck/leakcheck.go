package leakcheck

import (
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// Check records the goroutines running now and, when the test ends, fails
// it if others are still running after a grace period in which exiting
// goroutines may finish. Call it first in a test, before starting anything.
func Check(t testing.TB) {
	t.Helper()
	before := ids()
	t.Cleanup(func() {
		var extra []string
		deadline := time.Now().Add(5 * time.Second)
		for {
			extra = extra[:0]
			for id, stack := range stacks() {
				if !before[id] && !ignorable(stack) {
					extra = append(extra, stack)
				}
			}
			if len(extra) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(extra) > 0 {
			sort.Strings(extra)
			t.Errorf("%d goroutine(s) leaked:\n\n%s", len(extra), strings.Join(extra, "\n\n"))
		}
	})
}

// ignorable reports goroutines that run tests (a parallel test started
// meanwhile), which the code under test did not start.
func ignorable(stack string) bool {
	return strings.Contains(stack, "\ntesting.tRunner(")
}

func ids() map[string]bool {
	m := map[string]bool{}
	for id := range stacks() {
		m[id] = true
	}
	return m
}

// stacks returns every goroutine's stack keyed by its "goroutine N" header.
func stacks() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	m := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, " [")
		m[header] = g
	}
	return m
}
