package rendezvous

import (
	"bufio"
	"errors"
	"net"
	"time"
)

// acceptLoop takes TCP connections and sorts them by their first byte:
// FrameMarker is a rendezvous client, STUN or ChannelData goes to the
// embedded TURN server, anything else is closed.
func (s *Server) acceptLoop(l net.Listener) {
	defer s.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.stats.readErrors.Add(1)
			time.Sleep(10 * time.Millisecond) // out of file descriptors: do not spin
			continue
		}
		s.mu.Lock()
		full := len(s.streams) >= s.cfg.MaxStreams
		s.mu.Unlock()
		if full {
			s.stats.streamsRefused.Add(1)
			c.Close()
			continue
		}
		s.wg.Add(1)
		go s.serveConn(c)
	}
}

func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	st := &stream{conn: c}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.streams[st] = struct{}{} // counted from the first byte on, so Close reaches it
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
	}()
	br := bufio.NewReaderSize(c, 2*maxPacketSize)
	c.SetReadDeadline(time.Now().Add(firstByteTimeout))
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	switch {
	case first[0] == frameMarker:
		s.stats.streams.Add(1)
		s.serveStream(st, br)
	case s.turnTCP != nil && (first[0] <= 0x03 || (first[0] >= 0x40 && first[0] <= 0x7F)):
		c.SetReadDeadline(time.Time{})
		if !s.turnTCP.push(&peekedConn{Conn: c, r: br}) {
			c.Close()
		}
	default:
		s.stats.malformed.Add(1)
		c.Close()
	}
}

// serveStream reads a rendezvous client's frames until it closes, errs or
// stays silent past its registration's lifetime.
func (s *Server) serveStream(st *stream, br *bufio.Reader) {
	defer st.conn.Close()
	src, ok := addrPortOf(st.conn.RemoteAddr())
	if !ok {
		return
	}
	buf := make([]byte, maxPacketSize)
	for {
		st.conn.SetReadDeadline(time.Now().Add(s.cfg.TTL))
		b, err := ReadFrame(br, buf)
		if err != nil {
			if errors.Is(err, errBadFrame) {
				s.stats.malformed.Add(1)
			}
			return
		}
		s.handle(origin{st: st, addr: src}, b)
	}
}
