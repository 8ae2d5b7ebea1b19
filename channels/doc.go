// Package channels is gamewire's delivery engine between two endpoints over
// an unreliable datagram path. It knows nothing of sockets, NAT or crypto:
// datagrams leave through a Link and arrive through Conn.HandleDatagram, so
// package p2p can wrap it with encryption and any path.
//
// A Conn gives each of 65536 channels (state created on first use):
//
//   - reliable ordered delivery (Reliable): exactly once, in order per
//     channel; a message held up by loss on one channel never delays
//     another, and channels take turns on the wire so a large transfer on
//     one does not hold up small messages on the others;
//   - unreliable sequenced delivery (Unreliable, the zero Flags): may be
//     lost, never delivered after a newer one on the same channel;
//   - unsequenced delivery (Unreliable|Unsequenced): may be lost or
//     reordered, never duplicated.
//
// Reliable messages up to Config.MaxReliableSize (1 MiB by default) are cut
// into fragments that fit the datagram size and put back together.
// Unreliable messages fit one datagram unless Config.MaxUnreliableSize allows
// more (up to 64 KiB); such a message is dropped whole if a fragment is lost.
// Small messages share datagrams: without FlushHint a message waits up to
// Config.NagleDelay (5 ms) for company or until a datagram is full; FlushHint
// and Conn.Flush send what is queued at once.
//
// Datagrams are acknowledged selectively with ranges, piggybacked on data
// and otherwise delayed at most Config.MaxAckDelay. Loss is detected as RFC
// 9002 does (packet and time thresholds, probe timeout with exponential
// backoff); the thresholds widen when reordering shows a declared loss was
// spurious, and the window cut it caused is undone. Only reliable data is
// sent again. Room left in a datagram that carries new data is filled with
// one more copy of small reliable fragments sent within the last RTT and not
// yet acknowledged, so a single lost datagram of a 60 Hz stream costs one
// send interval rather than a round trip (Config.NoRedundancy turns it off).
// Packets are paced.
// The send rate follows BBR by default (Config.CongestionControl): it paces
// at the bottleneck bandwidth it measures, sends more to make up for part
// of the random loss it sees in rounds whose packets met no queue, and
// ends Startup and its bandwidth probes on loss far above that rate.
// Through a 2 MB/s bottleneck that loses a fifth of the packets after it,
// a bulk transfer keeps two thirds of the bottleneck's rate, where CUBIC
// (RFC 9438, with RFC 9002's recovery rules, on request) keeps 2 %
// (TestBulkGoodputUnderLoss).
//
// What goes into each datagram: unreliable messages first, oldest first
// (they are worth sending only within Config.UnreliableMaxWait), then
// reliable data by channel Priority, as GameNetworkingSockets' lanes do:
// levels in strict order, and the channels of one level by deficit round
// robin in bytes, weighted, each channel's retransmissions before its new
// data. With no priorities set every channel gets an equal share, so a
// bulk transfer or a backlog of losses on one channel never holds up
// another (Config.ChannelPriority, Conn.SetChannelPriority).
//
// Memory is bounded: the send queue (Config.SendQueueBytes; Send returns
// ErrQueueFull past it to a channel holding its fair share, so one
// channel's backlog never refuses another's sends; twice the bound at
// most, and Config.ChannelQueueBytes per channel), the reliable data a peer may have outstanding here
// (Config.ReceiveWindow, which the peer is told and must respect: datagrams
// beyond it are dropped unacknowledged), partial unreliable messages
// (Config.ReassemblyBytes), and the packet-number history. A peer that goes
// silent for Config.IdleTimeout ends the Conn with ErrTimeout; an idle Conn
// pings every Config.KeepaliveInterval to keep the path and the RTT fresh.
//
// # Callbacks and locks
//
// Every Conn method is safe for concurrent use, and HandleDatagram may be
// called by several readers at once (a socket and a relay, say). Messages
// come out through Config.Deliver, which is called with no lock of the Conn
// held; it may call any Conn method, and may take a lock that other code
// holds while it calls the Conn. Deliver calls never overlap: they come
// one at a time, in order, each message once, on the goroutine of a
// HandleDatagram call (the first that found no delivery under way; the
// others queue their messages for it and return without waiting).
// Link.SendDatagrams is the exception: the Conn calls it holding its write
// lock, which keeps datagrams in order and which the Conn's methods may
// wait for, so it must not call the Conn nor wait for a lock held by code
// that does. The same holds for the handler of Config.Logger.
// Send, Flush, Close and HandleDatagram may write to the Link on the
// caller's goroutine; Queue and SetReceiveWindow never do (the Conn's
// timer goroutine sends what they asked for), so a caller may use them
// while holding a lock its Link's writes must not run under.
//
// # Wire format
//
// Integers marked varint use QUIC's variable-length encoding (RFC 9000 §16):
// the two high bits of the first byte give the length, 00 = 1 byte (6-bit
// value), 01 = 2 bytes (14 bits), 10 = 4 bytes (30 bits), 11 = 8 bytes (62
// bits), big-endian.
//
// Every datagram is a header and one or more frames:
//
//	byte 0      10LLrrrr   10: fixed, so the first byte is in 0x80–0xBF
//	                       LL: packet number length minus one (1–4 bytes)
//	                       rrrr: reserved, zero (a datagram with any set is dropped)
//	bytes 1..   packet number, LL+1 bytes, big-endian: a number that grows by
//	            one per datagram from 0. In 1–3 bytes it is the whole number
//	            (below 2^7, 2^15, 2^23); in 4 bytes it is the whole number
//	            below 2^31, else its low 32 bits, which the receiver extends
//	            to the value nearest the largest received (RFC 9000 A.3)
//	then        frames, to the end of the datagram
//
// Each frame starts with a type byte:
//
//	0x01 PING      no fields; asks for an acknowledgement
//
//	0x02 ACK       varint largest acknowledged packet number
//	               varint ack delay, in units of 8 µs
//	               varint receive window: the cumulative reliable-data limit
//	                      (sum of message costs, see below) the sender may reach
//	               varint extra range count N (at most 63)
//	               varint first range: packets largest-first .. largest are received
//	               N × { varint gap, varint range length } as in RFC 9000 §19.3.1:
//	                      the next range ends gap+2 below the previous start and
//	                      covers range length+1 packets
//
//	0x03 MAX_DATA  varint receive window, as in ACK; sent when the window
//	               grew enough that a blocked sender should hear at once
//
//	0x04 CLOSE     varint code (0); the sender has closed the connection
//
//	0x10–0x1B MSG  type bits 0001FLKK:
//	                 KK: kind, the Reliable and Unsequenced flags:
//	                     00 sequenced, 01 reliable, 10 unsequenced (11 invalid)
//	                 F:  fragment fields present
//	                 L:  length field present; without it the data runs to
//	                     the end of the datagram
//	               varint channel (0–65535)
//	               varint sequence number: per channel and kind, from 0;
//	                      omitted for unsequenced messages that are not fragmented
//	               if F: varint total message length
//	                     varint fragment size: length of every fragment but the
//	                            last (at least 64)
//	                     varint fragment index, from 0; fragment i holds bytes
//	                            [i×size, min((i+1)×size, total)) of the message
//	               if L: varint data length
//	               data
//
// PING, MAX_DATA and MSG frames make a datagram ack-eliciting; such
// datagrams count against the congestion window. ACK and CLOSE do not.
//
// Flow control: a reliable message costs its length plus 64 bytes. The
// sender charges a message's whole cost when it first sends any part of it
// and never lets the total charged exceed the receiver's window limit (64
// KiB is assumed until the first ACK says otherwise). The receiver charges a
// message when it first sees any part of it, drops without acknowledging any
// datagram that would take it past the limit it grants, and raises the limit
// as it delivers messages.
//
// Example, a datagram with packet number 5 carrying one reliable message
// "hi" on channel 3 with sequence number 0, data to the end:
//
//	80 05 11 03 00 68 69
package channels
