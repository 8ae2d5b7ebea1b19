package p2p_test

import (
	"fmt"
	"log"
	"time"

	"github.com/gamewire/gamewire/p2p"
)

// Nodes of one game on one network find each other with no server: a LAN
// lobby.
func ExampleNode_LANPeers() {
	node, err := p2p.New(p2p.Config{
		AppID:        "example",
		LANDiscovery: true,
		OnLANPeerFound: func(f p2p.LANPeerFound) {
			fmt.Println("on the LAN:", f.Peer, "at", f.Addr)
		},
		OnSessionRequest: func(p p2p.PeerID) {
			// A lobby would check p against its members first.
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()

	// The game loop: events reach the callbacks here.
	for range 3 {
		node.RunCallbacks()
		time.Sleep(time.Second)
	}
	// Everyone heard in the last 10 s. Sending opens a session straight
	// to the peer's address; the peer accepts it as any other.
	for _, p := range node.LANPeers() {
		node.SendP2PPacket(p.Peer, []byte("join?"), p2p.SendReliable, 0)
	}
}
