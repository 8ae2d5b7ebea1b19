package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gamewire/gamewire/p2p"
)

// File transfer on chFile, every message reliable:
//
//	'F' JSON {name, size, sha256}   a file follows
//	'D' bytes                        the next chunk (up to 1 MiB in all)
//	'P' uint64                       receiver: bytes received so far
//	'R' JSON {name, ok, sha256}      receiver: the file is complete; its checksum
const (
	chunkSize   = 1<<20 - 1 // with its type byte, a 1 MiB reliable message
	maxFileSize = 4 << 30
)

type fileHeader struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

type fileResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	SHA256 string `json:"sha256"`
}

type incomingFile struct {
	hdr  fileHeader
	f    *os.File
	h    hash.Hash
	got  int64
	path string
}

type outgoingFile struct {
	size   int64
	acked  int64
	result chan fileResult
	ack    chan struct{}
}

// sendFile sends path to peer and waits for the other end's checksum.
func (p *peer) sendFile(ctx context.Context, to p2p.PeerID, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	out := &outgoingFile{size: size, result: make(chan fileResult, 1), ack: make(chan struct{}, 1)}
	p.mu.Lock()
	if p.outgoing[to] != nil {
		p.mu.Unlock()
		return errors.New("a transfer to this peer is running")
	}
	p.outgoing[to] = out
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.outgoing, to)
		p.mu.Unlock()
	}()
	hdr, _ := json.Marshal(fileHeader{Name: filepath.Base(path), Size: size, SHA256: hex.EncodeToString(h.Sum(nil))})
	if err := p.sendWait(ctx, to, append([]byte{'F'}, hdr...)); err != nil {
		return err
	}
	start := time.Now()
	buf := make([]byte, 1+chunkSize)
	buf[0] = 'D'
	for {
		k, err := io.ReadFull(f, buf[1:])
		if k > 0 {
			if err := p.sendWait(ctx, to, buf[:1+k]); err != nil {
				return err
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return p.awaitResult(ctx, out, filepath.Base(path), start)
}

// sendWait sends a reliable file message, waiting while the session's
// send queue is full.
func (p *peer) sendWait(ctx context.Context, to p2p.PeerID, b []byte) error {
	for {
		err := p.node.SendP2PPacket(to, b, p2p.SendReliable, chFile)
		if !errors.Is(err, p2p.ErrQueueFull) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// awaitResult draws the progress bar from the receiver's acknowledgements
// until its checksum comes back.
func (p *peer) awaitResult(ctx context.Context, out *outgoingFile, name string, start time.Time) error {
	lastDraw := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-out.result:
			p.con.println("%s", progress(name, out.size, out.size, start))
			if !r.OK {
				return fmt.Errorf("%s: the other end's checksum %s does not match", name, r.SHA256)
			}
			p.con.println("sent %s: %s in %v, checksum ok at the other end (sha256 %s)", name, fmtBytes(float64(out.size)), time.Since(start).Round(time.Millisecond), r.SHA256[:16])
			return nil
		case <-out.ack:
			if time.Since(lastDraw) >= 200*time.Millisecond {
				lastDraw = time.Now()
				p.mu.Lock()
				acked := out.acked
				p.mu.Unlock()
				p.con.println("%s", progress(name, acked, out.size, start))
			}
		case <-time.After(30 * time.Second):
			return fmt.Errorf("%s: the other end stopped acknowledging", name)
		}
	}
}

// progress is a progress bar with rate and time left.
func progress(name string, done, total int64, start time.Time) string {
	const width = 30
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	bar := strings.Repeat("=", int(frac*width)) + strings.Repeat(" ", width-int(frac*width))
	rate := float64(done) / max(time.Since(start).Seconds(), 1e-3)
	eta := "-"
	if rate > 0 && done < total {
		eta = (time.Duration(float64(total-done)/rate*1e9) + time.Second/2).Truncate(time.Second).String()
	}
	return fmt.Sprintf("%s [%s] %3.0f%% %s/%s %s/s ETA %s", name, bar, 100*frac, fmtBytes(float64(done)), fmtBytes(float64(total)), fmtBytes(rate), eta)
}

func (p *peer) handleFile(pkt p2p.Packet) {
	if len(pkt.Data) == 0 {
		return
	}
	body := pkt.Data[1:]
	switch pkt.Data[0] {
	case 'F':
		p.startIncoming(pkt.From, body)
	case 'D':
		p.chunk(pkt.From, body)
	case 'P':
		p.acked(pkt.From, body)
	case 'R':
		var r fileResult
		if json.Unmarshal(body, &r) != nil {
			return
		}
		p.mu.Lock()
		out := p.outgoing[pkt.From]
		p.mu.Unlock()
		if out != nil {
			select {
			case out.result <- r:
			default:
			}
		}
	}
}

func (p *peer) startIncoming(from p2p.PeerID, body []byte) {
	var hdr fileHeader
	if err := json.Unmarshal(body, &hdr); err != nil || hdr.Size < 0 || hdr.Size > maxFileSize {
		p.con.println("file from %s: bad header, ignored", short(from))
		return
	}
	name := filepath.Base(filepath.Clean("/" + hdr.Name)) // no directories, no ..
	if name == "/" || name == "." {
		name = "received"
	}
	path, f, err := createUnique(p.recvDir, name)
	if err != nil {
		p.con.println("file from %s: %v", short(from), err)
		return
	}
	in := &incomingFile{hdr: hdr, f: f, h: sha256.New(), path: path}
	p.mu.Lock()
	if old := p.incoming[from]; old != nil {
		old.f.Close()
		os.Remove(old.path) // the sender started over
	}
	p.incoming[from] = in
	p.mu.Unlock()
	p.con.println("receiving %s (%s) from %s", name, fmtBytes(float64(hdr.Size)), short(from))
	if hdr.Size == 0 {
		p.finishIncoming(from, in)
	}
}

// createUnique creates name in dir, or name.1, name.2, ... if it exists.
func createUnique(dir, name string) (string, *os.File, error) {
	for i := 0; i < 100; i++ {
		path := filepath.Join(dir, name)
		if i > 0 {
			path = fmt.Sprintf("%s.%d", path, i)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			return path, f, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return "", nil, err
		}
	}
	return "", nil, fmt.Errorf("%s: too many files of that name", name)
}

func (p *peer) chunk(from p2p.PeerID, b []byte) {
	p.mu.Lock()
	in := p.incoming[from]
	p.mu.Unlock()
	if in == nil || in.got+int64(len(b)) > in.hdr.Size {
		return // no transfer, or more than announced: dropped
	}
	if _, err := in.f.Write(b); err != nil {
		p.con.println("file from %s: %v", short(from), err)
		return
	}
	in.h.Write(b)
	in.got += int64(len(b))
	p.node.SendP2PPacket(from, binary.BigEndian.AppendUint64([]byte{'P'}, uint64(in.got)), p2p.SendReliable, chFile)
	if in.got == in.hdr.Size {
		p.finishIncoming(from, in)
	}
}

func (p *peer) finishIncoming(from p2p.PeerID, in *incomingFile) {
	p.mu.Lock()
	if p.incoming[from] == in {
		delete(p.incoming, from)
	}
	p.mu.Unlock()
	in.f.Close()
	sum := hex.EncodeToString(in.h.Sum(nil))
	ok := sum == in.hdr.SHA256
	r, _ := json.Marshal(fileResult{Name: in.hdr.Name, OK: ok, SHA256: sum})
	p.node.SendP2PPacket(from, append([]byte{'R'}, r...), p2p.SendReliable, chFile)
	verdict := "checksum ok"
	if !ok {
		verdict = "CHECKSUM MISMATCH"
	}
	p.con.println("received %s from %s: %s, sha256 %s, %s", filepath.Base(in.path), short(from), fmtBytes(float64(in.got)), sum[:16], verdict)
}

func (p *peer) acked(from p2p.PeerID, b []byte) {
	if len(b) != 8 {
		return
	}
	p.mu.Lock()
	out := p.outgoing[from]
	if out != nil {
		out.acked = int64(binary.BigEndian.Uint64(b))
	}
	p.mu.Unlock()
	if out != nil {
		select {
		case out.ack <- struct{}{}:
		default:
		}
	}
}

// waitTransfers lets running transfers finish when input ends (a script
// piping commands in).
func (p *peer) waitTransfers(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		p.sends.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
