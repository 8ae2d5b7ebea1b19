package channels

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

const msec = time.Millisecond

func TestRTTNewStats(t *testing.T) {
	r := newRTTStats(333 * msec)
	if r.hasSample {
		t.Fatal("fresh stats claim a sample")
	}
	if r.smoothed != 333*msec || r.variance != 166500*time.Microsecond {
		t.Fatalf("smoothed %v variance %v, want 333ms 166.5ms", r.smoothed, r.variance)
	}
	// RFC 9002 §6.2.1 with the initial RTT: 333 + 4*166.5 + 25.
	if got, want := r.pto(25*msec), 1024*msec; got != want {
		t.Fatalf("pto %v, want %v", got, want)
	}
}

func TestRTTFirstSample(t *testing.T) {
	tests := []struct {
		name                      string
		latest, ackDelay, maxAck  time.Duration
		wantLatest, wantSmoothed  time.Duration
		wantVariance, wantMinimum time.Duration
	}{
		// The first sample ignores ack delay (RFC 9002 §5.3).
		{"plain", 100 * msec, 0, 25 * msec, 100 * msec, 100 * msec, 50 * msec, 100 * msec},
		{"ack delay ignored", 100 * msec, 20 * msec, 25 * msec, 100 * msec, 100 * msec, 50 * msec, 100 * msec},
		{"zero is 1us", 0, 0, 25 * msec, time.Microsecond, time.Microsecond, 500, time.Microsecond},
		{"negative is 1us", -5 * msec, 0, 25 * msec, time.Microsecond, time.Microsecond, 500, time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRTTStats(333 * msec)
			r.update(tt.latest, tt.ackDelay, tt.maxAck)
			if !r.hasSample {
				t.Fatal("hasSample not set")
			}
			if r.latest != tt.wantLatest || r.smoothed != tt.wantSmoothed ||
				r.variance != tt.wantVariance || r.min != tt.wantMinimum {
				t.Fatalf("latest %v smoothed %v variance %v min %v, want %v %v %v %v",
					r.latest, r.smoothed, r.variance, r.min,
					tt.wantLatest, tt.wantSmoothed, tt.wantVariance, tt.wantMinimum)
			}
			if r.jitter != 0 {
				t.Fatalf("jitter %v after one sample, want 0", r.jitter)
			}
		})
	}
}

// TestRTTEWMA checks hand-computed values of the RFC 9002 §5.3 estimators:
// the variance uses the smoothed RTT from before this sample.
func TestRTTEWMA(t *testing.T) {
	type want struct{ smoothed, variance, min, jitter time.Duration }
	samples := []struct {
		latest time.Duration
		want   want
	}{
		{100 * msec, want{100 * msec, 50 * msec, 100 * msec, 0}},
		// var = (3*50 + |100-140|)/4, srtt = (7*100 + 140)/8, jitter = 40/16.
		{140 * msec, want{105 * msec, 47500 * time.Microsecond, 100 * msec, 2500 * time.Microsecond}},
		// var = (3*47.5 + |105-60|)/4, srtt = (7*105 + 60)/8,
		// jitter = 2.5 + (80-2.5)/16.
		{60 * msec, want{99375 * time.Microsecond, 46875 * time.Microsecond, 60 * msec, 7343750}},
	}
	r := newRTTStats(333 * msec)
	for i, s := range samples {
		r.update(s.latest, 0, 25*msec)
		got := want{r.smoothed, r.variance, r.min, r.jitter}
		if got != s.want {
			t.Fatalf("sample %d (%v): got %+v, want %+v", i, s.latest, got, s.want)
		}
	}
}

