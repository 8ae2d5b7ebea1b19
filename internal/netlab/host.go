package netlab

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"time"
)

// Host is a machine of the lab: a network namespace with one interface
// (NAT routers have two or more). Its methods create sockets inside that
// namespace; a socket stays in the namespace it was made in for good, so
// the rest of the program uses it like any other.
type Host struct {
	Name      string     // e.g. "server", "home-h1", "home-nat"
	Namespace string     // network namespace name (`ip netns exec <Namespace> ...`)
	IP        netip.Addr // IPv4: LAN address; public for the server, NATNone hosts and a router's WAN side; invalid for IPv6Only hosts
	// IP6 is the host's global IPv6 address (a router's: its WAN side's),
	// invalid without IPv6 (Options.IPv6 and SiteConfig.IPv6).
	IP6 netip.Addr
}

// dialTimeout bounds Dial (a TCP SYN into a dropping NAT would otherwise
// wait for the kernel's retries, about two minutes).
const dialTimeout = 10 * time.Second

// Do runs f with an OS thread switched into the host's network namespace
// and switches it back afterwards. f runs on a separate goroutine locked to
// that thread (runtime.LockOSThread) while the caller waits, so f must not
// call t.FailNow and friends; its panics are re-raised in the caller. If
// switching back fails the thread is not reused: the goroutine ends with
// the thread still locked, which makes the runtime end the thread. Sockets
// created inside f live in the namespace for good; goroutines f starts do
// not run in it.
func (h *Host) Do(f func() error) error { return doInNetns(nsPath(h.Namespace), f) }

// ListenUDP opens a UDP socket inside the namespace. laddr is "host:port";
// an empty host or an IPv4 host gives an IPv4-only ("udp4") socket, so
// addresses read from it are plain IPv4; an IPv6 host ("[::]:0",
// "[2001:db8:1::2]:0") gives an IPv6-only ("udp6") one. On a host with
// IPv6 and no IPv4 (IPv6Only) an empty host gives "udp6" too.
func (h *Host) ListenUDP(laddr string) (*net.UDPConn, error) {
	network := "udp4"
	if host, _, err := net.SplitHostPort(laddr); err == nil {
		if a, err := netip.ParseAddr(host); err == nil && a.Is6() && !a.Is4In6() {
			network = "udp6"
		} else if host == "" && !h.IP.IsValid() && h.IP6.IsValid() {
			network = "udp6"
		}
	}
	var c *net.UDPConn
	err := h.Do(func() error {
		ua, err := net.ResolveUDPAddr(network, laddr)
		if err != nil {
			return err
		}
		c, err = net.ListenUDP(network, ua)
		return err
	})
	return c, err
}

// ListenPacket is net.ListenPacket inside the namespace.
func (h *Host) ListenPacket(network, laddr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := h.Do(func() (err error) {
		c, err = net.ListenPacket(network, laddr)
		return err
	})
	return c, err
}

// Listen is net.Listen inside the namespace (TCP or Unix).
func (h *Host) Listen(network, laddr string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() (err error) {
		ln, err = net.Listen(network, laddr)
		return err
	})
	return ln, err
}

// Dial is net.Dial from inside the namespace, TCP or UDP, with a 10 s
// connect limit.
func (h *Host) Dial(network, raddr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	return h.DialContext(ctx, network, raddr)
}

// DialContext is (*net.Dialer).DialContext from inside the namespace. Use
// address literals: name resolution would run outside the namespace.
func (h *Host) DialContext(ctx context.Context, network, raddr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, raddr)
		return err
	})
	return c, err
}

// Command returns `ip netns exec <Namespace> name args...`: the command
// runs with its network namespace set to the host's. End it before
// Lab.Close.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	ip, err := tool("ip")
	if err != nil {
		ip = "ip"
	}
	return exec.CommandContext(ctx, ip, append([]string{"netns", "exec", h.Namespace, name}, args...)...)
}

// AddrPort returns the host's (IPv4) address with port.
func (h *Host) AddrPort(port uint16) netip.AddrPort { return netip.AddrPortFrom(h.IP, port) }

// AddrPort6 returns the host's IPv6 address with port (invalid without
// IPv6).
func (h *Host) AddrPort6(port uint16) netip.AddrPort { return netip.AddrPortFrom(h.IP6, port) }
