package events

import "context"

// WaitDrained returns nil once every event emitted so far has been sent (or
// dropped), or ctx's error when it ends first. It wakes on each
// acknowledgement rather than polling, for a stop that waits for the buffer.
func (r *Recorder) WaitDrained(ctx context.Context) error {
	for {
		r.mu.Lock()
		left, acks := r.nextSeq-1-r.acked, r.acks
		r.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-acks:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
