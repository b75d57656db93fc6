package tftp

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"sync"

	ptftp "github.com/pin/tftp/v3"
)

// What pin/tftp v3.2.0 already does with hostile requests, so that nothing
// here repeats it:
//
//   - It reads requests into a 516-byte buffer: a longer datagram (a 64 KiB
//     file name) is cut off, loses its NUL terminators and is dropped, as is
//     any request without the two NULs after name and mode.
//   - It drops blksize outside 512..65464 (0, 1, 70000) and clamps the rest
//     to the interface MTU; it never acknowledges timeout (0 or 9999) or
//     other options, so the client keeps its defaults.
//   - It echoes any non-zero tsize the client sends; read() replaces it with
//     the true size.
//   - It serves every mode but "netascii" as octet; checkMode refuses the
//     modes that are neither.
//
// Packets it drops reach the Hook (dropHook), which logs them rate-limited.

// Reasons of refusals and drops: they key the rate-limited log.
const (
	reasonMalformed  = "malformed request"
	reasonSocket     = "no socket for a transfer"
	reasonBusy       = "too many transfers"
	reasonMode       = "transfer mode"
	reasonBadPath    = "bad path"
	reasonNotFound   = "not found"
	reasonWrite      = "write request"
	maxModeInMessage = 32
)

// slots bounds transfers in flight, per client address and in all.
type slots struct {
	perClient, total int
	mu               sync.Mutex
	active           map[string]int // client IP -> transfers; entries at 0 are deleted
	n                int
}

// acquire takes a slot for ip, or refuses with the message for the client.
func (s *slots) acquire(ip string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[ip] >= s.perClient {
		return nil, fmt.Errorf("too many transfers from %s (at most %d at once): try again later", ip, s.perClient)
	}
	if s.n >= s.total {
		return nil, fmt.Errorf("server busy (%d transfers at once): try again later", s.total)
	}
	s.active[ip]++
	s.n++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.active[ip]--; s.active[ip] <= 0 {
				delete(s.active, ip)
			}
			s.n--
		})
	}, nil
}

// of reports the transfers in flight from ip (for tests).
func (s *slots) of(ip string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[ip]
}

// inFlight reports the transfers in flight (for tests).
func (s *slots) inFlight() (total, clients int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, len(s.active)
}

// checkMode refuses a read request whose mode is neither octet nor netascii
// (RFC 1350; "mail" is obsolete and means nothing to a read-only server).
// pin/tftp does not hand the mode to its handler, so it is read from the
// transfer's unexported field: pinned to pin/tftp v3.2.0, and
// TestHostileRequests fails if an upgrade renames it. If the mode cannot be
// read the request is served, as the library would: as octet.
func checkMode(rf io.ReaderFrom) error {
	mode, ok := requestMode(rf)
	if !ok || strings.EqualFold(mode, "octet") || mode == "netascii" {
		return nil
	}
	if len(mode) > maxModeInMessage {
		mode = mode[:maxModeInMessage] + "..."
	}
	return fmt.Errorf("transfer mode %q not supported: use octet or netascii", mode)
}

func requestMode(rf io.ReaderFrom) (string, bool) {
	v := reflect.ValueOf(rf)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return "", false
	}
	f := v.Elem().FieldByName("mode")
	if !f.IsValid() || f.Kind() != reflect.String {
		return "", false
	}
	return f.String(), true
}

// dropHook logs the packets pin/tftp drops before a transfer exists. The
// library also reports failed transfers here; read() has logged those.
type dropHook struct{ log *slog.Logger }

func (dropHook) OnSuccess(ptftp.TransferStats) {}

func (h dropHook) OnFailure(st ptftp.TransferStats, err error) {
	if st.Filename != "" || st.RemoteAddr != nil {
		return
	}
	reason := reasonMalformed
	if _, ok := errors.AsType[*net.OpError](err); ok {
		reason = reasonSocket // e.g. out of file descriptors
	}
	h.log.Warn("tftp: packet dropped", "reason", reason, "err", err)
}
