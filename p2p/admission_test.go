package p2p

import (
	"net/netip"
	"testing"
	"time"
)

// TestAmpGuard: an address gets at most three times the bytes it sent;
// an address never heard from gets nothing; the table stays bounded under
// a flood of new (spoofed) sources that are all still fresh.
func TestAmpGuard(t *testing.T) {
	var g ampGuard
	now := time.Now()
	a := netip.MustParseAddrPort("198.51.100.1:4000")
	g.received(a, 100, now)
	if !g.allow(a, 300) || g.allow(a, 1) {
		t.Fatal("the 3x bound does not hold for one address")
	}
	if g.allow(netip.MustParseAddrPort("198.51.100.2:4000"), 1) {
		t.Fatal("an address never heard from may be sent to")
	}
	for i := range 3 * ampEntries {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), uint16(i))
		g.received(src, 64, now)
		if len(g.m) > ampEntries {
			t.Fatalf("%d entries after %d sources, bound %d", len(g.m), i+1, ampEntries)
		}
	}
}
