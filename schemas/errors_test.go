package schemas_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

var allCodes = []struct {
	code     schemas.Code
	sentinel *schemas.Error
	wire     string
}{
	{schemas.CodeUnauthenticated, schemas.ErrUnauthenticated, "unauthenticated"},
	{schemas.CodePermissionDenied, schemas.ErrPermissionDenied, "permission_denied"},
	{schemas.CodeInvalidArgument, schemas.ErrInvalidArgument, "invalid_argument"},
	{schemas.CodeNotFound, schemas.ErrNotFound, "not_found"},
	{schemas.CodeConflict, schemas.ErrConflict, "conflict"},
	{schemas.CodeResourceExhausted, schemas.ErrResourceExhausted, "resource_exhausted"},
	{schemas.CodeUnavailable, schemas.ErrUnavailable, "unavailable"},
	{schemas.CodeInternal, schemas.ErrInternal, "internal"},
}

func TestCodesMatchProtocol(t *testing.T) {
	for _, c := range allCodes {
		t.Run(c.wire, func(t *testing.T) {
			require.Equal(t, c.wire, string(c.code))
			require.True(t, c.code.Known())
		})
	}
	for _, c := range []schemas.Code{"", "NOT_FOUND", "ok", "unknown"} {
		t.Run("unknown "+string(c), func(t *testing.T) { require.False(t, c.Known()) })
	}
	require.Equal(t, "Gastown-Error", schemas.ErrorHeader)
	require.Equal(t, "Gastown-Retry-After", schemas.RetryAfterHeader)
	require.Equal(t, "Authorization", schemas.AuthorizationHeader)
	require.Equal(t, "Gastown-Agent-Id", schemas.AgentIDHeader)
	require.Equal(t, "Gastown-Rig-Id", schemas.RigIDHeader)
	require.Equal(t, "Bearer ", schemas.BearerPrefix)
}

func TestErrorIsMatchesCodeOnly(t *testing.T) {
	for _, c := range allCodes {
		t.Run(c.wire, func(t *testing.T) {
			err := schemas.NewError(c.code, "bead %s is gone", "b-1")
			require.Equal(t, c.wire+": bead b-1 is gone", err.Error())
			wrapped := errors.Wrap(err, "handling bead.get")
			for _, other := range allCodes {
				want := other.code == c.code
				require.Equal(t, want, errors.Is(err, other.sentinel), "%s is %s", c.code, other.code)
				require.Equal(t, want, errors.Is(wrapped, other.sentinel), "wrapped %s is %s", c.code, other.code)
			}
			require.Equal(t, c.code, schemas.CodeOf(err))
			require.Equal(t, c.code, schemas.CodeOf(wrapped))
		})
	}
	require.Equal(t, "not_found", schemas.NewError(schemas.CodeNotFound, "").Error())
}

func TestCodeOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want schemas.Code
	}{
		{"nil", nil, ""},
		{"plain error", errors.New("boom"), schemas.CodeInternal},
		{"invalid id", schemas.ValidateID("townId", "a.b"), schemas.CodeInvalidArgument},
		{"invalid message", schemas.Decode([]byte("x"), &schemas.Ack{}), schemas.CodeInvalidArgument},
		{"invalid claims", errors.Mark(errors.New("bad"), schemas.ErrInvalidClaims), schemas.CodeUnauthenticated},
		{"wrapped wire error", errors.Wrap(schemas.NewError(schemas.CodeConflict, "stale run"), "x"), schemas.CodeConflict},
		{"invalid reply", errors.Mark(errors.New("x"), schemas.ErrInvalidReply), schemas.CodeInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, schemas.CodeOf(tc.err))
		})
	}
}

func TestDecodeReply(t *testing.T) {
	t.Run("result", func(t *testing.T) {
		r, err := schemas.DecodeReply([]byte(`{"result":{"beadId":"b-1","n":2}}`))
		require.NoError(t, err)
		require.JSONEq(t, `{"beadId":"b-1","n":2}`, string(r))
	})
	t.Run("null result is a result", func(t *testing.T) {
		r, err := schemas.DecodeReply([]byte(`{"result":null}`))
		require.NoError(t, err)
		require.Equal(t, "null", string(r))
	})
	t.Run("unknown fields are ignored", func(t *testing.T) {
		r, err := schemas.DecodeReply([]byte(`{"result":1,"trace":"x"}`))
		require.NoError(t, err)
		require.Equal(t, "1", string(r))
	})
	for _, c := range allCodes {
		t.Run("error "+c.wire, func(t *testing.T) {
			r, err := schemas.DecodeReply([]byte(`{"error":{"code":"` + c.wire + `","message":"nope"}}`))
			require.Nil(t, r)
			require.True(t, errors.Is(err, c.sentinel), "%v", err)
			require.False(t, errors.Is(err, schemas.ErrInvalidReply))
			var e *schemas.Error
			require.True(t, errors.As(err, &e))
			require.Equal(t, "nope", e.Message)
			require.Equal(t, c.code, schemas.CodeOf(err))
		})
	}
	t.Run("error wins over result", func(t *testing.T) {
		_, err := schemas.DecodeReply([]byte(`{"result":1,"error":{"code":"conflict","message":"stale"}}`))
		require.True(t, errors.Is(err, schemas.ErrConflict), "%v", err)
	})
	for _, tc := range []struct{ name, body string }{
		{"unknown code", `{"error":{"code":"teapot","message":"x"}}`},
		{"empty code", `{"error":{"message":"x"}}`},
		{"neither", `{}`},
		{"null", `null`},
		{"only unknown fields", `{"status":"ok"}`},
		{"not json", `hello`},
		{"empty", ``},
		{"array", `[{"result":1}]`},
		{"error not an object", `{"error":"boom"}`},
		{"too big", `{"result":"` + strings.Repeat("x", schemas.MaxBodySize) + `"}`},
	} {
		t.Run("invalid/"+tc.name, func(t *testing.T) {
			r, err := schemas.DecodeReply([]byte(tc.body))
			require.Nil(t, r)
			require.True(t, errors.Is(err, schemas.ErrInvalidReply), "%v", err)
			var e *schemas.Error
			require.False(t, errors.As(err, &e), "a malformed reply is not a wire error")
		})
	}
}

