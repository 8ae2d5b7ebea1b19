package p2p

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/gamewire/gamewire/internal/udpbatch"
	"github.com/gamewire/gamewire/p2p/internal/path"
	"github.com/gamewire/gamewire/relay"
)

// The node's sockets, each a path.Socket (docs/ARCHITECTURE.md, "Sockets"):
// udpSocket (the main socket, or an extra one NAT traversal opened for the
// birthday approach), relaySocket (the node's TURN allocation) and tcpLink
// (a direct TCP link). Each has a reader that hands Node.handlePacket what
// arrives, with the socket it came in on: packets answer on that socket,
// and a session sends on the socket its peer's packets arrive on, so a
// session can live on an extra socket, the relay or a link.

// udpSocket is a UDP socket of the node's.
type udpSocket struct {
	node   *Node
	pc     net.PacketConn
	conn   *udpbatch.Conn
	q      *udpbatch.Queue // the main socket's writer; extra sockets write directly
	main   bool
	closed atomic.Bool
}

func (n *Node) newSocket(pc net.PacketConn, main bool) *udpSocket {
	s := &udpSocket{node: n, pc: pc, conn: udpbatch.New(pc), main: main}
	if main {
		s.grow()
		s.q = udpbatch.NewQueue(s.conn, 0, func(error) { n.stats.writeErrors.Add(1) })
	}
	return s
}

func (s *udpSocket) Kind() path.Kind { return path.Direct }
func (s *udpSocket) Closed() bool    { return s.closed.Load() }

// grow gives a socket that carries sessions large kernel buffers. Extra
// sockets get them only once a session uses them: the birthday approach
// opens hundreds.
func (s *udpSocket) grow() {
	if u, ok := s.pc.(*net.UDPConn); ok {
		u.SetReadBuffer(socketBuffer)
		u.SetWriteBuffer(socketBuffer)
	}
}

// WriteTo sends one datagram (nat.Socket).
func (s *udpSocket) WriteTo(b []byte, to netip.AddrPort) error {
	msgs := s.node.getMsgs(1)
	(*msgs)[0] = udpbatch.Message{Buf: b, Addr: to}
	err := s.WriteBatch(*msgs)
	s.node.putMsgs(msgs)
	return err
}

// WriteToTTL sends one datagram with a small TTL, to prime the NAT
// (nat.TTLSocket).
func (s *udpSocket) WriteToTTL(b []byte, to netip.AddrPort, ttl int) error {
	err := udpbatch.WriteToTTL(s.pc, b, to, ttl)
	if err != nil && !errors.Is(err, udpbatch.ErrTTLUnsupported) {
		s.node.stats.writeErrors.Add(1)
	}
	return err
}

// WriteBatch sends datagrams in one system call where the platform can.
// The main socket queues them for its writer, which sends what every
// session wrote in the meantime together; its errors are counted there.
func (s *udpSocket) WriteBatch(msgs []udpbatch.Message) error {
	if s.q != nil {
		return s.q.Write(msgs)
	}
	_, err := s.conn.WriteBatch(msgs)
	if err != nil {
		s.node.stats.writeErrors.Add(1)
	}
	return err
}

// Close closes an extra socket; its reader ends. The main socket closes
// with the node.
func (s *udpSocket) Close() error {
	if s.main || s.closed.Swap(true) {
		return nil
	}
	s.node.extraMu.Lock()
	delete(s.node.extras, s)
	s.node.extraMu.Unlock()
	return s.pc.Close()
}

// relaySocket is the node's TURN allocation as a socket. It closes when the
// allocation is released or found dead.
type relaySocket struct {
	node   *Node
	c      *relay.Client
	closed atomic.Bool
}

func (s *relaySocket) Kind() path.Kind { return path.Relay }
func (s *relaySocket) Closed() bool    { return s.closed.Load() }

func (s *relaySocket) WriteTo(b []byte, to netip.AddrPort) error {
	err := s.c.WriteTo(b, to)
	if err != nil {
		s.node.stats.relayDropped.Add(1)
	}
	return err
}

// Close does nothing: the socket closes with the allocation (nat.Socket).
func (s *relaySocket) Close() error { return nil }

func (s *relaySocket) WriteBatch(msgs []udpbatch.Message) error { return writeEach(s, msgs) }

// writeEach sends a batch one datagram at a time, for sockets that frame
// each datagram of their own.
func writeEach(s path.Socket, msgs []udpbatch.Message) error {
	var first error
	for _, m := range msgs {
		if err := s.WriteTo(m.Buf, m.Addr); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// closeExtra closes sock if it is an extra UDP socket.
func closeExtra(sock path.Socket) {
	if u, ok := sock.(*udpSocket); ok {
		u.Close()
	}
}

// openExtra opens an extra socket beside the main one and starts reading
// it (nat.PunchConfig.OpenSocket).
func (n *Node) openExtra() (*udpSocket, error) {
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
func (n *Node) readLoop(s *udpSocket) {
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
