package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gamewire/gamewire/relay"
)

// bin is the p2pdemo binary the tests run, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "p2pdemo-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "p2pdemo")
	out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building p2pdemo: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestDemo runs the README's command: exit 0, a direct session, every
// send type delivered, the file's checksum verified.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "demo").CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"path direct",
		"Unreliable                 20/20 delivered",
		"UnreliableNoDelay          20/20 delivered",
		"Reliable                   20/20 delivered",
		"ReliableWithBuffering      20/20 delivered",
		"[alice] bbbbbbbb: hello alice, bob here",
		"[alice] pong from",
		"checksum ok at the other end",
		"demo ok: path direct",
	} {
		want = strings.Replace(want, "bbbbbbbb", peerOf(t, string(out), "bob"), 1)
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// peerOf finds "NAME is peer ID" (padded) in the demo's output and
// returns the ID's first 8 characters.
func peerOf(t *testing.T, out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == name && f[2] == "peer" {
			return f[3][:8]
		}
	}
	t.Fatalf("no %q peer line in:\n%s", name, out)
	return ""
}

// TestHelpExplainsEveryFlag: -h on each command exits 0 and prints each
// of its flags with a description.
func TestHelpExplainsEveryFlag(t *testing.T) {
	flags := map[string][]string{
		"server": {"listen", "listen2", "relay-ip", "relay-ports", "relay-allow", "relay-max-per-ip", "turn-secret", "turn-secret-file", "external-turn", "identity", "status"},
		"peer":   {"server", "identity", "app", "listen", "no-relay", "echo", "ping", "count", "json", "timeout", "recv-dir"},
		"demo":   {},
		"lab":    {"count"},
	}
	for cmd, names := range flags {
		out, err := exec.Command(bin, cmd, "-h").CombinedOutput()
		if err != nil {
			t.Errorf("%s -h: %v", cmd, err)
		}
		if !strings.Contains(string(out), "p2pdemo "+cmd) {
			t.Errorf("%s -h does not describe the command:\n%s", cmd, out)
		}
		for _, f := range names {
			if !strings.Contains(string(out), "  -"+f) {
				t.Errorf("%s -h does not explain -%s", cmd, f)
			}
		}
	}
	if out, err := exec.Command(bin, "nonsense").CombinedOutput(); err == nil || !strings.Contains(string(out), "unknown command") {
		t.Errorf("unknown command: err %v, output %s", err, out)
	}
}

// proc is a p2pdemo process whose output lines are collected.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		p.cmd.Wait()
	})
	return p
}

// wait returns the first line containing s, failing after 20 s.
func (p *proc) wait(s string) string {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		for _, l := range p.lines {
			if strings.Contains(l, s) {
				p.mu.Unlock()
				return l
			}
		}
		p.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	p.t.Fatalf("no line with %q in:\n%s", s, p.output())
	return ""
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

func (p *proc) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatal(err)
	}
}

// exit waits for the process and returns its exit code.
func (p *proc) exit() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("still running:\n%s", p.output())
	}
	p.cmd.Wait()
	return p.cmd.ProcessState.ExitCode()
}

// startDemoServer runs "p2pdemo server" on loopback and returns it and
// the --server argument peers take.
func startDemoServer(t *testing.T) (*proc, string) {
	srv := start(t, "server", "--listen", "127.0.0.1:0", "--status", "100ms")
	line := srv.wait("peers connect with: p2pdemo peer --server ")
	return srv, strings.TrimPrefix(line, "peers connect with: p2pdemo peer --server ")
}

