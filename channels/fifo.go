package channels

// fifo is a queue that reuses its backing array, so a queue that fills and
// drains all the time does not allocate. It lets go of a large array once
// emptied, so a burst does not pin memory. The zero value is empty.
type fifo[T any] struct {
	buf  []T
	head int
}

// fifoKeepCap is the largest backing array kept once a queue is empty.
const fifoKeepCap = 1024

func (q *fifo[T]) len() int { return len(q.buf) - q.head }

func (q *fifo[T]) push(v T) {
	// Slide live entries to the front when at least half the array is
	// spent, instead of growing it.
	if len(q.buf) == cap(q.buf) && q.head >= len(q.buf)/2 && q.head > 0 {
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, v)
}

// peek returns the oldest entry; the queue must not be empty.
func (q *fifo[T]) peek() T { return q.buf[q.head] }

// pop removes and returns the oldest entry; the queue must not be empty.
func (q *fifo[T]) pop() T {
	var zero T
	v := q.buf[q.head]
	q.buf[q.head] = zero
	q.head++
	if q.head == len(q.buf) {
		q.buf, q.head = q.buf[:0], 0
		if cap(q.buf) > fifoKeepCap {
			q.buf = nil
		}
	}
	return v
}

// reset empties the queue and drops its array.
func (q *fifo[T]) reset() { q.buf, q.head = nil, 0 }
