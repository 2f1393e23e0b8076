package attack_test

import (
	"context"
	"strings"
	"testing"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// toHolder is m sent to its town's lease holder's subject instead:
// gastown.town.<T>.rpc.<method> becomes gastown.town.<T>.holder.rpc.<method>.
func toHolder(t *testing.T, m *nats.Msg) *nats.Msg {
	t.Helper()
	town, rest, err := schemas.ParseTownSubject(m.Subject)
	require.NoError(t, err)
	method, ok := schemas.RPCMethod(rest)
	require.True(t, ok, "%s is not an RPC subject", m.Subject)
	tt, err := schemas.ForTown(town)
	require.NoError(t, err)
	m.Subject, err = tt.HolderRPC(method)
	require.NoError(t, err)
	return m
}

// A request on alpha's holder subject passes the same reply rule as on
// …rpc.<method>: a reply subject outside alpha's own inbox (another
// town's subjects and inbox, the admin's, the state's, a wildcard, none)
// is dropped unanswered, nothing is published there and no state moves.
// Checked to fail when handleRPC skips townReplyOK for holder subjects.
func TestRedTeamHolderReplyRule(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	wa := w.watch(t)
	tok := w.h.ContainerToken("alpha")
	alpha := w.container(t, "alpha", tok)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// alpha's lease is held (one coordinator): its holder subject answers.
	require.NoError(t, bus.Call(ctx, alpha, toHolder(t, rpcMsg(t, "alpha", schemas.ToolPing, tok, nil)), nil))
	state := w.kvRevisions(t)
	for _, method := range []string{schemas.ToolPing, schemas.ToolCheckpoint, schemas.ToolMailSend, schemas.ToolBeadClose} {
		for _, target := range replyTargets {
			m := toHolder(t, rpcMsg(t, "alpha", method, tok, map[string]any{"beadId": "b1", "to": "p1", "subject": "s", "note": "x"}))
			m.Reply = target
			w.requireDropped(t, wa, alpha, m)
		}
	}
	require.Equal(t, state, w.kvRevisions(t), "a dropped holder request changed the state")
	for _, subject := range wa.subjects() {
		require.NotContains(t, subject, "beta", "a holder request made something be published for beta")
	}
}

// The checks after the reply rule answer alike on both subjects: a token
// of another town, a missing or forged token, an agent of another town's
// id in the headers, a body over the limit, a body that is not JSON, an
// unknown method, a body naming another town. Each case's answer (its
// error code, or its result) on …holder.rpc.<method> is the one on
// …rpc.<method>, and none of them acts on beta.
// Checked to fail when admitRPC skips authenticate for holder subjects.
func TestRedTeamHolderSameChecksAsQueue(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	w.admin(t, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "beta", BeadID: "secret", RigID: "r", Title: "beta-secret-title"}, nil)
	tok := w.h.ContainerToken("alpha")
	betaTok := w.h.ContainerToken("beta")
	alpha := w.container(t, "alpha", tok)
	big := make([]byte, schemas.MaxBodySize+1)
	for i := range big {
		big[i] = ' ' // valid JSON once it ends in {}: only the size is wrong
	}
	copy(big[len(big)-2:], "{}")
	cases := []struct {
		name string
		msg  func() *nats.Msg
	}{
		{"beta's token", func() *nats.Msg { return rpcMsg(t, "alpha", schemas.ToolBeadsList, betaTok, nil) }},
		{"no token", func() *nats.Msg {
			m := rpcMsg(t, "alpha", schemas.ToolBeadsList, tok, nil)
			m.Header.Del("Authorization")
			return m
		}},
		{"forged token", func() *nats.Msg { return rpcMsg(t, "alpha", schemas.ToolBeadsList, tok+"x", nil) }},
		{"unknown agent", func() *nats.Msg {
			return agentMsg(t, "alpha", "nobody", "r", schemas.ToolCheckpoint, tok, map[string]any{"note": "x"})
		}},
		{"unknown method", func() *nats.Msg { return rpcMsg(t, "alpha", "no.such.method", tok, nil) }},
		{"not JSON", func() *nats.Msg {
			m := rpcMsg(t, "alpha", schemas.ToolPing, tok, nil)
			m.Data = []byte("{")
			return m
		}},
		{"body over the limit", func() *nats.Msg {
			m := rpcMsg(t, "alpha", schemas.ToolPing, tok, nil)
			m.Data = big
			return m
		}},
		{"beta in the body", func() *nats.Msg {
			return rpcMsg(t, "alpha", schemas.ToolBeadGet, tok, map[string]any{"townId": "beta", "beadId": "secret"})
		}},
		{"honest", func() *nats.Msg { return rpcMsg(t, "alpha", schemas.ToolPing, tok, nil) }},
	}
	answer := func(m *nats.Msg) string {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		err := bus.Call(ctx, alpha, m, nil)
		if err == nil {
			return "ok"
		}
		if c := schemas.CodeOf(err); c != "" {
			return string(c)
		}
		return err.Error()
	}
	before := w.kvRevisions(t)
	for _, c := range cases {
		queue := answer(c.msg())
		holder := answer(toHolder(t, c.msg()))
		t.Logf("%s: %s", c.name, holder)
		require.Equal(t, queue, holder, "%s: the holder's subject answers differently from the queue group's", c.name)
		if c.name == "honest" {
			require.Equal(t, "ok", holder)
		} else {
			require.NotEqual(t, "ok", holder, "%s was accepted", c.name)
		}
	}
	for k, v := range w.kvRevisions(t) {
		if b, ok := before[k]; ok && b != v && strings.Contains(k, "beta") {
			t.Fatalf("BROKEN: a holder request changed beta's %s", k)
		}
	}
}
