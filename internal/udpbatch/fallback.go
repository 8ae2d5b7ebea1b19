package udpbatch

import (
	"net"
	"net/netip"
)

// maxDatagram is more than any UDP payload (65507 bytes over IPv4, 65527
// over IPv6 without jumbograms): a read into this much room is never
// truncated, so its length is the datagram's real length.
const maxDatagram = 1 << 16

// readOne reads one datagram with ReadFrom. ReadFrom silently truncates on
// most systems, so unless Buf is large enough for any datagram it reads into
// a scratch buffer and copies, which lets it report N and Truncated exactly
// as the batch path does.
func (c *Conn) readOne(m *Message) error {
	for {
		buf := m.Buf
		if len(buf) < maxDatagram {
			if c.scratch == nil {
				c.scratch = make([]byte, maxDatagram)
			}
			buf = c.scratch
		}
		n, src, err := c.readFrom(buf)
		if err != nil {
			if isSoftErr(err) {
				c.soft.Add(1)
				continue
			}
			return err
		}
		if len(m.Buf) < maxDatagram {
			copy(m.Buf, buf[:n])
		}
		m.N = n
		m.Truncated = n > len(m.Buf)
		m.Addr = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		return nil
	}
}

func (c *Conn) readFrom(buf []byte) (int, netip.AddrPort, error) {
	if c.udp != nil {
		return c.udp.ReadFromUDPAddrPort(buf)
	}
	n, a, err := c.pc.ReadFrom(buf)
	return n, addrPortOf(a), err
}

// writeOne sends one datagram with WriteTo. A soft error (a pending ICMP
// report about an earlier datagram, see isSoftErr) is counted and the
// datagram sent again once: the report is consumed by being returned, so a
// second failure is about this datagram.
func (c *Conn) writeOne(m *Message) error {
	dst, err := checkDest(c.fam, m.Addr)
	if err != nil {
		return err
	}
	err = c.writeTo(m.Buf, dst)
	if err != nil && isSoftErr(err) {
		c.soft.Add(1)
		err = c.writeTo(m.Buf, dst)
	}
	return err
}

func (c *Conn) writeTo(b []byte, dst netip.AddrPort) error {
	var err error
	if c.udp != nil {
		_, err = c.udp.WriteToUDPAddrPort(b, dst)
	} else {
		_, err = c.pc.WriteTo(b, net.UDPAddrFromAddrPort(dst))
	}
	return err
}
