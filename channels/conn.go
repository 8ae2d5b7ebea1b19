package channels

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// A Link carries a Conn's datagrams to the peer: an unreliable datagram path
// such as a UDP socket, an encrypted session or a test network.
type Link interface {
	// SendDatagrams sends each datagram. Datagram d's payload is
	// d[Headroom:], and cap(d) leaves Tailroom bytes after it; the Link may
	// write into both, for example to seal in place. The slices are reused
	// once SendDatagrams returns. Errors are counted, not retried: the Conn
	// treats what was not sent as lost.
	//
	// SendDatagrams is called with the Conn's write lock held, which keeps
	// datagrams in packet-number order and which every Conn method may wait
	// for with the Conn's state locked. So it must not call the Conn, nor
	// wait for anything that may itself be waiting for the Conn, such as a
	// mutex held by code that calls the Conn or by a Deliver callback; and
	// while it blocks, the Conn's methods block too.
	SendDatagrams(dgrams [][]byte) error
}

// Conn is the delivery engine for one peer: channels, reliability,
// fragmentation, coalescing, acknowledgements, loss recovery, congestion
// control, keepalives and stats over a Link. Incoming datagrams are handed
// to HandleDatagram; messages come out through Config.Deliver.
//
// Concurrency: every method is safe for concurrent use. The protocol state
// is guarded by mu and is only touched with it held: by Send and Flush on the
// caller's goroutine, by HandleDatagram on the reader's goroutine, and by the
// goroutine of its Timers (fire) for everything driven by time. Work is
// done inline on the calling goroutine rather than handed to a goroutine per
// packet. Datagrams built under mu are written after mu is released, under
// writeMu, which is taken before mu is released so writes leave in packet
// number order.
//
// Deliver is called with no lock held, so it may call the Conn and take
// locks of its own that callers of the Conn hold. HandleDatagram queues the
// messages it makes deliverable under mu; the call that finds no delivery
// under way becomes the deliverer and, with mu released, hands the queue
// to Deliver until it is empty, while other calls only add to it and
// return (as pion's handler notifiers do). So messages are delivered once
// each, in the order they became deliverable, one at a time, and a slow
// Deliver never holds up another reader's acknowledgements.
type Conn struct {
	// Immutable after New.
	cfg       Config
	link      Link
	fragSize  int // payload bytes of every fragment but the last
	maxUnrel  int // largest unreliable message
	bufSize   int // Headroom + MaxDatagramSize + Tailroom
	done      chan struct{}
	timers    *Timers // runs the Conn's timer work
	ownTimers bool    // timers is the Conn's own, ending with it

	// Guarded by timers.mu.
	timerAt time.Time // when timers runs the Conn's timer work next
	heapIdx int       // index in timers' heap; -1 when not in it

	writeMu sync.Mutex // serializes Link writes; taken with mu held, kept after

	mu sync.Mutex // guards everything below

	closed   bool
	closeErr error     // set once, before done is closed
	armed    time.Time // deadline timers runs the Conn's timer work at, or earlier

	// Sender.
	nextPN          uint64
	largestAcked    uint64
	hasAcked        bool
	history         sentHistory
	inFlight        int // bytes of ack-eliciting packets outstanding
	lastEliciting   time.Time
	lossTime        time.Time // earliest time-threshold loss, zero if none
	pktThreshold    uint64    // packets above a missing one that declare it lost
	reorderSteps    int       // time threshold is (8+reorderSteps)/8 RTT
	recoveryTrigger uint64    // packet whose loss began the current recovery
	hasTrigger      bool
	ptoCount        int
	probes          int // probe packets owed after a PTO
	rtt             rttStats
	cc              congestionController
	pacer           pacer
	sendChans       map[uint16]*sendChannel
	levels          []*level      // the scheduler: by Priority.Level, lowest first
	scheduled       int           // channels in levels
	unrel           fifo[*outMsg] // unreliable messages with unsent fragments
	retxCount       int           // entries in the channels' retx queues (stale ones too)
	newChans        int           // channels in levels with new data queued
	queuedBytes     int           // message bytes not yet acked (reliable) or sent (unreliable)
	busyChans       int           // send channels with queued bytes (admit's fair share)
	queuedMsgs      int
	unsentBytes     int // message bytes never sent, for Nagle
	unsentMsgs      int
	flushReq        bool
	nagleDeadline   time.Time
	peerMaxData     uint64 // receive window the peer gave us, as a cumulative limit
	sentCharge      uint64 // window taken by reliable messages sent
	creditBlocked   bool
	pendingPing     bool
	pendingMaxData  bool
	pendingClose    bool
	freeMsgs        []*outMsg
	msgSlab         []outMsg      // messages not yet handed out
	dataSlab        []byte        // small message buffers are carved from it
	queueWaiters    chan struct{} // closed when queue space frees; nil if none wait

	// Receiver.
	parser         packetParser
	ackScratch     []pnRange
	recv           recvHistory
	lastRecv       time.Time
	largestRecvAt  time.Time
	ackPending     bool
	ackDeadline    time.Time
	elicitingUnack int
	elicitingTotal uint64
	recvChans      map[uint16]*recvChannel
	charged        uint64   // window taken by reliable messages received
	released       uint64   // window given back as messages were delivered
	sentMaxData    uint64   // limit last carried by a MAX_DATA frame
	partials       []*rxMsg // unreliable messages under reassembly, oldest first
	partialBytes   int

	// Delivery queue: messages ready for Deliver, in order. It is bounded
	// by what the receive window and the reassembly budget already bound:
	// a reliable message queued while another call delivers keeps its
	// share of the receive window (heldCost) until it has been delivered,
	// so the peer cannot send more than the window while Deliver lags, and
	// unreliable messages queued meanwhile are dropped past
	// ReassemblyBytes (queuedUnrel), as unreliable data may be.
	deliveries  []Message
	spare       []Message // the deliverer's emptied slice, for reuse
	delivering  bool      // a HandleDatagram call is draining deliveries
	heldCost    uint64    // receive window of the reliable messages in deliveries
	queuedUnrel int       // bytes of unreliable messages in deliveries

	stats statCounters

	sendErrors atomic.Uint64
}

