//go:build linux

package udpbatch

import (
	"net"
	"strconv"
	"sync"
)

// zoneCache maps IPv6 scope ids (interface indexes) to zone names and back.
// net.InterfaceByIndex and InterfaceByName allocate and read netlink, far
// too slow for every link-local datagram, so each answer is kept. Entries
// are never evicted: there are only as many as interfaces seen.
type zoneCache struct {
	mu    sync.RWMutex
	names map[uint32]string
	ids   map[string]uint32
}

// name returns the zone for a scope id: the interface name, or the index in
// decimal (which net and netip also accept) if the interface is unknown.
func (z *zoneCache) name(id uint32) string {
	z.mu.RLock()
	s, ok := z.names[id]
	z.mu.RUnlock()
	if ok {
		return s
	}
	s = strconv.FormatUint(uint64(id), 10)
	if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
		s = ifi.Name
	}
	z.store(id, s)
	return s
}

// index returns the scope id for a zone: a decimal index as is, else the
// index of the interface with that name.
func (z *zoneCache) index(zone string) (uint32, bool) {
	if id, ok := parseIndex(zone); ok {
		return id, true
	}
	z.mu.RLock()
	id, ok := z.ids[zone]
	z.mu.RUnlock()
	if ok {
		return id, true
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil || ifi.Index <= 0 {
		return 0, false
	}
	z.store(uint32(ifi.Index), zone)
	return uint32(ifi.Index), true
}

func (z *zoneCache) store(id uint32, name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.names == nil {
		z.names = make(map[uint32]string)
		z.ids = make(map[string]uint32)
	}
	z.names[id] = name
	z.ids[name] = id
}

// parseIndex parses a decimal interface index. Unlike strconv.ParseUint it
// does not allocate an error for the usual case, an interface name.
func parseIndex(s string) (uint32, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if n == 0 || n > 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}
