package web

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/coordinator/eventlog"
	"github.com/fleetboot/fleetboot/proto"
)

// eventsShown is how many events the events page shows: the last ones on
// load, then the newest as they come (older ones drop off the bottom).
const eventsShown = 100

// eventFilter is the events page's filters.
type eventFilter struct {
	Site, MAC, Kind string
	Errors          map[string]string
}

// parseEventFilter reads the filters, each error next to its field. A
// site admin sees only her site: her filter is her site, and asking for
// another is refused.
func parseEventFilter(v url.Values, u who) (eventFilter, EventQuery, int) {
	f := eventFilter{Site: strings.TrimSpace(v.Get("site")), MAC: strings.TrimSpace(v.Get("mac")), Kind: strings.TrimSpace(v.Get("kind")), Errors: map[string]string{}}
	code := http.StatusOK
	if own, ok := auth.VisibleSite(u.id); ok {
		if f.Site != "" && f.Site != own {
			f.Errors["site"] = fmt.Sprintf("you see only the events of site %s", own)
			code = http.StatusForbidden
		}
		f.Site = own
	} else if f.Site != "" {
		if err := proto.ValidSiteName(f.Site); err != nil {
			f.Errors["site"], code = err.Error(), http.StatusBadRequest
		}
	}
	var macs []string
	if f.MAC != "" {
		m, err := proto.ParseMAC(f.MAC)
		if err != nil {
			f.Errors["mac"], code = err.Error(), http.StatusBadRequest
		} else {
			f.MAC, macs = m, []string{m}
		}
	}
	if strings.ContainsAny(f.Kind, " \t<>\"'") || len(f.Kind) > 40 {
		f.Errors["kind"], code = "a kind is a word such as dhcp, tftp, script.served or artifact", http.StatusBadRequest
	}
	if len(f.Errors) > 0 {
		return f, EventQuery{}, code
	}
	subjects, err := eventlog.Subjects(f.Site, "", macs)
	if err != nil {
		f.Errors[""] = err.Error()
		return f, EventQuery{}, http.StatusBadRequest
	}
	return f, EventQuery{Subjects: subjects, Kind: f.Kind}, http.StatusOK
}

// values is the filters as a query string.
func (f eventFilter) values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"site": f.Site, "mac": f.MAC, "kind": f.Kind} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

// eventsPage lists the last events the person may see, newest first; its
// script then follows the stream from where the list ends.
func (h *Handler) eventsPage(w http.ResponseWriter, r *http.Request, u who) {
	f, q, code := parseEventFilter(r.URL.Query(), u)
	data := map[string]any{"Page": u.page("events"), "F": f, "Shown": eventsShown}
	if code == http.StatusOK {
		evs, after, err := h.cfg.Live.Last(r.Context(), q, eventsShown)
		if err != nil {
			h.fail(w, err)
			return
		}
		slices.Reverse(evs) // newest first
		v := f.values()
		v.Set("after", strconv.FormatUint(after, 10))
		data["Events"], data["Stream"] = evs, "/events/stream?"+v.Encode()
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	h.render(w, "events.html", data)
}

// eventsStream sends each new event as a table row, with its stream
// sequence as the event's id: a browser that reconnects says the last it
// got (Last-Event-ID) and misses nothing.
func (h *Handler) eventsStream(w http.ResponseWriter, r *http.Request, u who) {
	f, q, code := parseEventFilter(r.URL.Query(), u)
	if code != http.StatusOK {
		msg := ""
		for _, m := range f.Errors {
			msg = m
		}
		http.Error(w, "fleetboot: "+msg, code)
		return
	}
	q.After, _ = strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	q.After = max(q.After, lastEventID(r))
	var rows []SeqEvent
	h.serveStream(w, r, u, q, feed{
		batch: eventsStreamBatch,
		add: func(e SeqEvent) {
			rows = append(rows, e)
			if len(rows) > eventsShown { // a flood: the page shows only the newest anyway
				rows = rows[len(rows)-eventsShown:]
			}
		},
		out: func(bool) []sseMsg {
			msgs := make([]sseMsg, 0, len(rows))
			for _, e := range rows {
				var b bytes.Buffer
				if err := h.tmpl.ExecuteTemplate(&b, "eventrow", e); err != nil {
					h.cfg.Logger.Error("web panel: render an event", "err", err)
					continue
				}
				msgs = append(msgs, sseMsg{event: "event", id: strconv.FormatUint(e.Seq, 10), data: b.String()})
			}
			rows = rows[:0]
			return msgs
		},
	})
}
