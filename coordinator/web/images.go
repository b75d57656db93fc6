package web

import (
	"cmp"
	"net/http"
	"slices"
	"strings"

	"github.com/fleetboot/fleetboot/proto"
)

// imageRow is an image as the images page lists it.
type imageRow struct {
	proto.Image
	Size   int64 // of its files
	Follow int   // hosts that boot its current revision
	Pinned int   // hosts pinned to one of its revisions (NAME@N)
}

// usesOf counts the hosts u may see by the image they name (NAME or NAME@N).
func (h *Handler) usesOf(r *http.Request, u who) (map[string]int, error) {
	return h.countHosts(r, u, func(host proto.Host) string { return host.Image })
}

func (h *Handler) images(w http.ResponseWriter, r *http.Request, u who) {
	var images []proto.Image
	if err := h.call(r, u, proto.APIImageList, proto.ListRequest{V: proto.Version}, &images); err != nil {
		h.fail(w, err)
		return
	}
	uses, err := h.usesOf(r, u)
	if err != nil {
		h.fail(w, err)
		return
	}
	rows := make([]imageRow, 0, len(images))
	for _, im := range images {
		row := imageRow{Image: im, Size: imageSize(im)}
		for ref, n := range uses {
			name, rev, err := proto.ParseImageRef(ref)
			switch {
			case err != nil || name != im.Name:
			case rev == 0:
				row.Follow += n
			default:
				row.Pinned += n
			}
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b imageRow) int { return cmp.Compare(a.Name, b.Name) })
	h.render(w, "images.html", map[string]any{"Page": u.page("images"), "Images": rows})
}

// pinnedUse is how many hosts are pinned to one revision.
type pinnedUse struct {
	Ref   string
	Hosts int
}

// imageData is what the image page shows.
func (h *Handler) imageData(r *http.Request, u who, name string) (map[string]any, error) {
	var im proto.Image
	if err := h.call(r, u, proto.APIImageGet, proto.NameRequest{V: proto.Version, Name: name}, &im); err != nil {
		return nil, err
	}
	var hist proto.ImageHistory
	if err := h.call(r, u, proto.APIImageHistory, proto.NameRequest{V: proto.Version, Name: name}, &hist); err != nil {
		return nil, err
	}
	uses, err := h.usesOf(r, u)
	if err != nil {
		return nil, err
	}
	follow := uses[name]
	var pinned []pinnedUse
	for ref, n := range uses {
		if img, rev, err := proto.ParseImageRef(ref); err == nil && img == name && rev > 0 {
			pinned = append(pinned, pinnedUse{ref, n})
		}
	}
	slices.SortFunc(pinned, func(a, b pinnedUse) int { return strings.Compare(a.Ref, b.Ref) })
	revs := slices.Clone(hist.Revisions)
	slices.Reverse(revs) // newest first
	// The rollback goes to the newest revision before the current one.
	prev := 0
	for _, rv := range hist.Revisions {
		if rv.CurrentRevision() < hist.Current {
			prev = max(prev, rv.CurrentRevision())
		}
	}
	return map[string]any{"Page": u.page("image " + name), "Image": im, "Size": imageSize(im), "Revisions": revs, "Current": hist.Current,
		"Follow": follow, "Pinned": pinned, "Prev": prev, "Admin": u.isAdmin()}, nil
}

func (h *Handler) image(w http.ResponseWriter, r *http.Request, u who) {
	name := r.PathValue("name")
	if err := proto.ValidName("image", name); err != nil {
		badRequest(w, err)
		return
	}
	data, err := h.imageData(r, u, name)
	if err != nil {
		h.fail(w, err)
		return
	}
	data["RolledBack"] = r.URL.Query().Get("rolledback") == "1"
	h.render(w, "image.html", data)
}

// imageRollback makes the revision before the current one current again,
// as `fleetboot image rollback NAME`.
func (h *Handler) imageRollback(w http.ResponseWriter, r *http.Request, u who) {
	name := r.PathValue("name")
	if err := proto.ValidName("image", name); err != nil {
		badRequest(w, err)
		return
	}
	err := h.call(r, u, proto.APIImageRollback, proto.NameRequest{V: proto.Version, Name: name}, nil)
	if err == nil {
		h.cfg.Logger.Info("web panel: image rolled back", "who", u.id.Name, "image", name)
		http.Redirect(w, r, "/images/"+name+"?rolledback=1", http.StatusSeeOther)
		return
	}
	code := statusOf(err)
	if code != http.StatusConflict && code != http.StatusBadRequest {
		h.fail(w, err)
		return
	}
	data, derr := h.imageData(r, u, name)
	if derr != nil {
		h.fail(w, derr)
		return
	}
	data["Problem"] = err.Error()
	h.renderStatus(w, code, "image.html", data)
}
