package portmap

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultGateway returns the next hop of the IPv4 default route with the
// lowest metric. On Linux it reads the calling thread's routing table
// (/proc/thread-self/net/route, else /proc/net/route); on other systems it
// returns ErrNoGateway, and Config.Gateway must be set.
func DefaultGateway() (netip.Addr, error) { return defaultGateway() }

// Route flags of /proc/net/route (linux/route.h).
const (
	rtfUp      = 0x1
	rtfGateway = 0x2
)

// parseProcRoute reads Linux's /proc/net/route: a header line, then per
// route Iface, Destination, Gateway, Flags, RefCnt, Use, Metric, Mask, ...
// with addresses as the hexadecimal of the kernel's network-order 32-bit
// value printed in host order.
func parseProcRoute(r io.Reader) (netip.Addr, error) {
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	var best netip.Addr
	bestMetric := -1
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || flags&(rtfUp|rtfGateway) != rtfUp|rtfGateway {
			continue
		}
		metric, err := strconv.Atoi(f[6])
		if err != nil {
			continue
		}
		raw, err := hex.DecodeString(f[2])
		if err != nil || len(raw) != 4 {
			continue
		}
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], binary.BigEndian.Uint32(raw))
		gw := netip.AddrFrom4(b)
		if gw.IsUnspecified() {
			continue
		}
		if bestMetric < 0 || metric < bestMetric {
			best, bestMetric = gw, metric
		}
	}
	if err := sc.Err(); err != nil {
		return netip.Addr{}, fmt.Errorf("portmap: reading the routing table: %w", err)
	}
	if !best.IsValid() {
		return netip.Addr{}, fmt.Errorf("%w: no IPv4 default route", ErrNoGateway)
	}
	return best, nil
}
