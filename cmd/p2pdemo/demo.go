package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/gamewire/gamewire/p2p"
	"github.com/gamewire/gamewire/relay"
	"github.com/gamewire/gamewire/rendezvous"
)

const demoSummary = `p2pdemo demo: gamewire end to end in one process, on loopback only, no root,
no flags. It starts a rendezvous server with its embedded TURN relay and two
peers, alice and bob, that know nothing but each other's PeerID; alice
connects to bob, they chat, alice sends messages of every send type that bob
echoes, then a file whose checksum bob verifies; it prints the session state
and exits 0 when everything arrived.`

const demoFileSize = 3<<20 + 12345 // several 1 MiB messages and a partial one

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", demoSummary, stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo: takes no arguments")
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	say := newConsole(stdout, "")
	srv, err := rendezvous.Listen(rendezvous.ServerConfig{TURN: &rendezvous.TURNConfig{
		Secret: "demo", Embed: &relay.ServerConfig{RelayIP: netip.MustParseAddr("127.0.0.1")},
	}}, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, nil)
	if err != nil {
		return err
	}
	defer srv.Close()
	server := fmt.Sprintf("%s@%s", p2p.PeerID(srv.PublicKey()), srv.Addr())
	say.println("server at %s (rendezvous, STUN, TURN)", server)
	dir, err := os.MkdirTemp("", "p2pdemo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := p2p.Config{Rendezvous: server, AppID: "p2pdemo", ListenAddr: "127.0.0.1:0"}
	alice, err := startPeer(ctx, cfg, newConsole(stdout, "[alice] "), dir, false)
	if err != nil {
		return err
	}
	defer alice.close()
	bobDir := filepath.Join(dir, "bob")
	if err := os.Mkdir(bobDir, 0o700); err != nil {
		return err
	}
	bob, err := startPeer(ctx, cfg, newConsole(stdout, "[bob] "), bobDir, true)
	if err != nil {
		return err
	}
	defer bob.close()
	say.println("alice is peer %s", alice.node.PeerID())
	say.println("bob   is peer %s", bob.node.PeerID())
	for _, p := range []*peer{alice, bob} {
		if !p.awaitRegistered(ctx, 10*time.Second) {
			return &exitError{code: 1, msg: "demo: a peer did not register with the server"}
		}
	}
	say.println("both registered with the server")
	return demoSteps(ctx, say, alice, bob, dir)
}

func demoSteps(ctx context.Context, say *console, alice, bob *peer, dir string) error {
	say.println("1. alice sends every send type to bob, who echoes each (the first message starts the session)")
	res := pingRun(ctx, alice, bob.node.PeerID(), 20)
	say.println("%s", res.summary())
	if !res.OK {
		return &exitError{code: 1, msg: "demo: " + res.Error}
	}
	say.println("2. chat: bob sends alice a line on the reliable chat channel")
	bob.mu.Lock()
	bob.current, bob.hasPeer = alice.node.PeerID(), true
	bob.mu.Unlock()
	bob.send([]byte("hello alice, bob here"), p2p.SendReliable, chChat)
	say.println("3. alice pings bob (unreliable)")
	alice.ping()
	say.println("4. alice sends bob a %s file in reliable 1 MiB messages", fmtBytes(demoFileSize))
	path := filepath.Join(dir, "demo.bin")
	data := make([]byte, demoFileSize)
	rand.Read(data)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	if err := alice.sendFile(ctx, bob.node.PeerID(), path); err != nil {
		return &exitError{code: 1, msg: "demo: " + err.Error()}
	}
	say.println("5. alice's view of the session")
	alice.printState()
	st, _ := alice.node.GetP2PSessionState(bob.node.PeerID())
	if !st.ConnectionActive {
		return &exitError{code: 1, msg: "demo: the session is not active"}
	}
	say.println("demo ok: path %v, every send type delivered, file checksum verified", st.Path)
	return nil
}
