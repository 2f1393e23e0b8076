package attack_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// TestReadAgentFirstIsUnderTheWriteRate: a call whose agent the
// coordinator's view does not hold reads the agent from the store
// (coordinator/lookup.go readAgentFirst), so that an agent another
// coordinator has just made may call at once. A container names any
// agent it likes in its headers: each call with an agent id nobody made
// is a store read. Such calls, even of a method answered inline (ping),
// are charged to the town's write rate: past its
// burst, they are refused resource_exhausted before any read, and those
// that pass are refused permission_denied (no such agent).
func TestReadAgentFirstIsUnderTheWriteRate(t *testing.T) {
	const burst = 5
	// A rate that refills nothing during the test: the burst is all.
	h := coordinatortest.Start(t, coordinator.Config{Limits: coordinator.Limits{WriteRate: 0.001, WriteBurst: burst}})
	adm := adminConn(t, h)
	makeTowns(t, adm, "alpha")
	nc, tok := townConn(t, h, "alpha")
	var denied, exhausted int
	for i := range 40 {
		method := []string{schemas.ToolPing, schemas.ToolPrime, schemas.ToolMailCheck}[i%3]
		m := agentMsg(t, "alpha", fmt.Sprintf("ghost-%d", i), "r", method, tok, nil)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err := bus.Call(ctx, nc, m, nil)
		cancel()
		switch {
		case schemas.CodeOf(err) == schemas.CodePermissionDenied:
			denied++
		case schemas.CodeOf(err) == schemas.CodeResourceExhausted:
			exhausted++
		default:
			t.Fatalf("call %d (%s as an agent nobody made): %v", i, method, err)
		}
	}
	require.LessOrEqual(t, denied, burst, "calls as agents nobody made read the store past the town's write burst")
	require.Equal(t, 40, denied+exhausted)
}
