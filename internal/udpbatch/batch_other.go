//go:build !linux

package udpbatch

// batcher is the recvmmsg/sendmmsg path, which exists on Linux only.
type batcher struct{ fam family }

// newBatcher reports that batching is unavailable, so New uses ReadFrom
// and WriteTo.
func newBatcher(*Conn) *batcher { return nil }

func (*batcher) read([]Message) (int, error)  { panic("udpbatch: no batch path") }
func (*batcher) write([]Message) (int, error) { panic("udpbatch: no batch path") }