// TestServerEchoPing: the server on loopback, an echo peer and a --ping
// peer: the ping run connects directly, every reliable message comes back,
// the JSON summary says so, and the server's status line counts the
// peers; SIGINT stops the server cleanly.
func TestServerEchoPing(t *testing.T) {
	srv, server := startDemoServer(t)
	srv.wait("ports to open:")
	echo := start(t, "peer", "--server", server, "--echo")
	id := strings.TrimPrefix(echo.wait("peer "), "peer ")
	echo.wait("registered with the rendezvous server")
	ping := start(t, "peer", "--server", server, "--ping", id, "--count", "5", "--json")
	if code := ping.exit(); code != 0 {
		t.Fatalf("ping exit %d:\n%s", code, ping.output())
	}
	var res pingResult
	if err := json.Unmarshal([]byte(ping.wait("{")), &res); err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Path != "direct" || res.Delivered["Reliable"] != 5 || res.Delivered["ReliableWithBuffering"] != 5 {
		t.Errorf("summary %+v", res)
	}
	srv.wait("2 peers registered")
	srv.cmd.Process.Signal(os.Interrupt)
	if code := srv.exit(); code != 0 {
		t.Errorf("server exit %d after SIGINT:\n%s", code, srv.output())
	}
	srv.wait("server: shutting down")
}

// TestPingUnknownPeer: --ping to a PeerID nobody registered exits
// non-zero naming DestinationNotLoggedOn.
func TestPingUnknownPeer(t *testing.T) {
	_, server := startDemoServer(t)
	ping := start(t, "peer", "--server", server, "--ping", strings.Repeat("a", 52))
	if code := ping.exit(); code == 0 {
		t.Fatalf("exit 0 for an unknown peer:\n%s", ping.output())
	}
	ping.wait("DestinationNotLoggedOn")
}

// TestInteractivePeers drives two interactive peers through their
// standard input: /connect, a chat line that arrives, /send of a file
// whose checksum the other end verifies, /state, /ping.
func TestInteractivePeers(t *testing.T) {
	_, server := startDemoServer(t)
	recv := t.TempDir()
	b := start(t, "peer", "--server", server, "--recv-dir", recv)
	bID := strings.TrimPrefix(b.wait("peer "), "peer ")
	b.wait("registered with the rendezvous server")
	a := start(t, "peer", "--server", server)
	a.wait("registered with the rendezvous server")
	data := make([]byte, 2<<20+777)
	rand.Read(data)
	file := filepath.Join(t.TempDir(), "level.pak")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	a.send("/connect " + bID)
	a.send("hello from a")
	b.wait("session request from")
	b.wait(": hello from a")
	a.send("/ping")
	a.wait("pong from " + bID[:8])
	a.send("/send " + file)
	a.wait("sent level.pak: 2.0 MiB")
	a.wait("checksum ok at the other end")
	b.wait("received level.pak")
	got, err := os.ReadFile(filepath.Join(recv, "level.pak"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("received file differs (err %v, %d bytes)", err, len(got))
	}
	a.send("/state")
	a.wait("active true")
	a.send("/quit")
	if code := a.exit(); code != 0 {
		t.Errorf("a exit %d", code)
	}
	b.stdin.Close() // end of input ends the peer too
	if code := b.exit(); code != 0 {
		t.Errorf("b exit %d", code)
	}
}

func TestParseTURNURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		tr   relay.Transport
		addr string
	}{
		{"turn:192.0.2.1:3478", relay.UDP, "192.0.2.1:3478"},
		{"turn:192.0.2.1:3478?transport=udp", relay.UDP, "192.0.2.1:3478"},
		{"turn:192.0.2.1:3479?transport=tcp", relay.TCP, "192.0.2.1:3479"},
		{"turns:192.0.2.1:5349", relay.TLS, "192.0.2.1:5349"},
	} {
		got, err := parseTURNURL(tc.in)
		if err != nil || got.Transport != tc.tr || got.Addr.String() != tc.addr {
			t.Errorf("%s: %+v, %v", tc.in, got, err)
		}
	}
	for _, bad := range []string{"stun:192.0.2.1:3478", "turn:example.com:3478", "turn:192.0.2.1", "turn:192.0.2.1:3478?transport=sctp"} {
		if _, err := parseTURNURL(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	for _, bad := range []string{"", "5-", "0-10", "10-5", "1-70000", "x"} {
		if _, _, err := parsePortRange(bad); err == nil {
			t.Errorf("port range %q accepted", bad)
		}
	}
}
