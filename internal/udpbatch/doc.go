// Package udpbatch moves many UDP datagrams per system call without
// allocating per datagram. It is the socket layer under gamewire's p2p Node,
// which owns one UDP socket for every session, hole punch and relay path:
// at game packet rates the per-datagram cost of the socket layer is most of
// the networking cost, so a read loop must take a batch of datagrams from the
// kernel in one recvmmsg(2), and a flush must hand a batch to one
// sendmmsg(2), and neither may feed the garbage collector per datagram.
//
// On Linux, New uses recvmmsg and sendmmsg on the socket of a *net.UDPConn
// through its syscall.RawConn, so goroutines still park in the Go netpoller
// instead of blocking a thread, and deadlines and Close work as they do for
// the UDPConn. Source addresses come back as netip.AddrPort values decoded
// straight from the kernel's sockaddr storage, which this package keeps in
// arrays that are reused from call to call: a steady-state ReadBatch or
// WriteBatch allocates nothing. Elsewhere (other systems, or a PacketConn
// that is not a *net.UDPConn, such as a simulated network in tests) the same
// API moves one datagram per call with ReadFrom and WriteTo.
//
// # Why not golang.org/x/net/ipv4.PacketConn.ReadBatch
//
// x/net already wraps recvmmsg, but its internal/socket package returns each
// source address as a net.Addr: parseInetAddr allocates a net.IP and a
// *net.UDPAddr for every datagram received (internal/socket/sys_posix.go,
// called from mmsghdrs.unpack in mmsghdr_unix.go). That is two allocations
// per datagram on the hottest path of the process, which gamewire's design
// forbids. Its Message also carries [][]byte buffers and a net.Addr
// destination, so sending needs a *net.UDPAddr per peer kept alive by the
// caller. This package keeps x/net's approach to the syscalls (bound method
// values passed to RawConn.Read and Write, reusable header arrays) and
// replaces the address handling with netip.AddrPort.
//
// # Addresses
//
// A socket bound to an IPv4 address is AF_INET: it sends to IPv4 (or
// IPv4-mapped IPv6) destinations only, and WriteBatch reports
// ErrAddrFamily for a pure IPv6 destination. A socket bound to an IPv6
// address or to the wildcard (":0", and also "0.0.0.0" with network "udp",
// which Go opens dual-stack) is AF_INET6: IPv4 destinations are sent as
// IPv4-mapped addresses (::ffff:a.b.c.d) and IPv4 sources are returned
// unmapped, so a peer has the same netip.AddrPort whichever socket family
// saw it. An IPv6-only socket (network "udp6") cannot reach IPv4 peers:
// WriteBatch reports ErrAddrFamily on Linux, the system's error elsewhere.
//
// Link-local IPv6 zones round-trip: a received scope id becomes the
// interface name as the Addr's zone, and a destination's zone (an
// interface name or a decimal index) becomes the scope id. Interface names
// are cached per Conn, so an interface renamed while a Conn is open keeps
// its old name there.
//
// # Errors
//
// Reads skip and count (see Conn.SoftErrors) the errors that a UDP socket
// reports for ICMP messages about datagrams it sent earlier, such as
// ECONNREFUSED after sending to a closed port: they are not about the
// datagram being read and must not stop a read loop. Linux reports them on
// a connected socket, and on an unconnected one only when IP_RECVERR is set
// (the error queue that option fills is emptied too, as nothing else would
// read it). Windows would report port unreachable on every socket, but Go
// turns that off. A send that fails with such an error is counted and
// retried once, since the pending report it consumed was about an earlier
// datagram. Every other error, including net.ErrClosed after Close and
// os.ErrDeadlineExceeded after a deadline, is returned.
package udpbatch