// sendChannel is a channel's sending state.
type sendChannel struct {
	id        uint16
	relSeq    uint64 // next reliable sequence number
	seqdSeq   uint64 // next sequenced (unreliable) sequence number
	unseqSeq  uint64 // next unsequenced message id (fragmented only)
	queue     fifo[*outMsg]
	retx      fifo[sentFrame] // its fragments declared lost, to send again
	scheduled bool            // in Conn.levels: it has new data or retransmissions
	prio      Priority
	deficit   int // bytes it may still send in its turn (appendLevel)
	// queuedBytes is this channel's share of Conn.queuedBytes (admit).
	queuedBytes int
}

// recvChannel is a channel's receiving state.
type recvChannel struct {
	nextRel  uint64            // next reliable sequence number to deliver
	pending  map[uint64]*rxMsg // reliable messages at or after nextRel not yet delivered
	nextSeqd uint64            // sequenced messages below this are stale
}

// New returns a Conn sending through link. Its timer work runs on
// Config.Timers or, when that is nil, on a goroutine of its own, which
// Close (or the Conn ending on its own) stops.
func New(link Link, cfg Config) (*Conn, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	fragSize := cfg.MaxDatagramSize - maxPacketHeader - ackReserve - maxMsgHeader
	maxUnrel := cfg.MaxUnreliableSize
	if maxUnrel == 0 {
		maxUnrel = fragSize
	}
	now := time.Now()
	c := &Conn{
		cfg:          cfg,
		link:         link,
		fragSize:     fragSize,
		maxUnrel:     maxUnrel,
		bufSize:      cfg.Headroom + cfg.MaxDatagramSize + cfg.Tailroom,
		done:         make(chan struct{}),
		timers:       cfg.Timers,
		heapIdx:      -1,
		lastRecv:     now,
		rtt:          newRTTStats(cfg.InitialRTT),
		cc:           newController(cfg.CongestionControl, cfg.MaxDatagramSize),
		pacer:        newPacer(cfg.MaxDatagramSize),
		sendChans:    make(map[uint16]*sendChannel),
		recvChans:    make(map[uint16]*recvChannel),
		peerMaxData:  initialPeerWindow,
		pktThreshold: initialPacketThreshold,
		reorderSteps: initialReorderSteps,
	}
	c.sentMaxData = uint64(cfg.ReceiveWindow)
	c.lastEliciting = now
	c.stats.init(now)
	if c.timers == nil {
		c.timers, c.ownTimers = NewTimers(), true
	}
	c.mu.Lock()
	c.armed = c.nextDeadlineLocked(now)
	c.timers.reset(c, c.armed)
	c.mu.Unlock()
	return c, nil
}

