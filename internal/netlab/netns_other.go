//go:build !linux

package netlab

import "errors"

const supported = false

var errUnsupported = errors.New("netlab: network namespaces exist on Linux only")

func doInNetns(string, func() error) error { return errUnsupported }

func netnsID(string) (dev, ino uint64, err error) { return 0, 0, errUnsupported }

func flushConntrack() error { return errUnsupported }

func ipv6Ready() (bool, error) { return false, errUnsupported }
