//go:build linux && race

package udpbatch

import (
	"runtime"
	"unsafe"
)

// The race detector does not see the kernel read and write buffers in
// recvmmsg and sendmmsg, so tell it, as x/net's internal/socket does: a
// caller touching a buffer concurrently with ReadBatch or WriteBatch is
// then reported.

func raceRead(b []byte) {
	if len(b) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(unsafe.SliceData(b)), len(b))
	}
}

func raceWrite(b []byte) {
	if len(b) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(unsafe.SliceData(b)), len(b))
	}
}
