package netlab

import (
	"os"
	"testing"
)

// RequireEnv names the environment variable that makes lab tests
// mandatory: when it is "1" (CI sets it), Require fails a test that cannot
// run a lab instead of skipping it.
const RequireEnv = "GAMEWIRE_REQUIRE_LAB"

// Require skips the test with a message starting "netlab unavailable:"
// and the reason when labs cannot run here (not root, no ip or nft, ...),
// or fails it instead when GAMEWIRE_REQUIRE_LAB=1.
func Require(tb testing.TB) {
	tb.Helper()
	ok, reason := Available()
	if ok {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatalf("netlab unavailable: %s (%s=1: lab tests are mandatory here)", reason, RequireEnv)
	}
	tb.Skip("netlab unavailable: " + reason)
}

// NewForTest is Require, then New, with Close registered in the test's
// cleanup (a failing Close fails the test). It fails the test if New does.
func NewForTest(tb testing.TB, opts Options) *Lab {
	tb.Helper()
	Require(tb)
	l, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("netlab: Close: %v", err)
		}
	})
	return l
}
