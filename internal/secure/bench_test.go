package secure

import (
	"fmt"
	"testing"
)

var benchSizes = []int{64, 1200}

func BenchmarkSeal(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			kp, _ := keypairPair(b)
			buf := make([]byte, DataHeaderLen+n+TagLen)
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := kp.Seal(buf, n, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen opens pre-sealed packets. Open decrypts in place, so each
// iteration first copies a packet into the work buffer (a memmove of the
// packet size, small next to the AEAD); the receiver's window is reset
// when the batch wraps around.
func BenchmarkOpen(b *testing.B) {
	const batch = 1024
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tx, rx := keypairPair(b)
			pkts := make([][]byte, batch)
			for i := range pkts {
				pkts[i] = sealBytes(b, tx, make([]byte, n), 0)
			}
			work := make([]byte, DataHeaderLen+n+TagLen)
			b.ReportAllocs()
			b.SetBytes(int64(n))
			i := 0
			for b.Loop() {
				if i == batch {
					i = 0
					rx.replay = replayFilter{}
				}
				copy(work, pkts[i])
				i++
				if _, _, err := rx.Open(work); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHandshake is one complete handshake: Initiate, the responder's
// mac1 check, ConsumeInitiation and Respond, then ConsumeResponse.
func BenchmarkHandshake(b *testing.B) {
	alice, bob := newNode(b), newNode(b)
	ipay, rpay := make([]byte, InitiationPayloadLen), make([]byte, ResponsePayloadLen)
	b.ReportAllocs()
	for b.Loop() {
		in, err := alice.Initiate(bob.PublicKey(), 1, ipay)
		if err != nil {
			b.Fatal(err)
		}
		msg := in.Message()
		if !bob.CheckMAC1(msg) {
			b.Fatal("mac1")
		}
		inc, err := bob.ConsumeInitiation(msg)
		if err != nil {
			b.Fatal(err)
		}
		resp, _, err := inc.Respond(2, rpay)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := in.ConsumeResponse(resp); err != nil {
			b.Fatal(err)
		}
	}
}
