package attack_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestRedTeamHolderCluster: on a cluster (callout-decided permissions,
// two coordinators on nodes 1 and 2), from each node, alpha's container
// gets its calls on its own holder subject answered, each exactly once
// however the lease holder is reached; it may not publish on beta's
// holder subject nor subscribe any holder subject (its own included), and
// neither may ops, by password or by key; and a token of beta's on
// alpha's holder subject is refused as on …rpc.<method>.
// The exactly-once check was checked to fail when every coordinator
// subscribes every town's holder subject outside the queue group.
func TestRedTeamHolderCluster(t *testing.T) {
	w := startClusterWorld(t)
	alphaTok, betaTok := w.token(t, "alpha"), w.token(t, "beta")
	for i := range len(w.c.URLs()) {
		eh, errs := asyncErrs()
		nc, err := w.container(t, i, "alpha", alphaTok, eh)
		require.NoError(t, err)
		ping := func(ctx context.Context, tok string) error {
			return bus.Call(ctx, nc, toHolder(t, toolMsg(t, "alpha", tok, schemas.ToolPing, nil)), nil)
		}
		require.Eventually(t, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			return ping(ctx, alphaTok) == nil
		}, 30*time.Second, 50*time.Millisecond, "node %d: alpha's holder subject answers", i+1)

		// Exactly once: every request gets one answer.
		inbox := fmt.Sprintf("%s.alpha.once%d", schemas.InboxRoot, i)
		var got atomic.Int64
		sub, err := nc.Subscribe(inbox+".>", func(*nats.Msg) { got.Add(1) })
		require.NoError(t, err)
		const n = 50
		for j := range n {
			m := toHolder(t, toolMsg(t, "alpha", alphaTok, schemas.ToolPing, nil))
			m.Reply = fmt.Sprintf("%s.%d", inbox, j)
			require.NoError(t, nc.PublishMsg(m))
		}
		require.NoError(t, nc.Flush())
		require.Eventually(t, func() bool { return got.Load() >= n }, wait, 10*time.Millisecond, "node %d: every request answered", i+1)
		for range 3 { // a few round trips more: a second answer would be here by now
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			require.NoError(t, ping(ctx, alphaTok))
			cancel()
		}
		require.NoError(t, sub.Unsubscribe())
		require.Equal(t, int64(n), got.Load(), "node %d: a request on the holder subject was answered more than once", i+1)

		// beta's token on alpha's holder subject: refused, as on …rpc.
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err = ping(ctx, betaTok)
		cancel()
		require.Equal(t, schemas.CodePermissionDenied, schemas.CodeOf(err), "node %d: beta's token on alpha's holder subject: %v", i+1, err)

		// beta's holder subject: not alpha's to publish on.
		m := toHolder(t, toolMsg(t, "beta", alphaTok, schemas.ToolPing, nil))
		err = refusedWithin(t, errs, m.Subject, wait, func(ctx context.Context) error { return bus.Call(ctx, nc, m, nil) })
		require.ErrorContains(t, err, "Permissions Violation", "node %d: alpha published on %s", i+1, m.Subject)
		// No holder subject is alpha's to hear.
		for _, s := range []string{"gastown.town.alpha.holder.rpc.>", "gastown.town.beta.holder.rpc.ping", schemas.AllTowns.HolderRPCAll()} {
			_, err := nc.QueueSubscribeSync(s, schemas.CoordinatorQueue)
			require.NoError(t, err)
			require.NoError(t, nc.Flush())
			rtRefused(t, errs, fmt.Sprintf("node %d: alpha subscribing", i+1), s)
		}
	}
	for _, way := range w.opsWays(t) {
		errs, eh := permErrs()
		ops, err := w.node(t, 0, way.cred, nats.CustomInboxPrefix(schemas.OpsInbox), eh)
		require.NoError(t, err)
		for _, s := range []string{schemas.AllTowns.HolderRPCAll(), "gastown.town.alpha.holder.rpc.ping"} {
			_, err := ops.SubscribeSync(s)
			require.NoError(t, err)
			require.NoError(t, ops.Flush())
			rtRefused(t, errs, "ops ("+way.name+") subscribing", s)
		}
	}
}
