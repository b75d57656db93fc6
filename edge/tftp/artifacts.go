package tftp

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// ArtifactPrefix is the TFTP namespace of image artifacts:
// artifacts/<image>/<file>, the same path as over HTTP
// (http://EDGE/artifacts/<image>/<file>). One name for both transports lets a
// boot config name a kernel once and fetch it with whichever protocol the
// loader has (GRUB: (tftp)/artifacts/... or (http,EDGE)/artifacts/...), and
// the name is what the renderer and the operator know. Names by digest were
// the other choice: immutable, but a config would have to carry digests, and
// the site check (is this image assigned here?) would need a reverse index
// from digest to image; behind the name the digest is checked anyway.
//
// The prefix is reserved: with Images set, a boot-dir file under
// artifacts/ is never served.
const ArtifactPrefix = "artifacts/"

// LoaderPrefix is the TFTP namespace of boot loaders' files:
// loaders/<loader>/<file> (proto.LoaderPath), the name the DHCP answer
// gives as boot file and the same path as over HTTP. Reserved like
// ArtifactPrefix.
const LoaderPrefix = "loaders/"

// Images names the artifact an artifacts/<image>/<file> request asks for,
// or refuses it (bad name, unknown image, image not assigned at this site,
// no such file), and likewise a loaders/<loader>/<file> request: the same
// decisions as over HTTP. httpboot.Handler satisfies it.
type Images interface {
	ArtifactFor(image, file string) (proto.Artifact, error)
	LoaderFileFor(loader, file string) (proto.Artifact, error)
}

// VerifiedFiles opens an artifact's verified file, fetching it (once,
// shared with HTTP clients) and waiting for the digest check when it is not
// cached. edge/cache.Cache satisfies it.
type VerifiedFiles interface {
	Open(ctx context.Context, a proto.Artifact) (*os.File, error)
}

const reasonNotServed = "artifact not served"

// artifactWait is how long a request waits for an artifact being fetched:
// under the transfer's own patience (Timeout × Retries; a client gives up on
// a similar scale), since an answer after the client left reaches nobody and
// holds a transfer slot meanwhile.
func (s *Server) artifactWait() time.Duration {
	if s.cfg.ArtifactWait > 0 {
		return s.cfg.ArtifactWait
	}
	return s.cfg.Timeout * time.Duration(max(s.cfg.Retries-1, 1))
}

// isArtifact reports whether name is in the artifact or the loader
// namespace, splits it and says how to look it up; a name with a third
// level still counts (and is refused by the lookup).
func (s *Server) isArtifact(name string) (set, file string, lookup func(set, file string) (proto.Artifact, error), ok bool) {
	for _, ns := range []struct {
		prefix string
		lookup func(set, file string) (proto.Artifact, error)
	}{{ArtifactPrefix, s.cfg.Images.ArtifactFor}, {LoaderPrefix, s.cfg.Images.LoaderFileFor}} {
		if rest, ok := strings.CutPrefix(name, ns.prefix); ok {
			set, file, _ = strings.Cut(rest, "/")
			return set, file, ns.lookup, true
		}
	}
	return "", "", nil, false
}

// serveArtifact sends one image artifact. The OACK (tsize = the registered
// size, which the digest check holds the file to) goes out at once, so the
// client stops repeating its request; the first data block waits until the
// file is verified. A file that fails verification, or does not arrive in
// time, ends the transfer with an error packet before any of its bytes.
// begin records the transfer's start, once the artifact is known.
//
// A request with no options (RFC 1350 only) gets no OACK: it waits in
// silence, and the client's retransmitted RRQs each start a transfer of
// their own that waits too (the client keeps the first to answer). Boot
// firmware (PXE ROMs, iPXE, GRUB, OVMF) always asks with tsize or blksize.
func (s *Server) serveArtifact(t *transfer, name, set, file string, lookup func(set, file string) (proto.Artifact, error), fail func(string, error, uint16, string) error, begin func()) error {
	start := time.Now()
	remote := t.remote
	a, err := lookup(set, file)
	if err != nil {
		// The reason keys the rate-limited log: the sentinel the error
		// wraps (unknown image, not assigned here, ...), a message from
		// code, so each kind of refusal gets its own line.
		reason := reasonNotServed
		if u := errors.Unwrap(err); u != nil {
			reason = u.Error()
		}
		return fail(reason, err, codeNotFound, "file not found")
	}
	begin()
	t.size = a.Size
	ctx, cancel := context.WithTimeout(s.baseContext(), s.artifactWait())
	defer cancel()
	r := &verifiedReader{ctx: ctx, files: s.cfg.Cache, a: a}
	defer r.close()
	log := s.log.With("ip", remote.IP.String(), "file", name, "sha256", a.SHA256)
	n, err := t.send(modeReader(t.req.mode, r))
	ms := strconv.FormatInt(time.Since(start).Milliseconds(), 10)
	switch {
	case isSizeProbe(err):
		log.Debug("size probe", "duration_ms", ms)
		s.emit(proto.EventTFTPDone, remote.IP, map[string]string{"file": name, "bytes": "0", "duration_ms": ms, "probe": "true"})
		return nil
	case r.openErr != nil:
		// One line per failure: a digest mismatch here is worth an
		// operator's attention, unlike a client that hangs up.
		log.Error("artifact not sent: not verified", "duration_ms", ms, "err", r.openErr)
		s.emit(proto.EventTFTPError, remote.IP, map[string]string{"file": name, "bytes": "0", "duration_ms": ms,
			"sha256": a.SHA256, "error": r.openErr.Error()})
		return nil // send sent the client an error packet
	case err != nil:
		log.Warn("transfer failed", "bytes", n, "duration_ms", ms, "err", err)
		s.emit(proto.EventTFTPError, remote.IP, map[string]string{"file": name, "bytes": strconv.FormatInt(n, 10), "duration_ms": ms, "error": err.Error()})
		return nil
	}
	log.Info("sent", "bytes", n, "duration_ms", ms, "cache_wait_ms", r.waited.Milliseconds())
	s.emit(proto.EventTFTPDone, remote.IP, map[string]string{"file": name, "bytes": strconv.FormatInt(n, 10),
		"duration_ms": ms, "sha256": a.SHA256})
	return nil
}

// errNotAvailable is what the client is told when its artifact could not be
// verified in time: the reason (store, digest) is for the edge's log.
var errNotAvailable = errors.New("file not available: try again later")

// verifiedReader opens the verified file on the first Read, after the OACK
// went out.
type verifiedReader struct {
	ctx   context.Context
	files VerifiedFiles
	a     proto.Artifact

	once    sync.Once
	f       *os.File
	openErr error
	waited  time.Duration
}

func (r *verifiedReader) open() error {
	r.once.Do(func() {
		start := time.Now()
		r.f, r.openErr = r.files.Open(r.ctx, r.a)
		r.waited = time.Since(start)
	})
	return r.openErr
}

func (r *verifiedReader) Read(p []byte) (int, error) {
	if err := r.open(); err != nil {
		return 0, errNotAvailable
	}
	return r.f.Read(p)
}

func (r *verifiedReader) close() {
	if r.f != nil {
		r.f.Close()
	}
}
