//go:build linux

package udpbatch

import (
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batcher runs recvmmsg and sendmmsg on a UDP socket through its RawConn.
//
// The kernel reads and writes the mmsghdr, iovec and sockaddr arrays of an
// mmsgs, which are ordinary Go heap memory: the pointers inside them are
// typed Go pointers (*byte, *Iovec), so the garbage collector keeps what
// they point at alive and, as heap objects never move, valid for the
// syscall. The array passed to the syscall is converted to uintptr in the
// call expression itself, which keeps it alive until the call returns.
type batcher struct {
	conn  *Conn
	rc    syscall.RawConn
	fam   family
	zones zoneCache

	// Read side, owned by the one goroutine in ReadBatch. readFn is bound
	// once so that passing it to RawConn.Read does not allocate a closure.
	rd     mmsgs
	rdHs   []unix.Mmsghdr
	rdN    int
	rdErr  syscall.Errno
	readFn func(fd uintptr) bool

	// Write side: each WriteBatch takes a writer from the pool so that
	// concurrent calls never share arrays.
	writers sync.Pool
}

// mmsgs holds n headers, each pointing at its own iovec and sockaddr.
type mmsgs struct {
	hs    []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
}

// grow makes room for n messages. The arrays only grow, to the largest batch
// seen, and each header's Name and Iov pointers are set once here.
func (m *mmsgs) grow(n int) {
	if n <= len(m.hs) {
		return
	}
	m.hs = make([]unix.Mmsghdr, n)
	m.iovs = make([]unix.Iovec, n)
	m.names = make([]unix.RawSockaddrInet6, n)
	for i := range m.hs {
		h := &m.hs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&m.names[i]))
		h.Iov = &m.iovs[i]
		h.SetIovlen(1)
	}
}

// setBuf points message i's iovec at b.
func (m *mmsgs) setBuf(i int, b []byte) {
	v := &m.iovs[i]
	v.Base = nil
	if len(b) > 0 {
		v.Base = unsafe.SliceData(b)
	}
	v.SetLen(len(b))
}

// release drops the first n iovecs' pointers to callers' buffers, so that
// arrays kept for reuse do not keep those buffers alive.
func (m *mmsgs) release(n int) {
	for i := range n {
		m.iovs[i].Base = nil
	}
}

// newBatcher returns nil when the socket is not AF_INET or AF_INET6 or its
// RawConn is unavailable; New then falls back to ReadFrom and WriteTo.
func newBatcher(c *Conn) *batcher {
	rc, err := c.udp.SyscallConn()
	if err != nil {
		return nil
	}
	fam := famUnknown
	err = rc.Control(func(fd uintptr) { fam = socketFamily(int(fd)) })
	if err != nil || fam == famUnknown {
		return nil
	}
	b := &batcher{conn: c, rc: rc, fam: fam}
	b.readFn = b.recvmmsg
	b.writers.New = func() any {
		w := new(writer)
		w.b = b
		w.sendFn = w.sendmmsg
		return w
	}
	return b
}

// socketFamily asks the kernel rather than trusting LocalAddr, which cannot
// tell a dual-stack socket from an IPv6-only one.
func socketFamily(fd int) family {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	switch {
	case err != nil:
		return famUnknown
	case domain == unix.AF_INET:
		return famV4
	case domain != unix.AF_INET6:
		return famUnknown
	}
	if only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err == nil && only != 0 {
		return famV6Only
	}
	return famV6
}

// read implements ReadBatch.
func (b *batcher) read(msgs []Message) (int, error) {
	n := min(len(msgs), maxBatch)
	b.rd.grow(n)
	for i := range n {
		raceWrite(msgs[i].Buf)
		b.rd.setBuf(i, msgs[i].Buf)
		h := &b.rd.hs[i]
		h.Hdr.Namelen = unix.SizeofSockaddrInet6
		h.Hdr.Flags = 0
		h.Len = 0
	}
	b.rdHs = b.rd.hs[:n]
	b.rdN, b.rdErr = 0, 0
	err := b.rc.Read(b.readFn)
	b.rd.release(n)
	if err != nil {
		return 0, err
	}
	if b.rdErr != 0 {
		return 0, b.opError("read", "recvmmsg", b.rdErr)
	}
	for i := range b.rdN {
		h := &b.rd.hs[i]
		m := &msgs[i]
		m.N = int(h.Len)
		m.Truncated = h.Hdr.Flags&unix.MSG_TRUNC != 0
		m.Addr = decodeSockaddr(&b.rd.names[i], &b.zones)
	}
	return b.rdN, nil
}

