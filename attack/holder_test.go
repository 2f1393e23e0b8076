package attack_test

import (
	"context"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// The lease holder's subjects (gastown.town.<T>.holder.rpc.>, PROTOCOL.md,
// RPC) are a town's tool calls like …rpc.>: a container may send its own
// town's there, and nothing else. Were another town's open to it, it
// could call beta's tools (with a token of its own it would be refused,
// but it could flood beta's holder); could it subscribe any of them, even
// its own town's, it would hear the tool calls of agents and the bearer
// tokens in their headers, and could answer them in the coordinator's
// place.
func TestRedTeamHolderSubjectIsItsTownsAlone(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	errs, eh := permErrs()
	tok := w.h.ContainerToken("alpha")
	nc := w.container(t, "alpha", tok, eh)

	// Its own town's holder subject is its to call.
	own, err := schemas.ForTown("alpha")
	require.NoError(t, err)
	subject, err := own.HolderRPC(schemas.ToolPing)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		return bus.Call(ctx, nc, holderMsg(t, "alpha", tok, subject), nil) == nil
	}, wait, 50*time.Millisecond, "alpha's container calls ping on alpha's holder subject")
	select {
	case err := <-errs:
		t.Fatalf("its own holder subject was refused: %v", err)
	case <-time.After(200 * time.Millisecond):
	}

	// Another town's: refused by the server, never delivered.
	for _, s := range []string{"gastown.town.beta.holder.rpc.ping", "gastown.town.beta.holder.rpc.checkpoint"} {
		require.NoError(t, nc.PublishMsg(holderMsg(t, "alpha", tok, s)))
		require.NoError(t, nc.Flush())
		rtRefused(t, errs, "publishing", s)
	}
	// Nobody's to hear: not another town's, not every town's, not its
	// own, in no queue group.
	for _, s := range []string{
		"gastown.town.beta.holder.rpc.>", "gastown.town.beta.holder.rpc.ping", "gastown.town.*.holder.rpc.>",
		"gastown.town.alpha.holder.rpc.>", "gastown.town.alpha.holder.rpc.ping", "gastown.town.*.holder.>",
	} {
		_, err := nc.SubscribeSync(s)
		require.NoError(t, err)
		require.NoError(t, nc.Flush())
		rtRefused(t, errs, "subscribing", s)
		for _, q := range []string{schemas.CoordinatorQueue, schemas.ContainerQueue} {
			_, err := nc.QueueSubscribeSync(s, q)
			require.NoError(t, err)
			require.NoError(t, nc.Flush())
			rtRefused(t, errs, "subscribing in queue "+q, s)
		}
	}
}

// holderMsg is town's mayor's ping, bearing tok, sent to subject.
func holderMsg(t *testing.T, town, tok, subject string) *nats.Msg {
	m := toolMsg(t, town, tok, schemas.ToolPing, nil)
	m.Subject = subject
	return m
}
