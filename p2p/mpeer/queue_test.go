package mpeer

import (
	"strconv"
	"testing"
)

// TestPacketQueue: GetPacket returns packets in order, and a queue the
// game reads but never empties is compacted rather than grown.
func TestPacketQueue(t *testing.T) {
	var p Peer
	sent, read := 0, 0
	get := func() {
		t.Helper()
		if p.GetPacketPeer() != 2 {
			t.Fatal("next packet's peer")
		}
		data, err := p.GetPacket()
		if err != nil || string(data) != strconv.Itoa(read) {
			t.Fatalf("got %q, %v; want packet %d", data, err, read)
		}
		read++
	}
	for round := range 20 {
		for range 1000 {
			p.deliver(packet{data: []byte(strconv.Itoa(sent)), from: 2})
			sent++
		}
		for range 900 { // 100 more left waiting each round
			get()
		}
		if waiting := p.GetAvailablePacketCount(); waiting != 100*(round+1) || cap(p.in) > 4*waiting+4096 {
			t.Fatalf("round %d: %d waiting in a queue of capacity %d", round, waiting, cap(p.in))
		}
	}
	for p.GetAvailablePacketCount() > 0 {
		get()
	}
	if read != sent || p.inBytes != 0 || p.stats.PacketsReceived != uint64(sent) {
		t.Fatalf("read %d of %d, inBytes %d, received %d", read, sent, p.inBytes, p.stats.PacketsReceived)
	}
}
