//go:build !linux

package udpbatch

import "net/netip"

// ttlControl: only Linux is known to take a per-datagram TTL on sendmsg
// for both families.
func ttlControl(netip.AddrPort, int) []byte { return nil }
