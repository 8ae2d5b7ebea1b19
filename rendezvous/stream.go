package rendezvous

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Over TCP every rendezvous message travels in a frame: the marker byte
// FrameMarker (in gamewire's range, so a listener shared with TURN tells
// the two apart by a connection's first byte), a 2-byte big-endian length,
// then the message.
const (
	frameMarker  byte = 0xBF
	frameHeader       = 3
	writeTimeout      = 5 * time.Second
)

var errBadFrame = errors.New("rendezvous: bad frame")

// WriteFrame writes b as one frame.
func WriteFrame(w io.Writer, b []byte) error {
	if len(b) > maxPacketSize {
		return errBadFrame
	}
	f := make([]byte, frameHeader+len(b))
	f[0], f[1], f[2] = frameMarker, byte(len(b)>>8), byte(len(b))
	copy(f[frameHeader:], b)
	_, err := w.Write(f)
	return err
}

// ReadFrame reads one frame into buf (at least 1500 bytes) and returns
// the message.
func ReadFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := int(h[1])<<8 | int(h[2])
	if h[0] != frameMarker || n > maxPacketSize || n > len(buf) {
		return nil, errBadFrame
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// stream is a client's TCP connection to the server: messages to it are
// written in frames under a deadline, so a client that stops reading
// costs a blocked write of at most writeTimeout, then its connection.
type stream struct {
	conn net.Conn
	mu   sync.Mutex // serialises writes
}

func (st *stream) write(b []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	err := WriteFrame(st.conn, b)
	if err != nil {
		st.conn.Close()
	}
	return err
}
