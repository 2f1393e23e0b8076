package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/cockroachdb/errors"
)

// Code is an RPC error code (PROTOCOL.md, RPC).
type Code string

// The RPC error codes.
const (
	CodeUnauthenticated   Code = "unauthenticated"
	CodePermissionDenied  Code = "permission_denied"
	CodeInvalidArgument   Code = "invalid_argument"
	CodeNotFound          Code = "not_found"
	CodeConflict          Code = "conflict"
	CodeResourceExhausted Code = "resource_exhausted"
	CodeUnavailable       Code = "unavailable"
	CodeInternal          Code = "internal"
)

// ErrorHeader carries the code of an error reply.
const ErrorHeader = "Gastown-Error"

// RetryAfterHeader carries, on a resource_exhausted or unavailable error
// reply, how many milliseconds to wait before trying again (an integer).
const RetryAfterHeader = "Gastown-Retry-After"

// RPC headers.
const (
	AuthorizationHeader = "Authorization"
	AgentIDHeader       = "Gastown-Agent-Id"
	RigIDHeader         = "Gastown-Rig-Id"
	BearerPrefix        = "Bearer "
)

// Sentinels, one per code, to match with errors.Is.
var (
	ErrUnauthenticated   = &Error{Code: CodeUnauthenticated}
	ErrPermissionDenied  = &Error{Code: CodePermissionDenied}
	ErrInvalidArgument   = &Error{Code: CodeInvalidArgument}
	ErrNotFound          = &Error{Code: CodeNotFound}
	ErrConflict          = &Error{Code: CodeConflict}
	ErrResourceExhausted = &Error{Code: CodeResourceExhausted}
	ErrUnavailable       = &Error{Code: CodeUnavailable}
	ErrInternal          = &Error{Code: CodeInternal}
)

var codes = map[Code]*Error{
	CodeUnauthenticated: ErrUnauthenticated, CodePermissionDenied: ErrPermissionDenied,
	CodeInvalidArgument: ErrInvalidArgument, CodeNotFound: ErrNotFound, CodeConflict: ErrConflict,
	CodeResourceExhausted: ErrResourceExhausted, CodeUnavailable: ErrUnavailable, CodeInternal: ErrInternal,
}

// Known reports whether c is one of the protocol's codes.
func (c Code) Known() bool { _, ok := codes[c]; return ok }

// Error is an error that crosses the wire. Its Message must never hold a
// token or a secret.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// RetryAfter is when to try again (zero: no hint). It travels in the
	// RetryAfterHeader, not in the body, so the body keeps its shape.
	RetryAfter time.Duration `json:"-"`
}

