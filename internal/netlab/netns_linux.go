//go:build linux

package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const supported = true

// doInNetns runs f on a new goroutine locked to its OS thread, with that
// thread switched into the network namespace at path, and switches it back
// afterwards. f runs only after a check that the thread really is in the
// namespace (same nsfs inode), so nothing meant for a lab namespace can
// land in the root one. If switching back fails the goroutine ends with
// its thread still locked, and the Go runtime then ends that thread rather
// than reuse it. A panic in f is re-raised in the caller.
func doInNetns(path string, f func() error) error {
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netlab: open namespace %s: %w", path, err)
	}
	defer unix.Close(target)
	var want unix.Stat_t
	if err := unix.Fstat(target, &want); err != nil {
		return fmt.Errorf("netlab: stat namespace %s: %w", path, err)
	}

	type result struct {
		err      error
		panicked bool
		panicVal any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open(threadNetns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netlab: open own namespace: %w", err)}
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netlab: enter namespace %s: %w", path, err)}
			return
		}
		var res result
		var got unix.Stat_t
		if err := unix.Stat(threadNetns, &got); err != nil {
			res.err = fmt.Errorf("netlab: stat own namespace: %w", err)
		} else if got.Dev != want.Dev || got.Ino != want.Ino {
			res.err = fmt.Errorf("netlab: thread is not in namespace %s after setns", path)
		} else {
			func() {
				defer func() {
					if v := recover(); v != nil {
						res.panicked, res.panicVal = true, v
					}
				}()
				res.err = f()
			}()
		}
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Keep the thread locked: when this goroutine returns, the
			// runtime ends the thread instead of reusing it.
			res.err = errors.Join(res.err, fmt.Errorf("netlab: switch back from %s: %w", path, err))
			done <- res
			return
		}
		runtime.UnlockOSThread()
		done <- res
	}()
	r := <-done
	if r.panicked {
		panic(r.panicVal)
	}
	return r.err
}

// netnsID returns the identity (device, inode) of the namespace at path.
func netnsID(path string) (dev, ino uint64, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, err
	}
	return st.Dev, st.Ino, nil
}

// ipctnlMsgCtDelete is IPCTNL_MSG_CT_DELETE from linux/netfilter/nfnetlink_conntrack.h.
const ipctnlMsgCtDelete = 2

// flushConntrack deletes every conntrack entry of the calling thread's
// network namespace (a ctnetlink delete without a tuple is a flush; with
// nfgenmsg version 0 it covers every family). Call it inside doInNetns.
func flushConntrack() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netlab: ctnetlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlab: ctnetlink bind: %w", err)
	}
	tv := unix.NsecToTimeval((5 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("netlab: ctnetlink timeout: %w", err)
	}

	const seq = 1
	msg := make([]byte, unix.SizeofNlMsghdr+4) // nlmsghdr + nfgenmsg
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:6], unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtDelete)
	binary.NativeEndian.PutUint16(msg[6:8], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:12], seq)
	msg[16] = unix.AF_INET // nfgen_family
	msg[17] = unix.NFNETLINK_V0
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlab: ctnetlink send: %w", err)
	}

	buf := make([]byte, 8192)
	for range 16 { // the ack is the first message addressed to us; bound the wait anyway
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlab: ctnetlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlab: ctnetlink parse: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("netlab: ctnetlink: short ack")
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				return fmt.Errorf("netlab: conntrack flush: %w", syscall.Errno(-code))
			}
			return nil
		}
	}
	return errors.New("netlab: ctnetlink: no ack")
}

// ipv6Ready reports whether every interface of the calling thread's
// network namespace that has a global IPv6 address also has a link-local
// one, and none of its addresses is tentative. Until then the kernel
// silently sends no neighbour solicitations for datagrams the namespace
// forwards (they come from the link-local address), and retries only a
// second later. Call it inside doInNetns.
func ipv6Ready() (bool, error) {
	rib, err := syscall.NetlinkRIB(syscall.RTM_GETADDR, syscall.AF_INET6)
	if err != nil {
		return false, fmt.Errorf("netlab: address dump: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return false, fmt.Errorf("netlab: address dump: %w", err)
	}
	type state struct{ global, linkLocal, tentative bool }
	links := map[uint32]*state{}
	for _, m := range msgs {
		if m.Header.Type != syscall.RTM_NEWADDR || len(m.Data) < syscall.SizeofIfAddrmsg {
			continue
		}
		ifa := (*syscall.IfAddrmsg)(unsafe.Pointer(&m.Data[0]))
		s := links[ifa.Index]
		if s == nil {
			s = &state{}
			links[ifa.Index] = s
		}
		switch {
		case ifa.Flags&unix.IFA_F_TENTATIVE != 0:
			s.tentative = true
		case ifa.Scope == unix.RT_SCOPE_LINK:
			s.linkLocal = true
		case ifa.Scope == unix.RT_SCOPE_UNIVERSE:
			s.global = true
		}
	}
	for _, s := range links {
		if s.global && (!s.linkLocal || s.tentative) {
			return false, nil
		}
	}
	return true, nil
}
