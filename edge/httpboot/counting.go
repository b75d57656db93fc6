package httpboot

import (
	"io"
	"net/http"
)

// countingWriter counts body bytes and remembers the status for the
// events of a boot file. ReadFrom passes through so that ServeContent
// keeps sendfile.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (cw *countingWriter) WriteHeader(code int) {
	if cw.status == 0 {
		cw.status = code
	}
	cw.ResponseWriter.WriteHeader(code)
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	if cw.status == 0 {
		cw.status = http.StatusOK
	}
	n, err := cw.ResponseWriter.Write(p)
	cw.n += int64(n)
	return n, err
}

func (cw *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if cw.status == 0 {
		cw.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := cw.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{cw.ResponseWriter}, r)
	}
	cw.n += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (cw *countingWriter) Unwrap() http.ResponseWriter { return cw.ResponseWriter }
