package netpacket_test

import (
	"fmt"
	"net"
	"time"

	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/p2p/netpacket"
)

// A host and a client on this machine: the client joins, each side's core
// starts with its id, and they exchange a packet. One goroutine runs both
// frontends' frames, as a test would; a game runs one per process.
func Example() {
	hostNode, _ := p2p.New(p2p.Config{AppID: "example", ListenAddr: "127.0.0.1:0"})
	clientNode, _ := p2p.New(p2p.Config{AppID: "example", ListenAddr: "127.0.0.1:0"})
	defer hostNode.Close()
	defer clientNode.Close()
	// No rendezvous server here: tell the client where the host is.
	clientNode.AddPeerAddr(hostNode.PeerID(), hostNode.LocalAddr().(*net.UDPAddr).AddrPort())

	done := false
	var hostSend, clientSend netpacket.SendFunc
	host, _ := netpacket.NewHost(hostNode, netpacket.Callbacks{
		ProtocolVersion: "mygame 1.0",
		Start: func(id uint16, send netpacket.SendFunc, _ func()) {
			fmt.Println("host started as", id)
			hostSend = send
		},
		Connected: func(id uint16) bool {
			fmt.Println("host: client", id, "connected")
			return true
		},
		Receive: func(data []byte, from uint16) {
			fmt.Printf("host got %q from %d\n", data, from)
			hostSend(netpacket.Reliable|netpacket.FlushHint, []byte("welcome aboard"), from)
		},
	}, netpacket.Config{})
	defer host.Close()
	client, _ := netpacket.Join(clientNode, hostNode.PeerID(), netpacket.Callbacks{
		ProtocolVersion: "mygame 1.0",
		Start: func(id uint16, send netpacket.SendFunc, _ func()) {
			fmt.Println("client started as", id)
			clientSend = send
			clientSend(netpacket.Reliable|netpacket.FlushHint, []byte("hello"), netpacket.HostID)
		},
		Receive: func(data []byte, from uint16) {
			fmt.Printf("client got %q from %d\n", data, from)
			done = true
		},
	}, netpacket.Config{})
	defer client.Close()

	for deadline := time.Now().Add(5 * time.Second); !done && time.Now().Before(deadline); {
		host.Frame()
		if err := client.Frame(); err != nil {
			fmt.Println(err)
			return
		}
		time.Sleep(time.Millisecond) // a frontend runs at its frame rate
	}
	// Output:
	// host started as 0
	// host: client 1 connected
	// client started as 1
	// host got "hello" from 1
	// client got "welcome aboard" from 0
}
