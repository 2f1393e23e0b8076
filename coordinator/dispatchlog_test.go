package coordinator_test

import (
	"bytes"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// logBuffer collects a coordinator's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count is how many lines hold every one of parts.
func (l *logBuffer) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.b.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// A town without a container fails every dispatch: the first failure is a
// warning, the next ones are not, until the town's container is heard from
// and gone again.
func TestNoContainerWarnedOnce(t *testing.T) {
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: bus.PlainErrors}))
	const interval = 100 * time.Millisecond
	h := coordinatortest.Start(t, coordinator.Config{Logger: log, HeartbeatInterval: interval, DispatchCooldown: time.Hour})
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("the coordinator's log:\n" + logs.String())
		}
	})
	slingOne(t, h)
	sling := func(id string) schemas.SlingResult {
		t.Helper()
		require.NoError(t, admin(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "T", BeadID: id, RigID: "r", Title: "work " + id}, nil))
		var res schemas.SlingResult
		require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: id}, &res))
		return res
	}
	noContainer := []string{"level=WARN", "dispatch failed", "town=T", "no container of the town is connected"}
	for _, id := range []string{"b1", "b2", "b3"} {
		res := sling(id)
		require.False(t, res.Dispatched)
		require.Contains(t, res.Error, "no container of the town is connected", "the caller is still told every time")
	}
	require.Equal(t, 1, logs.count(noContainer...), "one warning for the town")

	// The container comes and goes: the next failure is a warning again.
	c := startBeating(t, h, "T", interval/2)
	res := sling("b4")
	require.True(t, res.Dispatched, res.Error)
	c.kill()
	n := 0
	require.Eventually(t, func() bool { // until the coordinator sees no responder
		n++
		return !sling("gone-" + strconv.Itoa(n)).Dispatched
	}, 10*time.Second, 10*time.Millisecond)
	sling("b5")
	require.Equal(t, 2, logs.count(noContainer...), "warned again once the container was gone")
}

// A sling reports its own dispatch: with no container every sling is told
// it failed and why, even though patrol (every 10 ms here) sees each new
// polecat due the moment its hook is written, before the sling dispatches
// it. Patrol must leave a slung polecat to its sling: it used to dispatch
// it first, and the sling then reported "dispatched" while that dispatch
// was failing, or "cooling down" once it had failed.
func TestSlingReportsItsOwnDispatch(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: 20 * time.Millisecond, DispatchCooldown: time.Hour})
	slingOne(t, h)
	for i := range 30 {
		id := "s" + strconv.Itoa(i)
		require.NoError(t, admin(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "T", BeadID: id, RigID: "r", Title: "work " + id}, nil))
		var res schemas.SlingResult
		require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: id}, &res))
		require.False(t, res.Dispatched, "sling %s of %s: no container is connected", id, res.AgentID)
		require.Contains(t, res.Error, "no container of the town is connected", "sling %s of %s", id, res.AgentID)
	}
}