// NewError makes an error with a code and a message.
func NewError(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Exhausted makes a resource_exhausted error that says when to try again
// (zero: retrying will not help, e.g. a town at a storage cap).
func Exhausted(retryAfter time.Duration, format string, args ...any) *Error {
	e := NewError(CodeResourceExhausted, format, args...)
	e.RetryAfter = retryAfter
	return e
}

// RetryAfterOf is the retry hint err carries: its *Error's RetryAfter, or
// zero.
func RetryAfterOf(err error) time.Duration {
	if err == nil { // every call that succeeds asks
		return 0
	}
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// FormatRetryAfter is the RetryAfterHeader value of d: whole milliseconds,
// rounded up, so a hint under a millisecond is not lost.
func FormatRetryAfter(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10)
}

// maxRetryAfter bounds a hint read from the wire: an hour.
const maxRetryAfter = time.Hour

// ParseRetryAfter reads a RetryAfterHeader value: a non-negative integer
// of milliseconds, at most an hour. Anything else is no hint (false).
func ParseRetryAfter(v string) (time.Duration, bool) {
	if v == "" || len(v) > 7 {
		return 0, false
	}
	var ms int64
	for _, r := range v {
		if r < '0' || r > '9' {
			return 0, false
		}
		ms = ms*10 + int64(r-'0')
	}
	d := time.Duration(ms) * time.Millisecond
	if d > maxRetryAfter {
		return 0, false
	}
	return d, true
}

// WithRetryAfter is err, an *Error as DecodeReply returns it, with the
// retry hint read from the reply's RetryAfterHeader value. Any other err,
// or a value that is not a hint, is returned as it is.
func WithRetryAfter(err error, header string) error {
	d, ok := ParseRetryAfter(header)
	e, isWire := err.(*Error)
	if !ok || !isWire {
		return err
	}
	cp := *e
	cp.RetryAfter = d
	return &cp
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Is matches any *Error with the same code, so errors.Is(err,
// ErrUnauthenticated) holds for every unauthenticated error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// CodeOf returns the code of err: its *Error's, unauthenticated for invalid
// token claims, invalid_argument for invalid identifiers and messages, and
// internal otherwise.
func CodeOf(err error) Code {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, ErrInvalidClaims):
		// Before the identifier check: a token whose townId claim is bad is
		// a bad token (unauthenticated), not a bad argument.
		return CodeUnauthenticated
	case errors.Is(err, ErrInvalidID), errors.Is(err, ErrInvalidMessage):
		return CodeInvalidArgument
	}
	return CodeInternal
}

// Reply is the envelope of every RPC reply: a result or an error.
type Reply struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// ErrInvalidReply marks a reply that is neither a result nor a known error.
var ErrInvalidReply = errors.New("invalid reply")

// DecodeReply parses a reply. A well-formed error reply is returned as its
// *Error; a malformed one as ErrInvalidReply.
func DecodeReply(data []byte) (json.RawMessage, error) {
	if len(data) > MaxBodySize {
		return nil, errors.Mark(errors.Newf("reply is %d bytes; at most %d are allowed", len(data), MaxBodySize), ErrInvalidReply)
	}
	var r Reply
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, errors.Mark(errors.Wrap(err, "decoding reply"), ErrInvalidReply)
	}
	if r.Error != nil {
		if !r.Error.Code.Known() {
			return nil, errors.Mark(errors.Newf("reply has unknown error code %q", r.Error.Code), ErrInvalidReply)
		}
		return nil, r.Error
	}
	if r.Result == nil {
		return nil, errors.Mark(errors.New("reply has neither result nor error"), ErrInvalidReply)
	}
	return r.Result, nil
}

// resultPrefix and resultSuffix wrap a result into its Reply: the envelope
// ResultReply writes, which DecodeResult reads in one pass.
const (
	resultPrefix = `{"result":`
	resultSuffix = `}`
)

// ResultReply marshals a result into a Reply. It writes the envelope
// around the result's JSON itself: marshalling a Reply would scan and copy
// the result a second time, on every RPC.
func ResultReply(result any) ([]byte, error) {
	b, err := json.Marshal(result)
	if err != nil {
		return nil, errors.Wrap(err, "encoding result")
	}
	out := make([]byte, 0, len(resultPrefix)+len(b)+len(resultSuffix))
	out = append(append(append(out, resultPrefix...), b...), resultSuffix...)
	return out, nil
}

// DecodeResult decodes a Reply's result into out (when not nil), or
// returns the reply's error as DecodeReply does. A reply in exactly the
// shape ResultReply writes is decoded in one pass; anything else (an
// error, other spacing, extra fields) takes DecodeReply's path.
func DecodeResult(data []byte, out any) error {
	if out != nil && len(data) <= MaxBodySize && len(data) > len(resultPrefix)+len(resultSuffix) &&
		bytes.HasPrefix(data, []byte(resultPrefix)) && bytes.HasSuffix(data, []byte(resultSuffix)) {
		// Unmarshal checks the whole input is valid JSON before it decodes
		// anything: on a syntax error out is untouched, and the general
		// path decides (`{"result":1,"error":{…}}` is one).
		err := json.Unmarshal(data[len(resultPrefix):len(data)-len(resultSuffix)], out)
		if err == nil {
			return nil
		}
		var syntax *json.SyntaxError
		if !errors.As(err, &syntax) {
			return errors.Wrap(err, "decoding result")
		}
	}
	res, err := DecodeReply(data)
	if err != nil || out == nil {
		return err
	}
	return errors.Wrap(json.Unmarshal(res, out), "decoding result")
}

// ErrorReply marshals an error into a Reply.
func ErrorReply(e *Error) []byte {
	b, _ := json.Marshal(Reply{Error: e}) // two strings cannot fail to marshal
	return b
}