func TestRTTAckDelay(t *testing.T) {
	// Each case follows a first sample of 100ms (min 100ms, var 50ms).
	tests := []struct {
		name                       string
		latest, ackDelay, maxAck   time.Duration
		wantSmoothed, wantVariance time.Duration
	}{
		{"subtracted", 130 * msec, 20 * msec, 25 * msec, 101250 * time.Microsecond, 40 * msec},
		{"capped at maxAckDelay", 130 * msec, 40 * msec, 25 * msec, 100625 * time.Microsecond, 38750 * time.Microsecond},
		// Uncapped, 128 < 100+40 would skip the subtraction; capped it applies.
		{"cap applies before the min check", 128 * msec, 40 * msec, 25 * msec, 100375 * time.Microsecond, 38250 * time.Microsecond},
		{"not below min", 115 * msec, 20 * msec, 25 * msec, 101875 * time.Microsecond, 41250 * time.Microsecond},
		{"boundary latest == min+delay", 120 * msec, 20 * msec, 25 * msec, 100 * msec, 37500 * time.Microsecond},
		{"zero maxAckDelay disables", 130 * msec, 20 * msec, 0, 103750 * time.Microsecond, 45 * msec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRTTStats(333 * msec)
			r.update(100*msec, 0, tt.maxAck)
			r.update(tt.latest, tt.ackDelay, tt.maxAck)
			if r.smoothed != tt.wantSmoothed || r.variance != tt.wantVariance {
				t.Fatalf("smoothed %v variance %v, want %v %v", r.smoothed, r.variance, tt.wantSmoothed, tt.wantVariance)
			}
			if r.latest != tt.latest {
				t.Fatalf("latest %v, want the raw sample %v", r.latest, tt.latest)
			}
			if r.min != 100*msec {
				t.Fatalf("min %v, want 100ms", r.min)
			}
		})
	}
}

func TestRTTMinNeverIncreases(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	r := newRTTStats(333 * msec)
	want := time.Duration(math.MaxInt64)
	for i := range 2000 {
		latest := time.Duration(rng.Int64N(int64(300*msec))) + msec
		// Min uses the raw sample, never one reduced by the ack delay.
		r.update(latest, time.Duration(rng.Int64N(int64(50*msec))), 25*msec)
		want = min(want, latest)
		if r.min != want {
			t.Fatalf("sample %d (%v): min %v, want %v", i, latest, r.min, want)
		}
	}
	r.update(0, 0, 25*msec)
	if r.min != time.Microsecond || r.latest != time.Microsecond {
		t.Fatalf("after a zero sample: min %v latest %v, want 1µs", r.min, r.latest)
	}
}

// TestRTTMatchesReference compares against a float model of RFC 9002 §5.3
// and RFC 3550 jitter over random samples.
func TestRTTMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const maxAck = 25 * msec
	r := newRTTStats(333 * msec)
	var srtt, rttvar, minRTT, jitter, prev float64
	for i := range 5000 {
		latest := time.Duration(rng.Int64N(int64(200*msec))) + 10*msec
		ackDelay := time.Duration(rng.Int64N(int64(40 * msec)))
		r.update(latest, ackDelay, maxAck)

		l := float64(latest)
		if i == 0 {
			srtt, rttvar, minRTT = l, l/2, l
		} else {
			minRTT = math.Min(minRTT, l)
			d := math.Min(float64(ackDelay), float64(maxAck))
			adj := l
			if l >= minRTT+d {
				adj = l - d
			}
			rttvar = 0.75*rttvar + 0.25*math.Abs(srtt-adj)
			srtt = 0.875*srtt + 0.125*adj
			jitter += (math.Abs(l-prev) - jitter) / 16
		}
		prev = l
		// Integer truncation loses under 1ns a step; the EWMAs bound the sum.
		const tol = 100
		if math.Abs(float64(r.smoothed)-srtt) > tol || math.Abs(float64(r.variance)-rttvar) > tol ||
			math.Abs(float64(r.jitter)-jitter) > tol || float64(r.min) != minRTT {
			t.Fatalf("sample %d: got srtt %v var %v jitter %v min %v, want %v %v %v %v", i,
				r.smoothed, r.variance, r.jitter, r.min,
				time.Duration(srtt), time.Duration(rttvar), time.Duration(jitter), time.Duration(minRTT))
		}
	}
}

