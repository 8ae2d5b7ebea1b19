package mpeer_test

import (
	"fmt"
	"net"
	"time"

	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/p2p/mpeer"
)

// A server and a client on this machine, as a Godot game would run them:
// create, poll every frame, read events and packets.
func Example() {
	serverNode, _ := p2p.New(p2p.Config{AppID: "example", ListenAddr: "127.0.0.1:0"})
	clientNode, _ := p2p.New(p2p.Config{AppID: "example", ListenAddr: "127.0.0.1:0"})
	defer serverNode.Close()
	defer clientNode.Close()
	// No rendezvous server here: the client's node learns where the
	// server's is.
	clientNode.AddPeerAddr(serverNode.PeerID(), serverNode.LocalAddr().(*net.UDPAddr).AddrPort())

	var server, client mpeer.Peer
	server.CreateServer(serverNode, mpeer.Config{MaxClients: 8})
	client.CreateClient(clientNode, serverNode.PeerID(), mpeer.Config{})
	defer server.Close()
	defer client.Close()
	fmt.Println("client:", client.GetConnectionStatus())

	// The game loop: poll both until the exchange is done.
	deadline := time.Now().Add(5 * time.Second)
	for done := false; !done && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		server.Poll()
		client.Poll()
		for _, e := range server.Events() {
			if e.Kind == mpeer.PeerConnected && e.Peer == client.GetUniqueID() {
				fmt.Println("server: a client connected")
				server.SetTargetPeer(e.Peer)
				server.PutPacket([]byte("welcome"))
			}
		}
		for _, e := range client.Events() {
			fmt.Println("client:", e.Kind, "peer", e.Peer, "status", client.GetConnectionStatus())
		}
		for client.GetAvailablePacketCount() > 0 {
			from, mode := client.GetPacketPeer(), client.GetPacketMode()
			data, _ := client.GetPacket()
			fmt.Printf("client got %q from %d (%v)\n", data, from, mode)
			client.SetTargetPeer(mpeer.TargetPeerServer)
			client.SetTransferMode(mpeer.UnreliableOrdered)
			client.SetTransferChannel(3)
			client.PutPacket([]byte("thanks"))
		}
		for server.GetAvailablePacketCount() > 0 {
			fromClient := server.GetPacketPeer() == client.GetUniqueID()
			ch, mode := server.GetPacketChannel(), server.GetPacketMode()
			data, _ := server.GetPacket()
			fmt.Printf("server got %q from the client: %v, channel %d (%v)\n", data, fromClient, ch, mode)
			done = true
		}
	}
	// Output:
	// client: Connecting
	// server: a client connected
	// client: PeerConnected peer 1 status Connected
	// client got "welcome" from 1 (Reliable)
	// server got "thanks" from the client: true, channel 3 (UnreliableOrdered)
}
