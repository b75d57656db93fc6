package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Opcodes (RFC 1350, RFC 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// Error codes (RFC 1350, RFC 2347).
const (
	codeUndefined  = 0 // with a message: busy, rate-limited, timed out, not available
	codeNotFound   = 1
	codeAccess     = 2 // write requests
	codeIllegalOp  = 4 // a transfer mode other than octet or netascii
	codeUnknownTID = 5
	codeOptions    = 8 // a client aborting after the OACK (the UEFI size probe)
)

// maxRequest bounds a request datagram: RFC 2347 holds a request with its
// options to 512 bytes; 516 is what RFC 1350 servers read (opcode, 512, and
// slack), so nothing a real client sends is cut off. Anything longer is a
// hostile or broken sender and is dropped.
const maxRequest = 516

// option is one name, value pair of a request or an OACK. Names are
// lower-cased: RFC 2347 says they are case-insensitive.
type option struct{ name, value string }

// request is a parsed RRQ or WRQ.
type request struct {
	op       uint16
	filename string
	mode     string
	opts     []option // in the client's order; a name repeated keeps its first value
}

// opt returns the value of the named option and whether the client sent it.
func (r request) opt(name string) (string, bool) {
	for _, o := range r.opts {
		if o.name == name {
			return o.value, true
		}
	}
	return "", false
}

var errMalformed = errors.New("malformed request")

// parseRequest decodes a datagram sent to the server's port. Only RRQ and
// WRQ are requests there; everything else (a stray ACK, DATA, an unknown
// opcode) is an error the caller drops.
func parseRequest(b []byte) (request, error) {
	if len(b) > maxRequest {
		return request{}, fmt.Errorf("%w: %d bytes, more than %d", errMalformed, len(b), maxRequest)
	}
	if len(b) < 2 {
		return request{}, fmt.Errorf("%w: %d bytes", errMalformed, len(b))
	}
	op := binary.BigEndian.Uint16(b)
	if op != opRRQ && op != opWRQ {
		return request{}, fmt.Errorf("%w: opcode %d on the server port", errMalformed, op)
	}
	body := b[2:]
	// Every field ends with a NUL: a request whose last field does not was
	// cut off or forged.
	if len(body) == 0 || body[len(body)-1] != 0 {
		return request{}, fmt.Errorf("%w: fields not NUL-terminated", errMalformed)
	}
	fields := bytes.Split(body[:len(body)-1], []byte{0})
	if len(fields) < 2 {
		return request{}, fmt.Errorf("%w: no transfer mode", errMalformed)
	}
	r := request{op: op, filename: string(fields[0]), mode: string(fields[1])}
	// A dangling option name without a value is ignored, as an option the
	// server does not know would be.
	for i := 2; i+1 < len(fields); i += 2 {
		name := strings.ToLower(string(fields[i]))
		if _, dup := r.opt(name); dup {
			continue
		}
		r.opts = append(r.opts, option{name, string(fields[i+1])})
	}
	return r, nil
}

// packOACK appends an OACK with opts to b[:0].
func packOACK(b []byte, opts []option) []byte {
	b = append(b[:0], 0, opOACK)
	for _, o := range opts {
		b = append(append(b, o.name...), 0)
		b = append(append(b, o.value...), 0)
	}
	return b
}

// maxErrorMessage bounds the text of an error packet (it may quote the
// client's own input) so that the packet fits a 512-byte datagram.
const maxErrorMessage = 400

// packError builds an ERROR packet.
func packError(code uint16, msg string) []byte {
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	b := make([]byte, 0, 5+len(msg))
	b = append(b, 0, opERROR, byte(code>>8), byte(code))
	b = append(b, msg...)
	return append(b, 0)
}

// parseNumber reads an option value: ASCII digits only (no sign, no
// spaces), at most 9 of them; ok is false otherwise.
func parseNumber(s string) (n int, ok bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}
