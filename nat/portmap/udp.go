package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// retransmit is the wait after each send of a PCP or NAT-PMP request: RFC
// 6886 §3.1's schedule (250 ms, doubling), cut at four sends, 3.75 s in
// all. The gateway is one LAN hop away; RFC 6886's nine sends (64 s) or
// PCP's 3 s initial timeout (RFC 6887 §8.1.1) would keep a node waiting
// for a router that does not answer, when it should move on to the next
// protocol.
var retransmit = [...]time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}

// dialGateway opens a connected UDP socket to the gateway's port 5351:
// the kernel delivers only datagrams from that address and port, and
// reports ICMP port unreachable as ECONNREFUSED.
func (c *Client) dialGateway(ctx context.Context, gw netip.Addr) (net.Conn, error) {
	return c.dial(ctx, "udp4", netip.AddrPortFrom(gw, pcpPort).String())
}

// exchange sends req over conn on the retransmission schedule and hands
// each datagram read to parse until parse returns anything but errSkip.
// Skipped datagrams are counted in Stats.Dropped. It returns ctx's error
// when ctx ends (conn is closed then, which ends a blocked read), and
// ErrNoResponse when the schedule runs out or the gateway's port is
// unreachable.
func (c *Client) exchange(ctx context.Context, conn net.Conn, req []byte, parse func([]byte) error) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	buf := make([]byte, 1500)
	dropped := 0
	for _, wait := range retransmit {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := conn.Write(req); err != nil {
			return c.ioError(ctx, err)
		}
		deadline := time.Now().Add(wait)
		for {
			if err := conn.SetReadDeadline(deadline); err != nil {
				return c.ioError(ctx, err)
			}
			n, err := conn.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
					break // retransmit
				}
				return c.ioError(ctx, err)
			}
			err = parse(buf[:n])
			if errors.Is(err, errSkip) {
				dropped++
				c.dropped.Add(1)
				continue
			}
			return err
		}
	}
	if dropped > 0 {
		return fmt.Errorf("%w (%d datagrams dropped)", ErrNoResponse, dropped)
	}
	return ErrNoResponse
}

// ioError turns a socket error into the error exchange reports.
func (c *Client) ioError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w (port unreachable)", ErrNoResponse)
	}
	return err
}
