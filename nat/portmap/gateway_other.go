//go:build !linux

package portmap

import (
	"fmt"
	"net/netip"
	"runtime"
)

func defaultGateway() (netip.Addr, error) {
	return netip.Addr{}, fmt.Errorf("%w: no default-route discovery on %s: set Config.Gateway", ErrNoGateway, runtime.GOOS)
}
