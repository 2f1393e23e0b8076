package coordinator

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// Internal errors are answered each with its own correlation id, and
// logged at most once per subject per ErrorLogInterval: a caller that
// makes a handler fail over and over does not grow the log. The next line
// says how many were left out.
func TestWireErrorLogRateLimited(t *testing.T) {
	recs := bustest.NewRecords(slog.LevelInfo)
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := &Coordinator{log: recs.Logger(), errLog: bus.NewRateLog(recs.Logger(), time.Minute, clock)}
	const subject = "gastown.town.A.rpc.bead.get"
	fail := func(subject string) string {
		e := c.wireError(subject, errors.New("the store is down"))
		require.Equal(t, schemas.CodeInternal, e.Code)
		id, ok := strings.CutPrefix(e.Message, "internal error; correlation id ")
		require.True(t, ok, e.Message)
		require.NotContains(t, e.Message, "store", "no detail goes to the caller")
		return id
	}
	ids := map[string]bool{}
	for range 1000 {
		ids[fail(subject)] = true
	}
	require.Len(t, ids, 1000, "every reply has its own correlation id")
	lines := recs.Lines(nil)
	require.Equal(t, 1, len(lines), "one line for 1,000 internal errors")
	require.True(t, ids[lines[0].Attrs[KeyCorrelation].(string)], "the line has the correlation id of a reply")
	require.Equal(t, subject, lines[0].Attrs[KeySubject])

	fail("gastown.town.B.rpc.bead.get")
	require.Len(t, recs.Lines(nil), 2, "another subject has its own line")
	require.Equal(t, schemas.CodeNotFound, c.wireError(subject, schemas.NewError(schemas.CodeNotFound, "no bead")).Code)
	require.Len(t, recs.Lines(nil), 2, "errors with a code are not logged")

	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	last := fail(subject)
	lines = recs.Lines(nil)
	require.Len(t, lines, 3)
	require.Equal(t, last, lines[2].Attrs[KeyCorrelation])
	require.EqualValues(t, 999, lines[2].Attrs[bus.KeySuppressed], "the correlation ids left out are counted")
}