func TestReplyRoundTrip(t *testing.T) {
	t.Run("result", func(t *testing.T) {
		type res struct {
			BeadID string   `json:"beadId"`
			Tags   []string `json:"tags"`
		}
		b, err := schemas.ResultReply(res{BeadID: "b-1", Tags: []string{"x"}})
		require.NoError(t, err)
		require.JSONEq(t, `{"result":{"beadId":"b-1","tags":["x"]}}`, string(b))
		raw, err := schemas.DecodeReply(b)
		require.NoError(t, err)
		var got res
		require.NoError(t, json.Unmarshal(raw, &got))
		require.Equal(t, res{BeadID: "b-1", Tags: []string{"x"}}, got)
	})
	t.Run("nil result", func(t *testing.T) {
		b, err := schemas.ResultReply(nil)
		require.NoError(t, err)
		raw, err := schemas.DecodeReply(b)
		require.NoError(t, err)
		require.Equal(t, "null", string(raw))
	})
	t.Run("unencodable result", func(t *testing.T) {
		b, err := schemas.ResultReply(make(chan int))
		require.Error(t, err)
		require.Nil(t, b)
	})
	for _, c := range allCodes {
		t.Run("error "+c.wire, func(t *testing.T) {
			sent := schemas.NewError(c.code, "it said \"no\" <%d>", 7)
			b := schemas.ErrorReply(sent)
			var wire map[string]map[string]string
			require.NoError(t, json.Unmarshal(b, &wire))
			require.Equal(t, map[string]map[string]string{"error": {"code": c.wire, "message": `it said "no" <7>`}}, wire)
			_, err := schemas.DecodeReply(b)
			var got *schemas.Error
			require.True(t, errors.As(err, &got))
			require.Equal(t, sent, got)
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Run("header values", func(t *testing.T) {
		for _, tc := range []struct {
			in   string
			want time.Duration
			ok   bool
		}{
			{"0", 0, true},
			{"1", time.Millisecond, true},
			{"1500", 1500 * time.Millisecond, true},
			{"3600000", time.Hour, true},
			{"3600001", 0, false}, // over an hour
			{"", 0, false},
			{"-1", 0, false},
			{"1.5", 0, false},
			{"1s", 0, false},
			{" 1", 0, false},
			{"99999999999999999999", 0, false},
		} {
			d, ok := schemas.ParseRetryAfter(tc.in)
			require.Equal(t, tc.ok, ok, "%q", tc.in)
			require.Equal(t, tc.want, d, "%q", tc.in)
		}
	})
	t.Run("formatted in whole milliseconds, rounded up", func(t *testing.T) {
		require.Equal(t, "0", schemas.FormatRetryAfter(0))
		require.Equal(t, "1", schemas.FormatRetryAfter(time.Microsecond))
		require.Equal(t, "20", schemas.FormatRetryAfter(20*time.Millisecond))
		require.Equal(t, "21", schemas.FormatRetryAfter(20*time.Millisecond+time.Nanosecond))
		d, ok := schemas.ParseRetryAfter(schemas.FormatRetryAfter(1234 * time.Millisecond))
		require.True(t, ok)
		require.Equal(t, 1234*time.Millisecond, d)
	})
	t.Run("the hint is not in the body", func(t *testing.T) {
		e := schemas.Exhausted(2*time.Second, "town %s is over its rate", "A")
		require.ErrorIs(t, e, schemas.ErrResourceExhausted)
		require.Equal(t, 2*time.Second, schemas.RetryAfterOf(errors.Wrap(e, "calling")))
		var wire map[string]map[string]string
		require.NoError(t, json.Unmarshal(schemas.ErrorReply(e), &wire))
		require.Equal(t, map[string]map[string]string{"error": {"code": "resource_exhausted", "message": "town A is over its rate"}}, wire)
	})
	t.Run("recovered from the header", func(t *testing.T) {
		body := schemas.ErrorReply(schemas.Exhausted(time.Second, "slow down"))
		err := schemas.WithRetryAfter(schemas.DecodeResult(body, nil), "250")
		require.ErrorIs(t, err, schemas.ErrResourceExhausted)
		require.Equal(t, 250*time.Millisecond, schemas.RetryAfterOf(err))
		require.Zero(t, schemas.RetryAfterOf(schemas.WithRetryAfter(schemas.DecodeResult(body, nil), "soon")), "a bad value is no hint")
		plain := errors.New("not a wire error")
		require.Equal(t, plain, schemas.WithRetryAfter(plain, "250"))
		require.Zero(t, schemas.RetryAfterOf(schemas.ErrResourceExhausted), "the sentinel is never changed")
	})
}

func TestAckErr(t *testing.T) {
	require.NoError(t, (&schemas.Ack{OK: true}).Err())
	err := (&schemas.Ack{Code: schemas.CodeResourceExhausted, Error: "too many"}).Err()
	require.ErrorIs(t, err, schemas.ErrResourceExhausted)
	require.Equal(t, "resource_exhausted: too many", err.Error())
	require.ErrorIs(t, (&schemas.Ack{Error: "old sender"}).Err(), schemas.ErrInternal, "an ack without a code")
}
