package p2p

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/gamewire/gamewire/internal/udpbatch"
	"github.com/gamewire/gamewire/relay"
)

// nodeSocket is one of the node's ways to send: the main UDP socket, an
// extra one NAT traversal opened for the birthday approach, or the node's
// TURN allocation (relay set, pc and conn nil), or a direct TCP link (tcp
// set, pc and conn nil). Each feeds
// Node.handlePacket from a reader goroutine (the relay's is the relay
// client's). Packets answer on the socket they came in on, and a session
// sends on the socket its peer's packets arrive on, so a session can live
// on an extra socket or on the relay.
type nodeSocket struct {
	node   *Node
	pc     net.PacketConn
	conn   *udpbatch.Conn
	relay  *relay.Client
	tcp    *tcpLink
	main   bool
	closed atomic.Bool
}

// kind is the path kind of sessions on this socket.
func (s *nodeSocket) kind() PathKind {
	switch {
	case s.relay != nil:
		return PathRelay
	case s.tcp != nil:
		return PathTCP
	}
	return PathDirect
}

func (n *Node) newSocket(pc net.PacketConn, main bool) *nodeSocket {
	s := &nodeSocket{node: n, pc: pc, conn: udpbatch.New(pc), main: main}
	if main {
		s.grow()
	}
	return s
}

// grow gives a socket that carries sessions large kernel buffers. Extra
// sockets get them only once a session uses them: the birthday approach
// opens hundreds.
func (s *nodeSocket) grow() {
	if s.pc == nil {
		return
	}
	if u, ok := s.pc.(*net.UDPConn); ok {
		u.SetReadBuffer(socketBuffer)
		u.SetWriteBuffer(socketBuffer)
	}
}

// WriteTo sends one datagram (nat.Socket).
func (s *nodeSocket) WriteTo(b []byte, to netip.AddrPort) error {
	if s.relay != nil {
		return s.relayWrite(b, to)
	}
	if s.tcp != nil {
		return s.tcp.write(b)
	}
	msgs := s.node.getMsgs(1)
	(*msgs)[0] = udpbatch.Message{Buf: b, Addr: to}
	_, err := s.conn.WriteBatch(*msgs)
	s.node.putMsgs(msgs)
	if err != nil {
		s.node.stats.writeErrors.Add(1)
	}
	return err
}

func (s *nodeSocket) relayWrite(b []byte, to netip.AddrPort) error {
	err := s.relay.WriteTo(b, to)
	if err != nil {
		s.node.stats.relayDropped.Add(1)
	}
	return err
}

// writeBatch sends datagrams.
func (s *nodeSocket) writeBatch(msgs []udpbatch.Message) error {
	if s.relay == nil && s.tcp == nil {
		_, err := s.conn.WriteBatch(msgs)
		return err
	}
	var first error
	for _, m := range msgs {
		if err := s.WriteTo(m.Buf, m.Addr); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Close closes an extra socket; its reader ends. The main socket closes
// with the node, the relay's with the relay, a TCP link's with the link.
func (s *nodeSocket) Close() error {
	if s.main || s.relay != nil || s.tcp != nil || s.closed.Swap(true) {
		return nil
	}
	s.node.extraMu.Lock()
	delete(s.node.extras, s)
	s.node.extraMu.Unlock()
	return s.pc.Close()
}

// openExtra opens an extra socket beside the main one and starts reading
// it (nat.PunchConfig.OpenSocket).
func (n *Node) openExtra() (*nodeSocket, error) {
	if n.isClosed() {
		return nil, ErrClosed
	}
	ip := n.bindIP()
	n.extraMu.Lock()
	full := len(n.extras) >= maxExtraSockets
	n.extraMu.Unlock()
	if full {
		return nil, errTooManySockets
	}
	pc, err := n.cfg.ListenPacket("udp4", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, err
	}
	s := n.newSocket(pc, false)
	n.extraMu.Lock()
	if n.isClosed() || len(n.extras) >= maxExtraSockets {
		n.extraMu.Unlock()
		pc.Close()
		if n.isClosed() {
			return nil, ErrClosed
		}
		return nil, errTooManySockets
	}
	n.extras[s] = struct{}{}
	n.wg.Add(1)
	n.extraMu.Unlock()
	go n.readLoop(s)
	return s, nil
}

// bindIP is the address extra sockets bind to: the main socket's, if it is
// bound to one.
func (n *Node) bindIP() string {
	if a := addrOfConn(n.main.pc); a.IsValid() && !a.Addr().IsUnspecified() {
		return a.Addr().String()
	}
	return "0.0.0.0"
}

func addrOfConn(pc net.PacketConn) netip.AddrPort {
	ap, err := netip.ParseAddrPort(pc.LocalAddr().String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// readLoop reads a socket's datagrams and dispatches them by their first
// byte (docs/ARCHITECTURE.md, "The first byte").
func (n *Node) readLoop(s *nodeSocket) {
	defer n.wg.Done()
	batch := readBatch
	if !s.main {
		batch = extraReadBatch // mostly probes; hundreds of these may be open
	}
	msgs := make([]udpbatch.Message, batch)
	for i := range msgs {
		msgs[i].Buf = make([]byte, readBufSize)
	}
	errs := 0
	for {
		for i := range msgs {
			msgs[i].Buf = msgs[i].Buf[:cap(msgs[i].Buf)]
		}
		k, err := s.conn.ReadBatch(msgs)
		if err != nil {
			if n.isClosed() || s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			errs++
			n.log.Warn("p2p: socket read failed", "err", err)
			time.Sleep(min(time.Duration(errs)*10*time.Millisecond, time.Second)) // do not spin on a broken socket
			continue
		}
		errs = 0
		for i := range k {
			m := &msgs[i]
			if m.Truncated {
				n.stats.dropped.Add(1)
				continue
			}
			n.handlePacket(m.Buf[:m.N], m.Addr, s)
		}
	}
}
