package portmap

import (
	"net/netip"
	"os"
)

func defaultGateway() (netip.Addr, error) {
	// thread-self: a thread switched into another network namespace
	// (setns) sees that namespace's routes; /proc/net is the process's.
	f, err := os.Open("/proc/thread-self/net/route")
	if err != nil {
		if f, err = os.Open("/proc/net/route"); err != nil {
			return netip.Addr{}, err
		}
	}
	defer f.Close()
	return parseProcRoute(f)
}
