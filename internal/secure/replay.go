package secure

import "math"

// RejectAfterMessages is the first counter that is never sealed nor
// accepted, as WireGuard's RejectAfterMessages: 2^64 − 2^13 − 1. Counters
// stop well short of 2^64 so that no nonce can ever wrap around.
const rejectAfterMessages uint64 = math.MaxUint64 - (1 << 13) - 1

// Replay window geometry (RFC 6479): a ring of 64-bit blocks, one bit per
// counter. One block is kept as slack so that advancing the window can
// clear whole blocks, which leaves ReplayWindow usable counters.
const (
	replayBlockBits  = 64
	replayBlockShift = 6 // log2(replayBlockBits)
	replayRingBlocks = 128
	replayBlockMask  = replayRingBlocks - 1

	// ReplayWindow is how far behind the highest counter received a data
	// packet may arrive and still be accepted (once).
	replayWindow = (replayRingBlocks - 1) * replayBlockBits // 8128
)

// replayFilter remembers which counters were received within ReplayWindow
// of the highest one. The zero value is ready (nothing received). It is not
// safe for concurrent use; Keypair guards it with a mutex. 1 KiB.
type replayFilter struct {
	top  uint64 // highest counter accepted so far (0 before any)
	ring [replayRingBlocks]uint64
}

// fresh reports, without changing anything, whether ctr would be accepted.
func (f *replayFilter) fresh(ctr uint64) bool {
	if ctr >= rejectAfterMessages {
		return false
	}
	if ctr > f.top {
		return true
	}
	if f.top-ctr >= replayWindow {
		return false
	}
	return f.ring[(ctr>>replayBlockShift)&replayBlockMask]&(1<<(ctr&(replayBlockBits-1))) == 0
}

// accept records ctr and reports whether it was fresh. Call it only for
// packets that authenticated, so forged counters cannot move the window.
func (f *replayFilter) accept(ctr uint64) bool {
	if ctr >= rejectAfterMessages {
		return false
	}
	if ctr > f.top {
		f.advance(ctr)
	} else if f.top-ctr >= replayWindow {
		return false
	}
	blk := &f.ring[(ctr>>replayBlockShift)&replayBlockMask]
	bit := uint64(1) << (ctr & (replayBlockBits - 1))
	if *blk&bit != 0 {
		return false
	}
	*blk |= bit
	return true
}

// advance moves the top to ctr, clearing the blocks it enters: they held
// counters a whole ring older, now outside the window.
func (f *replayFilter) advance(ctr uint64) {
	from := f.top >> replayBlockShift
	to := ctr >> replayBlockShift
	if to-from > replayRingBlocks {
		from = to - replayRingBlocks
	}
	for b := from + 1; b <= to; b++ {
		f.ring[b&replayBlockMask] = 0
	}
	f.top = ctr
}
