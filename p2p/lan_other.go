//go:build !unix

package p2p

import "net"

// setBroadcast does nothing here: beacons to 255.255.255.255 from a
// dual-stack socket may then fail, and are counted (NodeStats.LANErrors).
func setBroadcast(*net.UDPConn) error { return nil }
