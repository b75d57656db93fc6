package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func (s *Service) put(ctx context.Context, bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("coordinator: encode %s/%s: %w", bucket, key, err)
	}
	if _, err := s.kv[bucket].Put(ctx, key, data); err != nil {
		return fmt.Errorf("coordinator: write %s/%s: %w", bucket, key, err)
	}
	return nil
}

func (s *Service) get(ctx context.Context, bucket, key string, v any) (uint64, error) {
	e, err := s.read(ctx, bucket, key)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(e.value, v); err != nil {
		return 0, fmt.Errorf("coordinator: decode %s/%s: %w", bucket, key, err)
	}
	return e.rev, nil
}

// list reads every value of a bucket whose key matches filter, in key order.
// The keys come from STREAM.INFO, which the stream leader answers, and the
// values from read: both see every acknowledged write.
func list[T any](ctx context.Context, s *Service, bucket, filter string) ([]T, error) {
	st, err := s.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("coordinator: list %s: %w", bucket, err)
	}
	pre := "$KV." + bucket + "."
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(pre+filter))
	if err != nil {
		return nil, fmt.Errorf("coordinator: list %s: %w", bucket, err)
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subj, pre))
	}
	slices.Sort(keys)
	out := make([]T, 0, len(keys))
	for _, k := range keys {
		e, err := s.read(ctx, bucket, k)
		if errors.Is(err, ErrNotFound) {
			continue // deleted (a delete marker keeps its subject)
		}
		if err != nil {
			return nil, err
		}
		var v T
		if err := json.Unmarshal(e.value, &v); err != nil {
			return nil, fmt.Errorf("coordinator: decode %s/%s: %w", bucket, k, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// entry is one KV value as the stream leader has it.
type entry struct {
	value   []byte
	rev     uint64
	created time.Time
}

// read returns the latest value of key from the stream leader. On a
// replicated bucket a KV Get is a direct get that any replica may answer, and
// a replica may not have applied a write another coordinator has just had
// acknowledged; the rules must not decide on such a read. STREAM.MSG.GET is
// answered by the leader only.
func (s *Service) read(ctx context.Context, bucket, key string) (entry, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	m, err := s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return entry{}, fmt.Errorf("coordinator: read %s/%s: %w", bucket, key, err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Seq    uint64    `json:"seq"`
			Header []byte    `json:"hdrs"`
			Data   []byte    `json:"data"`
			Time   time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return entry{}, fmt.Errorf("coordinator: read %s/%s: %w", bucket, key, err)
	}
	if resp.Error != nil {
		if jetstream.ErrorCode(resp.Error.ErrCode) == jetstream.JSErrCodeMessageNotFound {
			return entry{}, ErrNotFound
		}
		return entry{}, fmt.Errorf("coordinator: read %s/%s: %s", bucket, key, resp.Error.Description)
	}
	if resp.Message == nil {
		return entry{}, fmt.Errorf("coordinator: read %s/%s: empty reply", bucket, key)
	}
	if op := kvOperation(resp.Message.Header); op == "DEL" || op == "PURGE" {
		return entry{}, ErrNotFound
	}
	return entry{value: resp.Message.Data, rev: resp.Message.Seq, created: resp.Message.Time}, nil
}

// kvOperation is the KV-Operation header of a stored message ("" for a put).
func kvOperation(hdr []byte) string {
	for _, line := range strings.Split(string(hdr), "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "KV-Operation") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
