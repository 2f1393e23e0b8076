package schemas_test

import (
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// htmlResult marshals to JSON that json.Marshal would leave spaced out
// and with HTML characters: the pooled writer must compact and escape it
// exactly as ResultReply does.
type htmlResult struct{}

func (htmlResult) MarshalJSON() ([]byte, error) { return []byte(` { "a" : "<b>&" } `), nil }

// TestWithResultReplyIsResultReply: the reused-buffer writer of every
// answer sends byte for byte what ResultReply returns, for results small
// and large, one after another (a buffer is reused), and refuses what
// ResultReply refuses without sending anything.
func TestWithResultReplyIsResultReply(t *testing.T) {
	big := make([]string, 20_000) // past the pooled buffers' bound
	for i := range big {
		big[i] = "x<y>"
	}
	for _, res := range []any{
		schemas.PingResult{TownID: "A", AgentID: "a-1"},
		nil,
		map[string]any{"html": "<script>&</script>", "n": 1.5, "u": "\u2028"},
		htmlResult{},
		big,
		schemas.PingResult{TownID: "B"},
	} {
		want, err := schemas.ResultReply(res)
		require.NoError(t, err)
		var got []byte
		require.NoError(t, schemas.WithResultReply(res, func(b []byte) error {
			got = append([]byte(nil), b...)
			return nil
		}))
		require.Equal(t, string(want), string(got))
		var out any
		require.NoError(t, schemas.DecodeResult(got, &out))
	}
	sent := false
	err := schemas.WithResultReply(make(chan int), func([]byte) error { sent = true; return nil })
	require.Error(t, err)
	require.False(t, sent)
}

// TestValidateMethodParts: a method is checked part by part, with the
// whole method named in the error.
func TestValidateMethodParts(t *testing.T) {
	for _, ok := range []string{"ping", "bead.get", "a.b.c", "x_1-y.z"} {
		require.NoError(t, schemas.ValidateMethod(ok), ok)
	}
	for _, bad := range []string{"", ".", "bead.", ".get", "bead..get", "bead.g t", "bead.*", "a.>"} {
		err := schemas.ValidateMethod(bad)
		require.True(t, errors.Is(err, schemas.ErrInvalidID), "%q: %v", bad, err)
		if bad != "" {
			require.Contains(t, err.Error(), `method "`+bad+`"`)
		}
	}
}

// BenchmarkResultReply is the coordinator's encoding of a tool call's
// answer: ResultReply (a new slice each) against WithResultReply (a
// reused buffer), on ping's result.
func BenchmarkResultReply(b *testing.B) {
	res := schemas.PingResult{TownID: "bench"}
	b.Run("ResultReply", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := schemas.ResultReply(res); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("WithResultReply", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := schemas.WithResultReply(res, func([]byte) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecodeResult is the tool client's decoding of ping's answer.
func BenchmarkDecodeResult(b *testing.B) {
	data, err := schemas.ResultReply(schemas.PingResult{TownID: "bench"})
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		var out schemas.PingResult
		if err := schemas.DecodeResult(data, &out); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateMethod is the check every tool call's subject gets.
func BenchmarkValidateMethod(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := schemas.ValidateMethod("bead.get"); err != nil {
			b.Fatal(err)
		}
	}
}
