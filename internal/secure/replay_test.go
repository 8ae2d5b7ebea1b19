package secure

import (
	"math/rand/v2"
	"testing"
)

func TestReplayWindow(t *testing.T) {
	type step struct {
		ctr  uint64
		want bool
	}
	const W = replayWindow
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{0, true}, {1, true}, {2, true}, {3, true}}},
		{"duplicate", []step{{0, true}, {0, false}, {5, true}, {5, false}, {0, false}}},
		{"reordered within window", []step{{10, true}, {3, true}, {9, true}, {0, true}, {11, true}, {3, false}}},
		{"gap filled later", []step{{100, true}, {50, true}, {99, true}, {50, false}, {101, true}}},
		{"edge of window", []step{{W + 10, true}, {10, false}, {11, true}, {11, false}, {12, true}}},
		{"too old after jump", []step{{1, true}, {W + 1, true}, {1, false}, {2, true}}},
		{"far jump clears the ring", []step{{5, true}, {5 + 10*W, true}, {5 + 10*W - 64*replayRingBlocks, false}, {5 + 9*W, false}, {5 + 10*W - 1, true}}},
		{"jump of exactly one ring", []step{{64, true}, {64 + 64*replayRingBlocks, true}, {64 + 64*replayRingBlocks - 1, true}, {64, false}}},
		{"block boundary", []step{{63, true}, {64, true}, {63, false}, {127, true}, {128, true}, {64, false}}},
		{"limit", []step{{rejectAfterMessages - 1, true}, {rejectAfterMessages, false}, {rejectAfterMessages + 1, false}, {^uint64(0), false}, {rejectAfterMessages - 2, true}}},
		{"counter zero after others", []step{{1, true}, {0, true}, {0, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f replayFilter
			for i, s := range tt.steps {
				if got := f.fresh(s.ctr); got != s.want {
					t.Fatalf("step %d: fresh(%d) = %v, want %v", i, s.ctr, got, s.want)
				}
				if got := f.accept(s.ctr); got != s.want {
					t.Fatalf("step %d: accept(%d) = %v, want %v", i, s.ctr, got, s.want)
				}
			}
		})
	}
}

// replayModel is the specification: a counter is accepted once, if below
// the limit and within ReplayWindow of the highest accepted.
type replayModel struct {
	seen map[uint64]bool
	top  uint64
}

func (m *replayModel) accept(c uint64) bool {
	if c >= rejectAfterMessages || m.seen[c] || (c < m.top && m.top-c >= replayWindow) {
		return false
	}
	m.seen[c] = true
	m.top = max(m.top, c)
	return true
}

// TestReplayModel feeds the filter and the model the same streams:
// counters in windows of random size, shuffled, with duplicates, stragglers
// from far behind and jumps ahead.
func TestReplayModel(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, seed*7919))
		var f replayFilter
		m := replayModel{seen: make(map[uint64]bool)}
		base := uint64(0)
		if seed%4 == 0 {
			base = rejectAfterMessages - 3*replayWindow // run into the limit
		}
		accepted := 0
		for round := 0; round < 40; round++ {
			span := 1 + rng.IntN(3*replayWindow)
			stream := make([]uint64, 0, span+span/4)
			for _, p := range rng.Perm(span) {
				stream = append(stream, base+uint64(p))
			}
			for i := 0; i < span/4; i++ { // duplicates and stragglers
				back := uint64(rng.IntN(2 * replayWindow))
				stream = append(stream, stream[rng.IntN(len(stream))]-min(back, base))
			}
			rng.Shuffle(len(stream), func(i, j int) { stream[i], stream[j] = stream[j], stream[i] })
			for i, c := range stream {
				want := m.accept(c)
				if got := f.fresh(c); got != want {
					t.Fatalf("seed %d round %d item %d: fresh(%d) = %v, model says %v", seed, round, i, c, got, want)
				}
				if got := f.accept(c); got != want {
					t.Fatalf("seed %d round %d item %d: accept(%d) = %v, model says %v", seed, round, i, c, got, want)
				}
				if want {
					accepted++
				}
			}
			base += uint64(span) + uint64(rng.IntN(4*replayWindow))
			if base >= rejectAfterMessages {
				break
			}
		}
		if accepted == 0 {
			t.Fatalf("seed %d: nothing accepted; the test is not testing", seed)
		}
	}
}

func TestReplayFilterSize(t *testing.T) {
	if replayWindow < 2048 {
		t.Fatalf("ReplayWindow = %d, want at least 2048", replayWindow)
	}
}