// recvmmsg is the RawConn.Read callback. MSG_TRUNC makes the kernel report
// each datagram's real length even when it did not fit, so truncation is
// visible as N > len(Buf). Returning false on EAGAIN parks the goroutine in
// the netpoller until the socket is readable.
func (b *batcher) recvmmsg(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&b.rdHs[0])), uintptr(len(b.rdHs)),
			unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
		switch {
		case e == 0:
			b.rdN = int(r)
			return true
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			return false
		case isSoftErrno(e):
			b.conn.soft.Add(1)
			drainErrQueue(fd)
		default:
			b.rdErr = e
			return true
		}
	}
}

// drainErrQueue empties the socket's error queue, which only fills when
// someone set IP_RECVERR or IPV6_RECVERR on the socket. Queued reports
// count against the receive buffer, so left there they would crowd out
// datagrams; this package has no way to deliver them, and the pending
// error they set has already been counted. Allocates, but only on this
// rare path.
func drainErrQueue(fd uintptr) {
	for range maxBatch {
		_, _, _, _, err := unix.Recvmsg(int(fd), nil, nil, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if err != nil {
			return
		}
	}
}

// write implements WriteBatch, in chunks of at most maxBatch messages,
// stopping at the first message whose address cannot be encoded.
func (b *batcher) write(msgs []Message) (int, error) {
	w := b.writers.Get().(*writer)
	defer b.writers.Put(w)
	sent := 0
	for sent < len(msgs) {
		n, addrErr := w.pack(msgs[sent:])
		k, err := w.send(n)
		sent += k
		if err != nil {
			return sent, err
		}
		if addrErr != nil {
			return sent, addrErr
		}
	}
	return sent, nil
}

// writer is one WriteBatch call's scratch, reused through a sync.Pool.
type writer struct {
	b      *batcher
	mm     mmsgs
	hs     []unix.Mmsghdr // the chunk being sent
	sent   int            // messages of hs sent so far
	err    syscall.Errno
	softAt int // index of the last message retried after a soft error, or -1
	sendFn func(fd uintptr) bool
}

// pack fills headers for up to maxBatch messages and returns how many. It
// stops before a message whose address is unusable and returns that
// error, so the messages before it can still be sent.
func (w *writer) pack(msgs []Message) (int, error) {
	n := min(len(msgs), maxBatch)
	w.mm.grow(n)
	for i := range n {
		m := &msgs[i]
		namelen, err := encodeSockaddr(&w.mm.names[i], w.b.fam, m.Addr, &w.b.zones)
		if err != nil {
			return i, err
		}
		raceRead(m.Buf)
		w.mm.setBuf(i, m.Buf)
		h := &w.mm.hs[i]
		h.Hdr.Namelen = namelen
		h.Hdr.Flags = 0
		h.Len = 0
	}
	return n, nil
}

// send hands the first n packed messages to sendmmsg and returns how many
// were sent.
func (w *writer) send(n int) (int, error) {
	if n == 0 {
		return 0, nil
	}
	w.hs = w.mm.hs[:n]
	w.sent, w.err, w.softAt = 0, 0, -1
	err := w.b.rc.Write(w.sendFn)
	w.mm.release(n)
	if err != nil {
		return w.sent, err
	}
	if w.err != 0 {
		return w.sent, w.b.opError("write", "sendmmsg", w.err)
	}
	return w.sent, nil
}

// sendmmsg is the RawConn.Write callback. sendmmsg may send only a prefix
// (a full socket buffer, or an error on a later message, which it reports
// on the next call), so it loops until every message is sent, parking in
// the netpoller on EAGAIN. A soft error is a pending ICMP report about an
// earlier datagram, consumed by being returned: the message is tried once
// more, and a second failure is its own.
func (w *writer) sendmmsg(fd uintptr) bool {
	for w.sent < len(w.hs) {
		rest := w.hs[w.sent:]
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)),
			unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == 0 && r > 0:
			w.sent += int(r)
		case e == 0:
			w.err = unix.EIO // no progress without an error: never loop on it
			return true
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			return false
		case isSoftErrno(e) && w.softAt != w.sent:
			w.softAt = w.sent
			w.b.conn.soft.Add(1)
		default:
			w.err = e
			return true
		}
	}
	return true
}

// opError wraps a syscall error the way net wraps those of ReadFrom and
// WriteTo, so callers can treat both paths alike.
func (b *batcher) opError(op, call string, e syscall.Errno) error {
	la := b.conn.pc.LocalAddr()
	return &net.OpError{Op: op, Net: la.Network(), Source: la, Err: os.NewSyscallError(call, e)}
}
