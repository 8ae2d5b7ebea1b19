package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/gamewire/gamewire/internal/netlab"
)

const labSummary = `p2pdemo lab (root): builds real NATs from network namespaces, veth pairs and
nftables (internal/netlab), runs "p2pdemo server" on the public segment and,
for every pair of NAT kinds, "p2pdemo peer --echo" on one site and
"p2pdemo peer --ping" on the other, with relay allowed, and forbidden where
no direct path exists. Prints the table: pair, relay, result, path, connect
time, round trip. Needs ip, nft and conntrack.`

const (
	labPort    = 3478
	labTimeout = 10 * time.Second // the peers' connect timeout
)

func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("lab", labSummary, stderr)
	count := fs.Int("count", 5, "messages of each send type per run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if ok, why := netlab.Available(); !ok {
		return &exitError{code: 2, msg: "lab: cannot build NATs here: " + why}
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	lab, err := netlab.New(netlab.Options{Name: "demo"})
	if err != nil {
		return err
	}
	defer lab.Close()
	srv, err := startLabServer(ctx, lab, bin)
	if err != nil {
		return err
	}
	defer srv.stop()
	fmt.Fprintf(stdout, "server %s on the public segment\n", srv.addr)
	kinds := []netlab.NATKind{netlab.NATNone, netlab.NATFullCone, netlab.NATAddrRestricted, netlab.NATPortRestricted, netlab.NATSymmetric}
	sites := map[string]*netlab.Host{}
	for _, k := range kinds {
		for _, side := range []string{"a", "b"} {
			s, err := lab.AddSite(fmt.Sprintf("%.10s-%s", k, side), netlab.SiteConfig{NAT: k})
			if err != nil {
				return err
			}
			sites[string(k)+side] = s.Hosts[0]
		}
	}
	fmt.Fprintln(stdout, "| pair | relay | result | path | connect | rtt |")
	fmt.Fprintln(stdout, "|---|---|---|---|---|---|")
	failed := 0
	for i, ka := range kinds {
		for _, kb := range kinds[i:] {
			relays := []bool{true}
			if ka == netlab.NATSymmetric && kb == netlab.NATSymmetric {
				relays = append(relays, false)
			}
			for _, allow := range relays {
				r := labPair(ctx, bin, srv.addr, sites[string(ka)+"a"], sites[string(kb)+"b"], allow, *count, labTimeout)
				fmt.Fprintf(stdout, "| %s ↔ %s | %s | %s |\n", ka, kb, map[bool]string{true: "allowed", false: "forbidden"}[allow], r.row())
				if r.err != nil || (allow && !r.res.OK) || (!allow && r.res.OK) {
					failed++
				}
			}
		}
	}
	if failed > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("lab: %d pairs did not behave as expected", failed)}
	}
	return nil
}

// labServer is "p2pdemo server" running in the lab's server namespace.
type labServer struct {
	cmd  *exec.Cmd
	addr string // KEY@IP:PORT
	done chan struct{}
}

// startLabServer runs "p2pdemo server" with extra flags.
func startLabServer(ctx context.Context, lab *netlab.Lab, bin string, extra ...string) (*labServer, error) {
	a := lab.ServerAddrs()
	args := append([]string{"server", "--status", "0",
		"--listen", netip.AddrPortFrom(a[0], labPort).String(),
		"--listen2", netip.AddrPortFrom(a[1], labPort+1).String()}, extra...)
	cmd := lab.Server().Command(ctx, bin, args...)
	first, err := startLined(cmd, "server key ")
	if err != nil {
		return nil, fmt.Errorf("lab: server: %w", err)
	}
	key := strings.TrimPrefix(first.line, "server key ")
	return &labServer{cmd: cmd, addr: fmt.Sprintf("%s@%v", key, netip.AddrPortFrom(a[0], labPort)), done: first.done}, nil
}

func (s *labServer) stop() { stopProc(s.cmd, s.done) }

// lined is a process whose output was read up to the first line with a
// given prefix; done closes when its output ends.
type lined struct {
	line  string   // that line
	lines []string // every line up to it
	done  chan struct{}
}

// startLined starts cmd and waits (10 s at most) for a stdout line that
// starts with prefix; the rest of the output is drained.
func startLined(cmd *exec.Cmd, prefix string) (lined, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return lined{}, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &syncWriter{w: &stderr}
	if err := cmd.Start(); err != nil {
		return lined{}, err
	}
	found := make(chan []string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		var seen []string
		searching := true
		for sc.Scan() {
			if !searching {
				continue // drain the rest
			}
			seen = append(seen, sc.Text())
			if strings.HasPrefix(sc.Text(), prefix) {
				found <- seen
				searching = false
			}
		}
	}()
	select {
	case ls := <-found:
		return lined{line: ls[len(ls)-1], lines: ls, done: done}, nil
	case <-done:
	case <-time.After(10 * time.Second):
	}
	stopProc(cmd, done)
	return lined{}, fmt.Errorf("no %q line; stderr: %s", prefix, strings.TrimSpace(stderr.String()))
}

// stopProc interrupts a process, kills it if it lingers, and reaps it.
func stopProc(cmd *exec.Cmd, done <-chan struct{}) {
	cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
	}
	cmd.Wait()
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// labRun is one pair's outcome: the --ping summary and exit status.
type labRun struct {
	res  pingResult
	exit int
	err  error
}

func (r labRun) row() string {
	switch {
	case r.err != nil:
		return "error: " + r.err.Error() + " | | | "
	case !r.res.Connected || !r.res.OK:
		return fmt.Sprintf("%s (exit %d) | – | – | –", r.res.Error, r.exit)
	}
	return fmt.Sprintf("connected (exit 0) | %s | %.1f ms | %.1f ms", r.res.Path, r.res.ConnectMS, r.res.RTTMS)
}

// labPair runs an echo peer on hb and a --ping peer on ha.
func labPair(ctx context.Context, bin, server string, ha, hb *netlab.Host, relay bool, count int, timeout time.Duration) labRun {
	echo := hb.Command(ctx, bin, "peer", "--server", server, "--echo")
	ready, err := startLined(echo, "registered")
	if err != nil {
		return labRun{err: fmt.Errorf("echo peer: %w", err)}
	}
	defer stopProc(echo, ready.done)
	id := strings.TrimPrefix(ready.lines[0], "peer ")
	args := []string{"peer", "--server", server, "--ping", id, "--count", fmt.Sprint(count), "--json", "--timeout", timeout.String()}
	if !relay {
		args = append(args, "--no-relay")
	}
	return runPing(ha.Command(ctx, bin, args...))
}

// runPing runs a --ping --json peer to the end and reads its summary.
func runPing(cmd *exec.Cmd) labRun {
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := labRun{}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	case err != nil:
		return labRun{err: err}
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(line), &r.res); err != nil {
				return labRun{err: fmt.Errorf("summary %q: %w", line, err)}
			}
			return r
		}
	}
	return labRun{err: fmt.Errorf("no summary (exit %d): %s", r.exit, strings.TrimSpace(errOut.String()))}
}
