package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gamewire/gamewire/p2p"
)

// handlePing answers a ping with a pong carrying the same stamp, and
// reports the round trip of a pong to one of ours.
func (p *peer) handlePing(pkt p2p.Packet) {
	if len(pkt.Data) != 9 {
		return
	}
	seq := binary.BigEndian.Uint64(pkt.Data[1:])
	switch pkt.Data[0] {
	case 'p':
		pong := append([]byte{'P'}, pkt.Data[1:]...)
		p.node.SendP2PPacket(pkt.From, pong, p2p.SendUnreliable, chPing)
	case 'P':
		p.mu.Lock()
		sent, ok := p.pings[seq]
		delete(p.pings, seq)
		p.mu.Unlock()
		if ok {
			p.con.println("pong from %s: %v", short(pkt.From), time.Since(sent).Round(10*time.Microsecond))
		}
	}
}

// ping sends an unreliable ping to the current peer.
func (p *peer) ping() {
	p.mu.Lock()
	if len(p.pings) >= 64 {
		clear(p.pings) // pings lost on the way: forget them
	}
	p.pingSeq++
	seq := p.pingSeq
	p.pings[seq] = time.Now()
	p.mu.Unlock()
	p.send(binary.BigEndian.AppendUint64([]byte{'p'}, seq), p2p.SendUnreliable, chPing)
}

// echoCount is what came back of a --ping run, per send type.
type echoCount struct {
	got  [4]map[uint32]bool
	rtts []time.Duration // reliable echoes
}

// countEcho records an echoed --ping message: 4-byte sequence, then the
// send time in unix nanoseconds.
func (p *peer) countEcho(from p2p.PeerID, t p2p.SendType, b []byte) {
	if len(b) < 12 {
		return
	}
	seq := binary.BigEndian.Uint32(b)
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(b[4:])))
	p.mu.Lock()
	defer p.mu.Unlock()
	ec := p.echoes[from]
	if ec == nil {
		return // not pinging this peer
	}
	if ec.got[t] == nil {
		ec.got[t] = map[uint32]bool{}
	}
	if !ec.got[t][seq] && (t == p2p.SendReliable || t == p2p.SendReliableWithBuffering) {
		ec.rtts = append(ec.rtts, time.Since(sent))
	}
	ec.got[t][seq] = true
}

// pingResult is the summary of a --ping run.
type pingResult struct {
	Peer      string         `json:"peer"`
	Connected bool           `json:"connected"`
	Error     string         `json:"error,omitempty"`
	Path      string         `json:"path,omitempty"`
	Remote    string         `json:"remote,omitempty"`
	ConnectMS float64        `json:"connect_ms"`
	RTTMS     float64        `json:"rtt_ms"` // median of the reliable echoes
	Sent      int            `json:"sent_per_type"`
	Delivered map[string]int `json:"delivered"` // echoes per send type
	OK        bool           `json:"ok"`        // every reliable message came back
}

var sendTypes = []p2p.SendType{p2p.SendUnreliable, p2p.SendUnreliableNoDelay, p2p.SendReliable, p2p.SendReliableWithBuffering}

