// Package kvleader reads a KV key's latest value from its stream's leader.
//
// On a replicated bucket a KV Get is a direct get any replica may answer,
// and a replica may not have applied a write another coordinator has just
// had acknowledged. The coordinator's rules (uniqueness, compare-and-set,
// the identity registry) must not decide on such a read: STREAM.MSG.GET is
// answered by the leader only.
package kvleader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Entry is a key's latest value.
type Entry struct {
	Value    []byte
	Revision uint64
	Created  time.Time
}

// Get returns the latest value of key in bucket, or jetstream.ErrKeyNotFound
// when it has none or was deleted or purged.
func Get(ctx context.Context, nc *nats.Conn, bucket, key string) (Entry, error) {
	req, err := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	if err != nil {
		return Entry{}, fmt.Errorf("read %s/%s: %w", bucket, key, err)
	}
	m, err := request(ctx, nc, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return Entry{}, fmt.Errorf("read %s/%s: %w", bucket, key, err)
	}
	var resp struct {
		Error *struct {
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
		return Entry{}, fmt.Errorf("read %s/%s: %w", bucket, key, err)
	}
	switch {
	case resp.Error != nil && jetstream.ErrorCode(resp.Error.ErrCode) == jetstream.JSErrCodeMessageNotFound:
		return Entry{}, jetstream.ErrKeyNotFound
	case resp.Error != nil:
		return Entry{}, fmt.Errorf("read %s/%s: %s", bucket, key, resp.Error.Description)
	case resp.Message == nil:
		return Entry{}, fmt.Errorf("read %s/%s: empty reply", bucket, key)
	}
	if op := operation(resp.Message.Header); op == "DEL" || op == "PURGE" {
		return Entry{}, jetstream.ErrKeyNotFound
	}
	return Entry{Value: resp.Message.Data, Revision: resp.Message.Seq, Created: resp.Message.Time}, nil
}

// operation is the KV-Operation header of a stored message ("" for a put).
func operation(hdr []byte) string {
	for _, line := range strings.Split(string(hdr), "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "KV-Operation") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// noLeaderRetries bounds how often request asks again while nobody answers.
const noLeaderRetries = 8

// request asks the stream's leader. While a cluster elects one (a node
// restarted, a stream just created or moved) nobody answers and NATS says
// "no responders" at once: that is a moment, not an answer, so ask again
// a few times, backing off, within ctx.
func request(ctx context.Context, nc *nats.Conn, subject string, data []byte) (*nats.Msg, error) {
	wait := 50 * time.Millisecond
	for try := 0; ; try++ {
		m, err := nc.RequestWithContext(ctx, subject, data)
		if !errors.Is(err, nats.ErrNoResponders) || try == noLeaderRetries {
			return m, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}
