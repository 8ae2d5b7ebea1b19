package mpeer_test

import (
	"errors"
	"testing"

	"github.com/gamewire/gamewire/internal/leakcheck"
	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/p2p/mpeer"
)

// TestPeerAPI: the defaults and the argument checks that need no network.
func TestPeerAPI(t *testing.T) {
	leakcheck.Check(t)
	node := newNode(t, nil)
	var p mpeer.Peer
	if p.GetTransferMode() != mpeer.Reliable || p.GetTransferChannel() != 0 || p.GetMaxPacketSize() != mpeer.MaxReliablePacketSize {
		t.Fatalf("defaults: %v, channel %d, max %d", p.GetTransferMode(), p.GetTransferChannel(), p.GetMaxPacketSize())
	}
	if p.GetUniqueID() != 0 || p.IsServer() || p.IsServerRelaySupported() || p.IsRefusingNewConnections() {
		t.Fatal("zero Peer claims a role")
	}
	for _, ch := range []int{-1, 256} {
		if err := p.SetTransferChannel(ch); !errors.Is(err, mpeer.ErrInvalidChannel) {
			t.Errorf("channel %d: %v", ch, err)
		}
	}
	if err := p.SetTransferChannel(255); err != nil || p.GetTransferChannel() != 255 {
		t.Errorf("channel 255: %v", err)
	}
	for _, m := range []mpeer.TransferMode{-1, 3} {
		if err := p.SetTransferMode(m); !errors.Is(err, mpeer.ErrInvalidMode) {
			t.Errorf("mode %d: %v", m, err)
		}
	}
	if err := p.SetTransferMode(mpeer.Unreliable); err != nil || p.GetMaxPacketSize() != mpeer.MaxUnreliablePacketSize {
		t.Errorf("Unreliable: %v, max %d", err, p.GetMaxPacketSize())
	}
	if _, err := p.GetPacket(); !errors.Is(err, mpeer.ErrNoPacket) {
		t.Errorf("GetPacket on nothing: %v", err)
	}
	if p.GetPacketPeer() != 0 || p.GetPacketChannel() != 0 || p.GetPacketMode() != mpeer.Reliable || p.GetAvailablePacketCount() != 0 {
		t.Error("next packet of nothing")
	}
	if err := p.DisconnectPeer(2, false); !errors.Is(err, mpeer.ErrNotConnected) {
		t.Errorf("DisconnectPeer when Disconnected: %v", err)
	}
	if err := p.CreateServer(nil, mpeer.Config{}); !errors.Is(err, mpeer.ErrNilNode) {
		t.Errorf("nil node: %v", err)
	}
	if err := p.CreateServer(node, mpeer.Config{MaxClients: -1}); !errors.Is(err, mpeer.ErrInvalidConfig) {
		t.Errorf("negative MaxClients: %v", err)
	}
	if err := p.CreateMesh(node, 0, mpeer.Config{}); !errors.Is(err, mpeer.ErrInvalidID) {
		t.Errorf("mesh id 0: %v", err)
	}
	if err := p.CreateClient(node, node.PeerID(), mpeer.Config{}); !errors.Is(err, p2p.ErrSelf) || p.GetConnectionStatus() != mpeer.Disconnected {
		t.Errorf("client of itself: %v, %v", err, p.GetConnectionStatus())
	}
	if err := p.CreateServer(node, mpeer.Config{}); err != nil {
		t.Fatal(err)
	}
	if err := p.AddMeshPeer(5, p2p.PeerID{1}); !errors.Is(err, mpeer.ErrWrongMode) {
		t.Errorf("AddMeshPeer on a server: %v", err)
	}
	if err := p.CreateMesh(node, 3, mpeer.Config{}); !errors.Is(err, mpeer.ErrAlreadyActive) {
		t.Errorf("CreateMesh on a server: %v", err)
	}
	if err := p.PutPacket(nil); err != nil {
		t.Errorf("server broadcast to nobody: %v", err)
	}
	p.Close()
	p.Close()
	if p.GetConnectionStatus() != mpeer.Disconnected || p.GetUniqueID() != 0 {
		t.Error("after Close")
	}
	if err := p.CreateMesh(node, 3, mpeer.Config{}); err != nil {
		t.Fatalf("reuse after Close: %v", err)
	}
	if err := p.AddMeshPeer(3, p2p.PeerID{1}); !errors.Is(err, mpeer.ErrInvalidID) {
		t.Errorf("mesh peer with our own id: %v", err)
	}
	if err := p.AddMeshPeer(4, node.PeerID()); !errors.Is(err, p2p.ErrSelf) {
		t.Errorf("mesh peer on our own node: %v", err)
	}
	for i := 2; i < 1000; i++ {
		if id := mpeer.GenerateUniqueID(); id < 2 {
			t.Fatalf("GenerateUniqueID gave %d", id)
		}
	}
}

// TestConcurrentUse: one goroutine polls and reads while another sends,
// as a game with a network thread might; the race detector checks the
// Peer's locking against itself and the node's goroutines.
func TestConcurrentUse(t *testing.T) {
	leakcheck.Check(t)
	srv, cls := startServerGame(t, 1)
	cl := cls[0]
	const n = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			if err := cl.peer.PutPacket([]byte{byte(i)}); err != nil {
				t.Error(err)
				return
			}
			cl.peer.GetTransferMode()
			cl.peer.GetConnectionStatus()
		}
	}()
	received := 0
	waitFor(t, "every packet", []*player{srv}, func() bool {
		cl.peer.Poll()
		received = len(srv.got)
		return received == n
	})
	<-done
	for i, g := range srv.got {
		if g.data != string([]byte{byte(i)}) || g.from != cl.id() {
			t.Fatalf("packet %d: %+v", i, g)
		}
	}
}

// BenchmarkPollIdle: the cost of a Poll with nothing to do, which reads
// every reserved channel once.
func BenchmarkPollIdle(b *testing.B) {
	n, err := p2p.New(p2p.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	var p mpeer.Peer
	if err := p.CreateServer(n, mpeer.Config{}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Poll()
	}
}
