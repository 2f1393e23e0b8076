package attack_test

import (
	"context"
	"encoding/json"
	"sort"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// townConn connects as town's container with a fresh token, and returns
// the token too.
func townConn(t *testing.T, h *coordinatortest.Harness, town string) (*nats.Conn, string) {
	t.Helper()
	tok := h.ContainerToken(town)
	return containerConn(t, h, town, tok), tok
}

// adminCall calls gastown.admin.<method>.
func adminCall(nc *nats.Conn, method string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return bus.Call(ctx, nc, &nats.Msg{Subject: schemas.AdminRoot + "." + method, Data: b}, out)
}

// toolMsg is a tool call of town's mayor.
func toolMsg(t testing.TB, town, tok, method string, body any) *nats.Msg {
	return agentMsg(t, town, coordinator.MayorID, coordinator.MayorRig, method, tok, body)
}

// tool calls a tool as town's mayor. It is safe from any goroutine.
func tool(t testing.TB, nc *nats.Conn, town, tok, method string, body, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return bus.Call(ctx, nc, toolMsg(t, town, tok, method, body), out)
}

// makeTowns creates each town (with its mayor).
func makeTowns(t *testing.T, nc *nats.Conn, towns ...string) {
	t.Helper()
	for _, town := range towns {
		require.NoError(t, adminCall(nc, schemas.AdminTownCreate, schemas.TownCreate{TownID: town}, nil))
	}
}

// status is a town's status.
func status(t *testing.T, nc *nats.Conn, town string) coordinator.TownStatus {
	t.Helper()
	var st coordinator.TownStatus
	require.NoError(t, adminCall(nc, schemas.AdminStatus, schemas.TownRequest{TownID: town}, &st))
	return st
}

// p99 of latencies.
func p99(lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*99/100)]
}