func TestRTTJitter(t *testing.T) {
	tests := []struct {
		name    string
		samples []time.Duration
		delays  []time.Duration
		want    time.Duration
	}{
		{"constant", []time.Duration{100 * msec, 100 * msec, 100 * msec}, nil, 0},
		{"one step", []time.Duration{100 * msec, 140 * msec}, nil, 2500 * time.Microsecond},
		// Uses the raw sample, not the one adjusted for ack delay (110ms).
		{"ack delay ignored", []time.Duration{100 * msec, 140 * msec}, []time.Duration{0, 30 * msec}, 2500 * time.Microsecond},
		// Against the previous sample (140), not the smoothed RTT (105).
		{"successive samples", []time.Duration{100 * msec, 140 * msec, 140 * msec}, nil, 2343750},
		{"down step", []time.Duration{140 * msec, 100 * msec}, nil, 2500 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRTTStats(333 * msec)
			for i, s := range tt.samples {
				var d time.Duration
				if tt.delays != nil {
					d = tt.delays[i]
				}
				r.update(s, d, 25*msec)
			}
			if r.jitter != tt.want {
				t.Fatalf("jitter %v, want %v", r.jitter, tt.want)
			}
		})
	}

	t.Run("decays", func(t *testing.T) {
		r := newRTTStats(333 * msec)
		r.update(100*msec, 0, 0)
		r.update(200*msec, 0, 0)
		last := r.jitter
		for range 100 {
			r.update(200*msec, 0, 0)
			if r.jitter >= last {
				t.Fatalf("jitter %v did not decay from %v on a steady RTT", r.jitter, last)
			}
			last = r.jitter
		}
		if last > 100*time.Microsecond {
			t.Fatalf("jitter %v after 100 steady samples, want near 0", last)
		}
	})
}

func TestRTTPTO(t *testing.T) {
	tests := []struct {
		name               string
		smoothed, variance time.Duration
		maxAck             time.Duration
		want               time.Duration
	}{
		{"variance term", 50 * msec, 10 * msec, 25 * msec, 115 * msec},
		{"granularity floor", 50 * msec, 100 * time.Microsecond, 25 * msec, 76 * msec},
		{"floor boundary", 50 * msec, 250 * time.Microsecond, 25 * msec, 76 * msec},
		{"just above floor", 50 * msec, 251 * time.Microsecond, 25 * msec, 50*msec + 4*251*time.Microsecond + 25*msec},
		{"no ack delay", 50 * msec, 10 * msec, 0, 90 * msec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rttStats{smoothed: tt.smoothed, variance: tt.variance, hasSample: true}
			if got := r.pto(tt.maxAck); got != tt.want {
				t.Fatalf("pto = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRTTLossDelay(t *testing.T) {
	tests := []struct {
		name             string
		latest, smoothed time.Duration
		steps            int
		want             time.Duration
	}{
		{"latest larger", 100 * msec, 80 * msec, 1, 112500 * time.Microsecond},
		{"smoothed larger", 80 * msec, 100 * msec, 1, 112500 * time.Microsecond},
		{"no margin", 100 * msec, 80 * msec, 0, 100 * msec},
		{"widened to 2 RTT", 100 * msec, 80 * msec, 8, 200 * msec},
		{"granularity floor", 500 * time.Microsecond, 400 * time.Microsecond, 1, msec},
		{"just above floor", 900 * time.Microsecond, 400 * time.Microsecond, 1, 1012500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rttStats{latest: tt.latest, smoothed: tt.smoothed, hasSample: true}
			if got := r.lossDelay(tt.steps); got != tt.want {
				t.Fatalf("lossDelay(%d) = %v, want %v", tt.steps, got, tt.want)
			}
		})
	}
}
