package channels_test

import (
	"fmt"
	"sync"

	"github.com/gamewire/gamewire/channels"
)

// pipe is a Link that hands datagrams to another Conn through a goroutine,
// standing in for a UDP socket.
type pipe struct {
	ch chan []byte
}

func (p pipe) SendDatagrams(dgrams [][]byte) error {
	for _, d := range dgrams {
		p.ch <- append([]byte(nil), d...)
	}
	return nil
}

// feed hands everything arriving on p to c until p is closed.
func (p pipe) feed(c *channels.Conn, wg *sync.WaitGroup) {
	defer wg.Done()
	for d := range p.ch {
		c.HandleDatagram(d)
	}
}

func Example() {
	toB, toA := pipe{make(chan []byte, 64)}, pipe{make(chan []byte, 64)}
	var mu sync.Mutex
	got := map[uint16]string{}
	var delivered sync.WaitGroup
	delivered.Add(3)
	a, _ := channels.New(toB, channels.Config{})
	b, _ := channels.New(toA, channels.Config{
		Deliver: func(m channels.Message) {
			mu.Lock()
			got[m.Channel] = fmt.Sprintf("%v %q", m.Flags, m.Data)
			mu.Unlock()
			delivered.Done()
		},
	})
	var feeders sync.WaitGroup
	feeders.Add(2)
	go toB.feed(b, &feeders)
	go toA.feed(a, &feeders)

	a.Send(0, []byte("hello"), channels.Reliable)                  // may wait NagleDelay for company
	a.Send(1, []byte("x=3 y=7"), channels.Unreliable)              // sequenced: never after a newer one
	a.Send(2, []byte("bye"), channels.Reliable|channels.FlushHint) // sends all three now
	delivered.Wait()
	for ch := range uint16(3) {
		fmt.Printf("channel %d: %s\n", ch, got[ch])
	}

	a.Close() // tells b
	b.Close()
	close(toB.ch)
	close(toA.ch)
	feeders.Wait()
	// Output:
	// channel 0: Reliable "hello"
	// channel 1: Unreliable "x=3 y=7"
	// channel 2: Reliable "bye"
}
