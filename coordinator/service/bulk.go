package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// kvOp is one write of a bulk change: a put (or, del, a delete) of key in
// bucket with compare-and-set at rev (0: the key must hold no value).
type kvOp struct {
	bucket, key string
	value       []byte
	rev         uint64
	del         bool
}

// writeWindow is how many writes writeAsync keeps unacknowledged.
const writeWindow = 1024

// atomicBatch is the most messages one atomic batch may hold (the
// server's default limit).
const atomicBatch = 1000

// writeAll makes many compare-and-set writes. They go to each bucket in
// atomic batches of up to atomicBatch messages: the coordinator's
// JetStream fsyncs every write, and a batch is stored (and synced) as one,
// twenty times faster than the same writes one by one. A batch is all or
// nothing: if any write in it fails its compare-and-set, none is stored,
// and that batch's writes are made again one by one (writeAsync), so each
// op succeeds or fails on its own; errs[i] is op i's outcome.
func (s *Service) writeAll(ctx context.Context, ops []kvOp) []error {
	errs := make([]error, len(ops))
	byBucket := map[string][]int{}
	var order []string
	for i, op := range ops {
		if _, ok := byBucket[op.bucket]; !ok {
			order = append(order, op.bucket)
		}
		byBucket[op.bucket] = append(byBucket[op.bucket], i)
	}
	var retry []int
	for _, b := range order {
		idx := byBucket[b]
		for start := 0; start < len(idx); start += atomicBatch {
			batch := idx[start:min(start+atomicBatch, len(idx))]
			if err := s.writeBatch(ctx, ops, batch); err != nil {
				s.log.Debug("atomic batch refused; writing one by one", "bucket", b, "writes", len(batch), "err", err)
				retry = append(retry, batch...)
			}
		}
	}
	if len(retry) > 0 {
		sub := make([]kvOp, len(retry))
		for j, i := range retry {
			sub[j] = ops[i]
		}
		for j, err := range s.writeAsync(ctx, sub) {
			errs[retry[j]] = err
		}
	}
	return errs
}

// writeBatch publishes ops[idx] (all of one bucket) as one atomic batch and
// waits for its commit.
func (s *Service) writeBatch(ctx context.Context, ops []kvOp, idx []int) error {
	id := nuid.Next()
	nc := s.js.Conn()
	for n, i := range idx {
		op := ops[i]
		m := nats.NewMsg("$KV." + op.bucket + "." + op.key)
		m.Data = op.value
		if op.del {
			m.Header.Set("KV-Operation", "DEL")
		}
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(n+1))
		m.Header.Set("Nats-Expected-Last-Subject-Sequence", strconv.FormatUint(op.rev, 10))
		if n < len(idx)-1 {
			if err := nc.PublishMsg(m); err != nil {
				return err
			}
			continue
		}
		m.Header.Set("Nats-Batch-Commit", "1")
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		r, err := nc.RequestMsgWithContext(rctx, m)
		if err != nil {
			return err
		}
		var ack struct {
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
			Count int `json:"count"`
		}
		if err := json.Unmarshal(r.Data, &ack); err != nil {
			return err
		}
		if ack.Error != nil {
			return errors.New(ack.Error.Description)
		}
		if ack.Count != len(idx) {
			return fmt.Errorf("batch stored %d of %d writes", ack.Count, len(idx))
		}
	}
	return nil
}

// writeAsync makes the writes one by one, pipelined: published
// asynchronously, writeWindow acknowledgements outstanding at a time. A
// create refused because the key was deleted before (its delete marker is
// its last message) is retried the one-at-a-time way, which handles that.
func (s *Service) writeAsync(ctx context.Context, ops []kvOp) []error {
	errs := make([]error, len(ops))
	futs := make([]jetstream.PubAckFuture, writeWindow)
	for start := 0; start < len(ops); start += writeWindow {
		end := min(start+writeWindow, len(ops))
		for i := start; i < end; i++ {
			op := ops[i]
			m := nats.NewMsg("$KV." + op.bucket + "." + op.key)
			m.Data = op.value
			if op.del {
				m.Header.Set("KV-Operation", "DEL")
			}
			futs[i-start], errs[i] = s.js.PublishMsgAsync(m, jetstream.WithExpectLastSequencePerSubject(op.rev))
		}
		for i := start; i < end; i++ {
			f := futs[i-start]
			if errs[i] != nil || f == nil {
				continue
			}
			select {
			case <-f.Ok():
			case err := <-f.Err():
				errs[i] = err
			case <-ctx.Done():
				errs[i] = ctx.Err()
			}
			futs[i-start] = nil
		}
	}
	for i, op := range ops {
		if errs[i] != nil && op.rev == 0 && !op.del && casConflict(errs[i]) {
			_, errs[i] = s.kv[op.bucket].Create(ctx, op.key, op.value)
		}
	}
	return errs
}

// undoAll runs undo functions in reverse, on a context the request's end
// does not cancel.
func undoAll(undo []func(context.Context), ctx context.Context) {
	bg := context.WithoutCancel(ctx)
	for i := len(undo) - 1; i >= 0; i-- {
		undo[i](bg)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v) // hosts and index values always encode
	return b
}

func jsonUnmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("coordinator: decode: %w", err)
	}
	return nil
}
