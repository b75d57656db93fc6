// Package httpcount wraps an http.ResponseWriter to count the body bytes
// it writes and remember the status, for the events and metrics of a file
// served (the edge's boot files and its artifact cache). ReadFrom passes
// through, so http.ServeContent keeps sendfile.
package httpcount

import (
	"io"
	"net/http"
)

// Writer counts what passes through its ResponseWriter.
type Writer struct {
	http.ResponseWriter
	Status int   // the status sent: the first WriteHeader's, 200 on a body without one, 0 before either
	N      int64 // body bytes written
	// SendFrom, if set, is offered every ReadFrom first: it may send r by
	// a way of its own (the cache sends a download in progress with
	// sendfile from its partial file) and says whether it did.
	SendFrom func(w http.ResponseWriter, r io.Reader) (n int64, sent bool, err error)
}

// WriteHeader records the first status.
func (cw *Writer) WriteHeader(code int) {
	if cw.Status == 0 {
		cw.Status = code
	}
	cw.ResponseWriter.WriteHeader(code)
}

func (cw *Writer) Write(p []byte) (int, error) {
	if cw.Status == 0 {
		cw.Status = http.StatusOK
	}
	n, err := cw.ResponseWriter.Write(p)
	cw.N += int64(n)
	return n, err
}

// ReadFrom sends r with SendFrom, else the ResponseWriter's own ReadFrom
// (sendfile for a file), else a copy.
func (cw *Writer) ReadFrom(r io.Reader) (int64, error) {
	if cw.Status == 0 {
		cw.Status = http.StatusOK
	}
	if cw.SendFrom != nil {
		if n, sent, err := cw.SendFrom(cw.ResponseWriter, r); sent {
			cw.N += n
			return n, err
		}
	}
	var n int64
	var err error
	if rf, ok := cw.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{cw.ResponseWriter}, r)
	}
	cw.N += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (cw *Writer) Unwrap() http.ResponseWriter { return cw.ResponseWriter }
