package p2p_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/gamewire/gamewire/channels"
	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/rendezvous"
)

// Two Nodes on this machine exchange packets with every send type.
func Example() {
	alice, _ := p2p.New(p2p.Config{AppID: "example", ListenAddr: "127.0.0.1:0"})
	bob, _ := p2p.New(p2p.Config{AppID: "example", ListenAddr: "127.0.0.1:0"})
	defer alice.Close()
	defer bob.Close()
	// No rendezvous server here: tell each where the other is.
	alice.AddPeerAddr(bob.PeerID(), addrPort(bob))
	bob.AddPeerAddr(alice.PeerID(), addrPort(alice))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// Alice opens the session; Bob accepts when asked.
	alice.SendP2PPacket(bob.PeerID(), []byte("hello"), p2p.SendReliable, 0)
	if e := <-bob.Events(); e == (p2p.SessionRequest{Peer: alice.PeerID()}) {
		bob.AcceptP2PSessionWithUser(alice.PeerID())
	}
	p, _ := bob.Receive(ctx, 0)
	fmt.Printf("bob got %q\n", p.Data)
	bob.SendP2PPacket(alice.PeerID(), []byte("welcome"), p2p.SendReliable, 0)
	p, _ = alice.Receive(ctx, 0)
	fmt.Printf("alice got %q\n", p.Data)

	// Alice has heard from Bob, so her session is active: every send type
	// works now, each on its own channel. (Before that, UnreliableNoDelay
	// packets are dropped, as in Steam.)
	alice.SendP2PPacket(bob.PeerID(), []byte("position"), p2p.SendUnreliable, 1)
	alice.SendP2PPacket(bob.PeerID(), []byte("voice"), p2p.SendUnreliableNoDelay, 2)
	alice.SendP2PPacket(bob.PeerID(), []byte("chat"), p2p.SendReliableWithBuffering, 3)
	alice.SendP2PPacket(bob.PeerID(), []byte("move"), p2p.SendReliable, 4)
	alice.Send(bob.PeerID(), []byte("state"), channels.Unreliable, 5) // sequenced, beyond Steam
	for ch := 1; ch <= 5; ch++ {
		p, _ := bob.Receive(ctx, ch)
		fmt.Printf("channel %d: %q\n", ch, p.Data)
	}
	bob.SendP2PPacket(alice.PeerID(), []byte("bye"), p2p.SendReliable, 0)
	p, _ = alice.Receive(ctx, 0)
	fmt.Printf("alice got %q\n", p.Data)
	// Output:
	// bob got "hello"
	// alice got "welcome"
	// channel 1: "position"
	// channel 2: "voice"
	// channel 3: "chat"
	// channel 4: "move"
	// channel 5: "state"
	// alice got "bye"
}

func addrPort(n *p2p.Node) netip.AddrPort {
	return n.LocalAddr().(*net.UDPAddr).AddrPort()
}

// A node learns its NAT type from the rendezvous server. Here both are on
// loopback, so the server sees the node's own address: no NAT, Open.
func ExampleNode_NATType() {
	srv, err := rendezvous.Listen(rendezvous.ServerConfig{}, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	n, _ := p2p.New(p2p.Config{ListenAddr: "127.0.0.1:0", Rendezvous: srv.Addr().String()})
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.WaitRegistered(ctx)
	for n.NATType().Type == p2p.NATTypeUnknown && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	r := n.NATType()
	fmt.Println(r.Type, r.NoNAT, r.PortMapping.Valid())
	// Output: Open true false
}