// initialPeerWindow is the receive window assumed before the peer's first
// acknowledgement says what it really is. Every valid ReceiveWindow is at
// least this large, so it is never an overrun.
const initialPeerWindow = 64 << 10

// ackReserve is room kept in every datagram for an ACK frame, so that a full
// fragment and an acknowledgement always travel together.
const ackReserve = 40

// Done is closed when the Conn has ended, by Close, by the peer, or by
// timeout; Err then says which.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the Conn is open, then ErrClosed, ErrPeerClosed or
// ErrTimeout. Every one of them matches net.ErrClosed.
// It takes no lock, so it may be called from anywhere, Deliver included.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.closeErr // written once, before done was closed
	default:
		return nil
	}
}

// AckOverdue is how long the oldest unacknowledged ack-eliciting packet
// (data or a keepalive) has waited beyond its probe timeout, the time by
// which its acknowledgement was due; 0 when nothing is overdue. A path
// watcher can take a growing figure as a sign the path broke, long before
// IdleTimeout ends the Conn: a continuous stream postpones probe timeouts
// and keeps packets in flight, so their count alone shows nothing.
func (c *Conn) AckOverdue() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := &c.history
	for i := range h.n {
		p := h.slot(i)
		if p.state == pktOutstanding && p.eliciting {
			return max(0, time.Since(p.sentAt)-c.rtt.pto(c.cfg.MaxAckDelay))
		}
	}
	return 0
}

// SmoothedRTT is the round-trip time estimate (0 before the first sample
// or InitialRTT).
func (c *Conn) SmoothedRTT() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rtt.smoothed
}

// ProbeNow is for a caller that has just moved the Conn to a new path: it
// sends a probe at once (the oldest unacknowledged reliable data, or a
// ping) and restarts the probe backoff, instead of waiting out a timeout
// that grew while the old path was dead.
func (c *Conn) ProbeNow() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	if c.inFlight > 0 {
		c.onPTOLocked()
	} else {
		c.pendingPing = true
	}
	c.ptoCount = 0
	b := c.buildLocked(now)
	c.armLocked(now)
	c.writeUnlock(b)
}

// Close tells the peer (best effort, one datagram) and ends the Conn: queued
// data is dropped, and no timer work runs for it once Close returns (its
// own timer goroutine, if it has one, has stopped). It is idempotent. It
// must not be called from the Link's SendDatagrams.
func (c *Conn) Close() error {
	c.mu.Lock()
	if !c.closed {
		now := time.Now()
		c.pendingClose = true
		b := c.buildLocked(now)
		c.closeLocked(ErrClosed)
		c.writeUnlock(b)
	} else {
		c.mu.Unlock()
	}
	c.timers.forget(c)
	if c.ownTimers {
		c.timers.Close()
	}
	return nil
}

// closeLocked ends the Conn with err. It never blocks.
func (c *Conn) closeLocked(err error) {
	if c.closed {
		return
	}
	c.closed = true
	c.closeErr = err
	close(c.done)
	c.retxCount, c.newChans = 0, 0
	c.unrel.reset()
	c.levels, c.scheduled = nil, 0
	c.sendChans = nil
	c.recvChans = nil
	c.partials = nil
	c.dropRecycledLocked()
	c.queuedBytes, c.queuedMsgs, c.unsentBytes, c.unsentMsgs, c.busyChans = 0, 0, 0, 0, 0
	c.signalQueueLocked()
	c.cfg.Logger.Debug("channels: closed", "err", err)
}

// Release gives back the receive window held by a reliable message of n
// bytes that Deliver handed over, when Config.ReleaseOnRead is set. Calls
// beyond what was delivered are ignored.
func (c *Conn) Release(n int) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	c.releaseWindow(msgCost(n))
	b := c.buildLocked(now)
	c.armLocked(now)
	c.writeUnlock(b)
}

