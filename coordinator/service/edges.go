package service

import (
	"context"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// RecordStatus stores an edge's heartbeat. The caller sets Name and Site
// from the heartbeat's subject, never from its body.
func (s *Service) RecordStatus(ctx context.Context, st proto.EdgeStatus) error {
	if err := proto.ValidEdgeName(st.Name); err != nil {
		return err
	}
	if err := proto.ValidSiteName(st.Site); err != nil {
		return err
	}
	return s.put(ctx, proto.BucketEdges, st.Name, st)
}

// ListEdges returns every edge's last heartbeat, flagged stale when it is
// older than three intervals.
func (s *Service) ListEdges(ctx context.Context) ([]proto.EdgeView, error) {
	sts, err := list[proto.EdgeStatus](ctx, s, proto.BucketEdges, ">")
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]proto.EdgeView, 0, len(sts))
	for _, st := range sts {
		iv := time.Duration(st.IntervalSecs) * time.Second
		if iv <= 0 {
			iv = 5 * time.Second
		}
		out = append(out, proto.EdgeView{EdgeStatus: st, Stale: now.Sub(st.Time) > 3*iv})
	}
	return out, nil
}