// pingRun connects to an echo peer, sends count messages of every send
// type and waits for what comes back.
func pingRun(ctx context.Context, p *peer, to p2p.PeerID, count int) pingResult {
	res := pingResult{Peer: to.String(), Sent: count, Delivered: map[string]int{}}
	p.mu.Lock()
	p.current, p.hasPeer = to, true
	p.echoes[to] = &echoCount{}
	delete(p.failures, to)
	p.mu.Unlock()
	start := time.Now()
	p.node.SendP2PPacket(to, []byte("(ping run)"), p2p.SendReliable, chChat)
	if e := p.awaitConnected(ctx, to); e != p2p.SessionErrorNone {
		res.Error = e.String()
		return res
	}
	res.Connected, res.ConnectMS = true, ms(time.Since(start))
	for i := range count {
		for _, t := range sendTypes {
			m := binary.BigEndian.AppendUint32(nil, uint32(i))
			m = binary.BigEndian.AppendUint64(m, uint64(time.Now().UnixNano()))
			p.node.SendP2PPacket(to, m, t, chTypes+int(t))
		}
		time.Sleep(10 * time.Millisecond) // a game's pace, not a flood
	}
	p.awaitEchoes(ctx, to, count)
	st, _ := p.node.GetP2PSessionState(to)
	res.Path, res.Remote = st.Path.String(), st.RemoteAddr.String()
	p.mu.Lock()
	ec := p.echoes[to]
	for _, t := range sendTypes {
		res.Delivered[t.String()] = len(ec.got[t])
	}
	rtts := slices.Clone(ec.rtts)
	p.mu.Unlock()
	if len(rtts) > 0 {
		slices.Sort(rtts)
		res.RTTMS = ms(rtts[len(rtts)/2])
	}
	res.OK = res.Delivered[p2p.SendReliable.String()] == count && res.Delivered[p2p.SendReliableWithBuffering.String()] == count
	if !res.OK && res.Error == "" {
		res.Error = "reliable messages missing"
		if e := p.failure(to); e != p2p.SessionErrorNone {
			res.Error = e.String()
		}
	}
	return res
}

// awaitConnected waits until the session is active, or returns its error.
func (p *peer) awaitConnected(ctx context.Context, to p2p.PeerID) p2p.SessionError {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, _ := p.node.GetP2PSessionState(to); st.ConnectionActive {
			return p2p.SessionErrorNone
		}
		if e := p.failure(to); e != p2p.SessionErrorNone {
			return e
		}
		select {
		case <-ctx.Done():
			return p2p.SessionErrorTimeout
		case <-tick.C:
		}
	}
}

func (p *peer) failure(to p2p.PeerID) p2p.SessionError {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failures[to]
}

// awaitEchoes waits until every reliable echo is back, then a little for
// unreliable stragglers; at most 10 s, or until the session fails.
func (p *peer) awaitEchoes(ctx context.Context, to p2p.PeerID, count int) {
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		p.mu.Lock()
		ec := p.echoes[to]
		done := len(ec.got[p2p.SendReliable]) == count && len(ec.got[p2p.SendReliableWithBuffering]) == count
		p.mu.Unlock()
		if done {
			time.Sleep(200 * time.Millisecond) // unreliable echoes sent before the last reliable one
			return
		}
		if p.failure(to) != p2p.SessionErrorNone {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline:
			return
		case <-tick.C:
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pingCommand is --ping: the run, its summary, and the exit status.
func pingCommand(ctx context.Context, p *peer, to p2p.PeerID, count int, asJSON bool) error {
	res := pingRun(ctx, p, to, count)
	if asJSON {
		b, _ := json.Marshal(res)
		p.con.println("%s", b)
	} else {
		p.con.println("%s", res.summary())
	}
	if !res.OK {
		return &exitError{code: 1, msg: "ping failed: " + res.Error}
	}
	return nil
}

func (r pingResult) summary() string {
	var b strings.Builder
	if !r.Connected {
		fmt.Fprintf(&b, "no session with %s: %s", r.Peer, r.Error)
		return b.String()
	}
	fmt.Fprintf(&b, "connected to %s: path %s via %s, connect %.1f ms, rtt %.1f ms\n", r.Peer[:8], r.Path, r.Remote, r.ConnectMS, r.RTTMS)
	for _, t := range sendTypes {
		fmt.Fprintf(&b, "  %-26s %d/%d delivered\n", t.String(), r.Delivered[t.String()], r.Sent)
	}
	if r.OK {
		b.WriteString("ok: every reliable message came back")
	} else {
		fmt.Fprintf(&b, "failed: %s", r.Error)
	}
	return b.String()
}