// SetReceiveWindow grows the receive window to n bytes and tells the peer
// at once, from the Conn's timer goroutine (the caller may hold a lock of
// its own: nothing is written to the Link on its goroutine). A window can
// only grow: the peer may already use what it was given, so smaller values
// are ignored.
func (c *Conn) SetReceiveWindow(n int) {
	c.mu.Lock()
	if c.closed || n <= c.cfg.ReceiveWindow {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	c.cfg.ReceiveWindow = n
	c.pendingMaxData = true
	c.armLocked(now) // the timer goroutine sends the update at once
	c.mu.Unlock()
}

// dropRecycledLocked lets go of recycled messages and slabs, so an idle or
// closed Conn holds no memory for traffic it no longer has.
func (c *Conn) dropRecycledLocked() {
	c.freeMsgs, c.msgSlab, c.dataSlab = nil, nil, nil
	c.history.shrink()
}

// WaitSendQueue blocks until the send queue is at most half full, the Conn
// ends, or ctx is done. It lets a sender that got ErrQueueFull wait instead
// of spinning.
func (c *Conn) WaitSendQueue(ctx context.Context) error {
	return c.waitQueue(ctx, func() bool { return c.queuedBytes <= c.cfg.SendQueueBytes/2 })
}

// WaitChannelQueue blocks until a send on channel is likely to find room:
// the channel holds at most half of Config.ChannelQueueBytes, and the
// queue is at most half full or the channel holds under half its fair
// share; or the Conn ends, or ctx is done.
func (c *Conn) WaitChannelQueue(ctx context.Context, channel uint16) error {
	return c.waitQueue(ctx, func() bool {
		sc := c.sendChans[channel]
		if sc == nil {
			return true
		}
		busy := max(c.busyChans, 1)
		return sc.queuedBytes <= c.cfg.ChannelQueueBytes/2 &&
			(c.queuedBytes <= c.cfg.SendQueueBytes/2 || sc.queuedBytes < c.cfg.SendQueueBytes/(2*busy))
	})
}

// waitQueue waits until room (called with c.mu held) holds, the Conn
// ends, or ctx is done.
func (c *Conn) waitQueue(ctx context.Context, room func() bool) error {
	for {
		c.mu.Lock()
		if c.closed {
			err := c.closeErr
			c.mu.Unlock()
			return err
		}
		if room() {
			c.mu.Unlock()
			return nil
		}
		if c.queueWaiters == nil {
			c.queueWaiters = make(chan struct{})
		}
		ch := c.queueWaiters
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// signalQueueLocked wakes the queue's waiters when a message left it: each
// looks again at the room it waits for.
func (c *Conn) signalQueueLocked() {
	if c.queueWaiters != nil {
		close(c.queueWaiters)
		c.queueWaiters = nil
	}
}

// armLocked asks the Timers for the Conn's timer work sooner when its
// next deadline is earlier than the one asked for.
func (c *Conn) armLocked(now time.Time) {
	if d := c.nextDeadlineLocked(now); d.Before(c.armed) {
		c.armed = d
		c.timers.earlier(c, d)
	}
}

// writeUnlock releases mu and writes b, holding writeMu from before mu is
// released so datagrams leave in the order they were built.
func (c *Conn) writeUnlock(b *batch) {
	if b == nil {
		c.mu.Unlock()
		return
	}
	c.writeMu.Lock()
	c.mu.Unlock()
	if err := c.link.SendDatagrams(b.dgrams); err != nil {
		c.sendErrors.Add(1)
		c.cfg.Logger.Debug("channels: link send failed", "err", err)
	}
	c.writeMu.Unlock()
	putBatch(b)
}

// batch is a set of datagrams built under mu and written after it.
type batch struct {
	dgrams [][]byte
}

// maxBatch bounds the datagrams built per call, so one caller does not hold
// mu for long.
const maxBatch = 64

var batchPool = sync.Pool{New: func() any { return &batch{dgrams: make([][]byte, 0, maxBatch)} }}

func getBatch() *batch { return batchPool.Get().(*batch) }

// next returns an empty buffer of capacity size for the next datagram,
// reusing one left in the batch's backing array by an earlier use.
func (b *batch) next(size int) []byte {
	if n := len(b.dgrams); n < cap(b.dgrams) {
		if buf := b.dgrams[:n+1][n]; cap(buf) >= size {
			return buf[:0]
		}
	}
	return make([]byte, 0, size)
}

func putBatch(b *batch) {
	b.dgrams = b.dgrams[:0]
	batchPool.Put(b)
}
