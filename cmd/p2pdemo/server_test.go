package main

import (
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestRelayPolicyFlags: --relay-allow (repeated, comma-separated, bare
// IPs) and --relay-max-per-ip reach the embedded relay's configuration;
// bad values and their use with --external-turn are refused; the status
// line reports denied peers and quota refusals.
func TestRelayPolicyFlags(t *testing.T) {
	f, err := parseServerFlags([]string{"--listen", "127.0.0.1:0", "--relay-allow", "10.0.0.0/8, 192.168.1.7",
		"--relay-allow", "fd00::/8", "--relay-max-per-ip", "5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("fd00::/8")}
	cfg, _, _, err := embeddedTURN(f, netip.MustParseAddrPort("127.0.0.1:3478"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.AllowPeers, want) || cfg.MaxPerIP != 5 {
		t.Fatalf("relay config AllowPeers %v MaxPerIP %d", cfg.AllowPeers, cfg.MaxPerIP)
	}
	for _, args := range [][]string{
		{"--relay-allow", "10.0.0.0/33"},
		{"--relay-allow", "intranet"},
		{"--relay-max-per-ip", "-1"},
		{"--relay-allow", "10.0.0.0/8", "--external-turn", "turn:192.0.2.1:3478", "--turn-secret", "s"},
		{"--relay-max-per-ip", "3", "--external-turn", "turn:192.0.2.1:3478", "--turn-secret", "s"},
	} {
		if _, err := parseServerFlags(args, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}

	st, err := startServer(f)
	if err != nil {
		t.Fatal(err)
	}
	defer st.srv.Close()
	line := statusLine(st.srv)
	if !strings.Contains(line, "0 peers denied, 0 refused over quota (0 user, 0 IP, 0 full)") {
		t.Fatalf("status line %q", line)
	}
}
