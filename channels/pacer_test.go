package channels

import (
	"math"
	"testing"
	"time"
)

var pacerBase = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func TestPacerFreshBurst(t *testing.T) {
	tests := []struct {
		name      string
		mss       int
		rate      float64
		wantBurst float64
	}{
		{"unset rate: 10 packets", 1200, 0, 12000},
		{"slow rate: 10 packets", 1200, 1e6, 12000}, // 2ms of rate is 2000
		{"fast rate: 2ms of rate", 1200, 1e8, 200000},
		{"boundary", 1000, 5e6, 10000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPacer(tt.mss)
			p.setRate(tt.rate)
			if got := p.maxBurst(); got != tt.wantBurst {
				t.Fatalf("maxBurst = %v, want %v", got, tt.wantBurst)
			}
			if got := p.available(pacerBase); got != tt.wantBurst {
				t.Fatalf("fresh available = %v, want %v", got, tt.wantBurst)
			}
			if tt.rate == 0 {
				return
			}
			// The whole burst goes out at once, then the next packet waits.
			now := pacerBase
			sent := 0
			for !p.nextSend(now).After(now) {
				p.onSent(now, tt.mss)
				sent++
				if sent > 1e6 {
					t.Fatal("pacer never blocks")
				}
			}
			if want := int(tt.wantBurst) / tt.mss; sent != want {
				t.Fatalf("sent %d packets at once, want %d", sent, want)
			}
		})
	}
}

func TestPacerNextSend(t *testing.T) {
	const mss = 1200
	tests := []struct {
		name   string
		rate   float64
		budget float64 // left after draining
		want   time.Duration
	}{
		{"empty, slow", 120000, 0, 10 * time.Millisecond},
		{"empty, exactly the floor", 1.2e6, 0, time.Millisecond},
		{"empty, below the floor", 12e6, 0, minPacingDelay},
		{"half a packet left", 120000, 600, 5 * time.Millisecond},
		{"rounded up to the ns", 7e5, 0, time.Duration(math.Ceil(1200 / 7e5 * 1e9))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPacer(mss)
			p.setRate(tt.rate)
			now := pacerBase
			p.onSent(now, int(p.maxBurst()-tt.budget))
			if got := p.available(now); got != tt.budget {
				t.Fatalf("available %v after spending, want %v", got, tt.budget)
			}
			next := p.nextSend(now)
			if got := next.Sub(now); got != tt.want {
				t.Fatalf("nextSend is now+%v, want now+%v", got, tt.want)
			}
			if next.Sub(now) < minPacingDelay {
				t.Fatalf("wait %v below minPacingDelay", next.Sub(now))
			}
			// At the promised time a full packet is available.
			if a := p.available(next); a < mss {
				t.Fatalf("available %v at nextSend, want >= %d", a, mss)
			}
			if !p.nextSend(next).Equal(next) {
				t.Fatal("nextSend at the promised time still waits")
			}
			// The wait was not longer than needed, unless the floor set it.
			if tt.want > minPacingDelay {
				if a := p.available(next.Add(-time.Microsecond)); a >= mss {
					t.Fatalf("available %v 1µs before nextSend: waited too long", a)
				}
			}
		})
	}
}

func TestPacerRefill(t *testing.T) {
	const mss, rate = 1200, 120000.0 // 120 bytes per ms, burst 12000
	p := newPacer(mss)
	p.setRate(rate)
	p.onSent(pacerBase, 1e9) // overspend: no debt is kept
	if a := p.available(pacerBase); a != 0 {
		t.Fatalf("available %v after overspending, want 0", a)
	}
	for _, d := range []time.Duration{0, time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond, 99 * time.Millisecond} {
		want := rate * d.Seconds()
		if a := p.available(pacerBase.Add(d)); math.Abs(a-want) > 1e-6 {
			t.Fatalf("available %v after %v, want %v", a, d, want)
		}
	}
	for _, d := range []time.Duration{100 * time.Millisecond, time.Second, time.Hour} {
		if a := p.available(pacerBase.Add(d)); a != 12000 {
			t.Fatalf("available %v after %v, want the 12000 cap", a, d)
		}
	}

	// Sending part of the budget keeps the rest, which refills from then.
	p.onSent(pacerBase.Add(50*time.Millisecond), 1000) // 6000 - 1000 left
	if a := p.available(pacerBase.Add(60 * time.Millisecond)); math.Abs(a-6200) > 1e-6 {
		t.Fatalf("available %v, want 5000 + 1200 refilled", a)
	}

	// A higher rate raises the cap.
	p.setRate(1e8)
	if a := p.available(pacerBase.Add(time.Hour)); a != 200000 {
		t.Fatalf("available %v at 1e8 B/s, want 200000", a)
	}
}

func TestPacerZeroRateNeverPaces(t *testing.T) {
	p := newPacer(1200)
	now := pacerBase
	for i := range 1000 {
		if next := p.nextSend(now); !next.Equal(now) {
			t.Fatalf("packet %d: nextSend now+%v with rate 0", i, next.Sub(now))
		}
		p.onSent(now, 1200)
	}
	if a := p.available(now); a != 0 {
		t.Fatalf("available %v, budget should be spent", a)
	}
	p.setRate(-1)
	if next := p.nextSend(now); !next.Equal(now) {
		t.Fatal("negative rate paces")
	}
}

// TestPacerLongRunRate sends whenever allowed and checks the achieved rate:
// at most rate plus one burst, and not much less even when the 1 ms floor
// batches packets.
func TestPacerLongRunRate(t *testing.T) {
	const mss = 1200
	for _, rate := range []float64{60000, 1.2e6, 4.8e6, 5e7} {
		p := newPacer(mss)
		p.setRate(rate)
		now := pacerBase
		end := pacerBase.Add(10 * time.Second)
		bytes := 0
		for {
			if next := p.nextSend(now); next.After(now) {
				if next.Sub(now) < minPacingDelay {
					t.Fatalf("rate %v: wait %v below the floor", rate, next.Sub(now))
				}
				now = next
			}
			if now.After(end) {
				break
			}
			p.onSent(now, mss)
			bytes += mss
		}
		maxBytes := rate*10 + p.maxBurst()
		if float64(bytes) > maxBytes {
			t.Errorf("rate %v: sent %d bytes in 10s, over the allowed %v", rate, bytes, maxBytes)
		}
		if float64(bytes) < 0.98*rate*10 {
			t.Errorf("rate %v: sent %d bytes in 10s, under 98%% of the rate", rate, bytes)
		}
	}
}
