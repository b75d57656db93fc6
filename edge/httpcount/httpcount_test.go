package httpcount

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestWriter: the status is the first one sent (200 for a body without
// one) and every body byte is counted, by Write, by ReadFrom, and by a
// SendFrom that takes the reader.
func TestWriter(t *testing.T) {
	taken := func(w http.ResponseWriter, r io.Reader) (int64, bool, error) {
		sr, ok := r.(*strings.Reader)
		if !ok {
			return 0, false, nil
		}
		n, err := io.Copy(struct{ io.Writer }{w}, sr)
		return n, true, err
	}
	for _, tc := range []struct {
		name       string
		send       func(http.ResponseWriter, io.Reader) (int64, bool, error)
		serve      func(w *Writer)
		wantStatus int
		wantN      int64
		wantBody   string
	}{
		{"write", nil, func(w *Writer) { io.WriteString(w, "hello") }, 200, 5, "hello"},
		{"status first", nil, func(w *Writer) { w.WriteHeader(404); w.WriteHeader(500); io.WriteString(w, "no") }, 404, 2, "no"},
		{"read from", nil, func(w *Writer) { w.ReadFrom(strings.NewReader("abc")) }, 200, 3, "abc"},
		{"send from", taken, func(w *Writer) { w.ReadFrom(strings.NewReader("sent")) }, 200, 4, "sent"},
		{"send from declines", taken, func(w *Writer) { w.ReadFrom(io.LimitReader(strings.NewReader("copied"), 6)) }, 200, 6, "copied"},
		{"nothing", nil, func(w *Writer) {}, 0, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			w := &Writer{ResponseWriter: rec, SendFrom: tc.send}
			tc.serve(w)
			if w.Status != tc.wantStatus || w.N != tc.wantN || rec.Body.String() != tc.wantBody {
				t.Errorf("status %d, n %d, body %q; want %d, %d, %q", w.Status, w.N, rec.Body.String(), tc.wantStatus, tc.wantN, tc.wantBody)
			}
			if w.Unwrap() != rec {
				t.Error("Unwrap is not the wrapped writer")
			}
		})
	}
}
