package coordinator

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetboot/fleetboot/coordinator/web"
	"github.com/fleetboot/fleetboot/proto"
)

// statusRecorder is the part of the service heartbeats are stored through.
type statusRecorder interface {
	RecordStatus(ctx context.Context, st proto.EdgeStatus) error
}

// heartbeats stores each edge's last heartbeat under the edge and site its
// subject names: NATS permissions confine an edge credential to its own
// fleetboot.status.<site>.<edge>, but it writes the body itself, so a body
// naming another edge or site is dropped, never believed.
type heartbeats struct {
	svc  statusRecorder
	drop *slog.Logger // rate-limited (shared/ratelog): a credential flooding bad messages cannot flood the log
	// history, if set, keeps each edge's hit ratio over the day for the
	// web panel (the edges bucket holds only the last heartbeat).
	history *web.EdgeHistory
}

func (h heartbeats) handle(ctx context.Context, m *nats.Msg) {
	site, edge, ok := proto.ParseStatusSubject(m.Subject)
	if !ok {
		h.drop.Warn("heartbeat on a malformed subject dropped", "subject", m.Subject)
		return
	}
	var st proto.EdgeStatus
	if err := json.Unmarshal(m.Data, &st); err != nil {
		h.drop.Warn("malformed heartbeat dropped", "subject", m.Subject, "err", err)
		return
	}
	if (st.Name != "" && st.Name != edge) || (st.Site != "" && st.Site != site) {
		h.drop.Warn("heartbeat whose body names another edge or site than its subject dropped",
			"subject", m.Subject, "body_edge", st.Name, "body_site", st.Site)
		return
	}
	st.Name, st.Site = edge, site
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := h.svc.RecordStatus(hctx, st); err != nil {
		h.drop.Warn("heartbeat not recorded", "edge", edge, "site", site, "err", err)
		return
	}
	h.history.Record(time.Now(), st)
}
