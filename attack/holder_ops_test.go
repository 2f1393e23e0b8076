package attack_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestRedTeamHolderOpsHearsNothing: the read-only operator may neither
// subscribe nor publish any holder subject (they carry the agents' bearer
// tokens in their headers), and while alpha's tool calls go to its holder
// nothing the operator may hear carries alpha's token.
// Checked to fail when OpsPermissions allows subscribing
// gastown.town.*.holder.rpc.>.
func TestRedTeamHolderOpsHearsNothing(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	errs, eh := permErrs()
	ops := w.ops(t, eh)
	var mu sync.Mutex
	var heard []string
	keep := func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		heard = append(heard, m.Subject+" "+string(m.Data)+" "+strings.Join(m.Header.Values(schemas.AuthorizationHeader), ","))
	}
	for _, s := range []string{schemas.AllTowns.Heartbeat(), schemas.AllTowns.Events(), schemas.OpsInbox + ".>"} {
		_, err := ops.Subscribe(s, keep)
		require.NoError(t, err)
	}
	for _, s := range []string{schemas.AllTowns.HolderRPCAll(), "gastown.town.alpha.holder.rpc.ping", "gastown.town.*.holder.>", "gastown.town.alpha.>", ">"} {
		_, err := ops.Subscribe(s, keep)
		require.NoError(t, err)
		require.NoError(t, ops.Flush())
		rtRefused(t, errs, "ops subscribing", s)
	}
	tok := w.h.ContainerToken("alpha")
	m := toHolder(t, rpcMsg(t, "alpha", schemas.ToolPing, tok, nil))
	require.NoError(t, ops.PublishMsg(m))
	require.NoError(t, ops.Flush())
	rtRefused(t, errs, "ops publishing", m.Subject)

	alpha := w.container(t, "alpha", tok)
	for _, method := range []string{schemas.ToolPing, schemas.ToolCheckpoint} {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		require.NoError(t, bus.Call(ctx, alpha, toHolder(t, toolMsg(t, "alpha", tok, method, map[string]any{"note": "x"})), nil))
		cancel()
	}
	require.NoError(t, alpha.Publish("gastown.town.alpha.heartbeat", mustJSON(t, schemas.Heartbeat{Type: schemas.TypeHeartbeat, TownID: "alpha", ContainerID: "c"})))
	require.NoError(t, alpha.Flush())
	require.NoError(t, ops.Flush())
	mu.Lock()
	defer mu.Unlock()
	for _, s := range heard {
		require.NotContains(t, s, "holder.rpc", "BROKEN: ops heard a holder request: %s", s)
		require.NotContains(t, s, tok[strings.LastIndexByte(tok, '.')+1:], "BROKEN: ops heard alpha's token: %s", s)
	}
}
