package bus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gastown/gastown/clock"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
)

// lines is a slog handler keeping each line's message and attributes
// (package bus cannot use bustest.Records: bustest imports bus).
type lines struct {
	mu   *sync.Mutex
	recs *[]map[string]any
}

func newLines() (lines, *slog.Logger) {
	l := lines{mu: &sync.Mutex{}, recs: &[]map[string]any{}}
	return l, slog.New(l)
}

func (l lines) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelInfo }
func (l lines) Handle(_ context.Context, r slog.Record) error {
	m := map[string]any{"msg": r.Message, "level": r.Level}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.Any(); return true })
	l.mu.Lock()
	*l.recs = append(*l.recs, m)
	l.mu.Unlock()
	return nil
}
func (l lines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l lines) WithGroup(string) slog.Handler      { return l }

func (l lines) all() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]map[string]any(nil), *l.recs...)
}

// newFakeClock is a clock tests move by hand.
func newFakeClock() *clock.Manual { return clock.NewManual(time.Unix(1_000_000, 0)) }

// One line per key per interval; the next line written says how many
// were left out; keys do not hold each other back.
func TestRateLog(t *testing.T) {
	out, log := newLines()
	clk := newFakeClock()
	r := NewRateLog(log, time.Minute, clk.Now)
	ctx := context.Background()
	require.True(t, r.Log(ctx, slog.LevelInfo, "a", "refused", "n", 0))
	for i := range 999 {
		require.False(t, r.Log(ctx, slog.LevelInfo, "a", "refused", "n", i+1))
	}
	require.True(t, r.Log(ctx, slog.LevelWarn, "b", "other"), "another key has its own allowance")
	clk.Advance(time.Minute - time.Nanosecond)
	require.False(t, r.Log(ctx, slog.LevelInfo, "a", "refused", "n", 1000))
	clk.Advance(time.Nanosecond)
	require.True(t, r.Log(ctx, slog.LevelInfo, "a", "refused", "n", 1001))
	require.True(t, r.Log(ctx, slog.LevelWarn, "b", "other"))

	got := out.all()
	require.Len(t, got, 4)
	require.EqualValues(t, 0, got[0]["n"])
	require.NotContains(t, got[0], KeySuppressed, "nothing left out yet")
	require.NotContains(t, got[1], KeySuppressed)
	require.EqualValues(t, 1001, got[2]["n"])
	require.EqualValues(t, 1000, got[2][KeySuppressed], "every line left out is counted")
	require.NotContains(t, got[3], KeySuppressed)
}

// A line below the logger's level is neither written nor counted.
func TestRateLogDisabledLevel(t *testing.T) {
	out, log := newLines()
	r := NewRateLog(log, time.Minute, newFakeClock().Now)
	require.False(t, r.Log(context.Background(), slog.LevelDebug, "a", "debug"))
	require.True(t, r.Log(context.Background(), slog.LevelInfo, "a", "info"))
	require.Len(t, out.all(), 1)
}

// An interval of zero writes every line.
func TestRateLogUnlimited(t *testing.T) {
	out, log := newLines()
	r := NewRateLog(log, 0, nil)
	for range 10 {
		require.True(t, r.Log(context.Background(), slog.LevelInfo, "a", "x"))
	}
	require.Len(t, out.all(), 10)
}

// Keys past RateLogKeys share the overflow key, so lines with ever new
// keys neither grow memory nor the log.
func TestRateLogBoundedKeys(t *testing.T) {
	out, log := newLines()
	clk := newFakeClock()
	r := NewRateLog(log, time.Minute, clk.Now)
	for i := range 3 * RateLogKeys {
		r.Log(context.Background(), slog.LevelInfo, fmt.Sprint(i), "x")
	}
	require.Len(t, r.keys, RateLogKeys+1)
	require.Len(t, out.all(), RateLogKeys+1, "one line per key that fitted, one for the rest")
	// Once the keys may write again and have nothing to report, new keys
	// take their place.
	clk.Advance(time.Minute)
	require.True(t, r.Log(context.Background(), slog.LevelInfo, "new", "x"))
	require.Contains(t, r.keys, "new")
	require.LessOrEqual(t, len(r.keys), RateLogKeys+1)
}

// The caller's arguments are not written to.
func TestRateLogKeepsArgs(t *testing.T) {
	_, log := newLines()
	clk := newFakeClock()
	r := NewRateLog(log, time.Minute, clk.Now)
	r.Log(context.Background(), slog.LevelInfo, "a", "x")
	r.Log(context.Background(), slog.LevelInfo, "a", "x")
	clk.Advance(time.Minute)
	args := make([]any, 2, 4)
	args[0], args[1] = "k", "v"
	r.Log(context.Background(), slog.LevelInfo, "a", "x", args...)
	require.Equal(t, []any{"k", "v", nil, nil}, args[:4])
}

func TestConnLine(t *testing.T) {
	kind, prefix, ok := connLine("127.0.0.1:5555 - cid:42 - Publish Violation - Subject %q")
	require.True(t, ok)
	require.Equal(t, "Publish Violation - Subject %q", kind)
	require.Equal(t, "127.0.0.1:5555 - cid:42", prefix)
	for _, f := range []string{"Server is ready", "JetStream cluster - cid:x - y", "a - cid:12"} {
		_, _, ok := connLine(f)
		require.False(t, ok, f)
	}
}

// The server's own lines about clients are rate-limited by kind; its line
// for a refused connection goes to debug without the user name (which may
// be a mistyped secret); lines of the server itself are all written.
func TestServerLogPerConnection(t *testing.T) {
	out, log := newLines()
	clk := newFakeClock()
	s := serverLog{l: log, perConn: NewRateLog(log, time.Minute, clk.Now)}
	for i := range 100 {
		c := fmt.Sprintf("10.0.0.%d:%d - cid:%d - ", i%250, 1000+i, i)
		s.Errorf(c+"%v - %s", server.ErrAuthentication, `User "eyJhbGciOi.secret.token"`)
		s.logf(slog.LevelError, c+server.ErrAuthentication.Error(), nil) // as the server's c.Errorf(ErrAuthentication.Error())
		s.Errorf(c+"Publish Violation - Subject %q", "gastown.town.A.token")
		s.Noticef(c+"Slow Consumer Detected: MaxPending of %d Exceeded", 10)
	}
	s.Noticef("Server is ready")
	s.Noticef("Server is ready")
	got := out.all()
	var msgs []string
	for _, g := range got {
		msgs = append(msgs, g["msg"].(string))
	}
	require.Equal(t, []string{
		`10.0.0.0:1000 - cid:0 - Publish Violation - Subject "gastown.town.A.token"`,
		"10.0.0.0:1000 - cid:0 - Slow Consumer Detected: MaxPending of 10 Exceeded",
		"Server is ready", "Server is ready",
	}, msgs)

	// At debug, the refused connections are there, without the user.
	var captured strings.Builder
	debug := slog.New(slog.NewTextHandler(&captured, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s = serverLog{l: debug, perConn: NewRateLog(debug, time.Minute, clk.Now)}
	s.Errorf("10.0.0.1:1000 - cid:7 - %v - %s", server.ErrAuthentication, `User "eyJhbGciOi.secret.token"`)
	require.Contains(t, captured.String(), "10.0.0.1:1000 - cid:7 - authentication error")
	require.NotContains(t, captured.String(), "secret")
}
