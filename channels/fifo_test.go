package channels

import (
	"math/rand/v2"
	"testing"
)

func TestFIFO(t *testing.T) {
	var q fifo[int]
	var model []int
	rng := rand.New(rand.NewPCG(3, 4))
	next := 0
	for step := range 200000 {
		// Phases of growth and of draining, so both compaction and the
		// release of a large array happen.
		push := rng.IntN(100) < 60
		if (step/5000)%2 == 1 {
			push = rng.IntN(100) < 35
		}
		if push || len(model) == 0 {
			q.push(next)
			model = append(model, next)
			next++
		} else {
			if got := q.peek(); got != model[0] {
				t.Fatalf("step %d: peek %d, want %d", step, got, model[0])
			}
			if got := q.pop(); got != model[0] {
				t.Fatalf("step %d: pop %d, want %d", step, got, model[0])
			}
			model = model[1:]
		}
		if q.len() != len(model) {
			t.Fatalf("step %d: len %d, want %d", step, q.len(), len(model))
		}
		if q.len() == 0 && cap(q.buf) > fifoKeepCap {
			t.Fatalf("empty queue keeps %d entries of array", cap(q.buf))
		}
	}
}

func TestFIFOSteadyStateDoesNotAllocate(t *testing.T) {
	var q fifo[*int]
	v := new(int)
	allocs := testing.AllocsPerRun(1000, func() {
		for range 20 {
			q.push(v)
		}
		for range 20 {
			q.pop()
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per fill and drain", allocs)
	}
}
