package attack_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// Reply injection: NATS checks no request's reply subject against the
// sender's permissions, and the coordinator may publish where its callers
// may not. Every handler is asked, by every identity that can reach it,
// to answer somewhere other than the caller's own inbox: it must neither
// answer nor act.

// replyTargets are subjects an attacker would like the coordinator to
// publish on: another town's events, token pushes, dispatches and inbox,
// the admin methods, the state buckets and the JetStream API, and none.
var replyTargets = []string{
	"gastown.town.beta.events",
	"gastown.town.beta.token",
	"gastown.town.beta.dispatch",
	"gastown.town.beta.control.stop",
	"gastown.town.beta.heartbeat",
	"gastown.admin.token.revoke",
	"_INBOX.gastown.beta.stolen",
	"_INBOX.gastown_admin.stolen",
	"_INBOX.gastown.alpha.*",    // a wildcard is not an inbox
	"_INBOX.gastown.alpha",      // the prefix alone is not an inbox
	"_INBOX.gastown.alphabet.x", // another town whose id starts like alpha's
	"$KV.gastown_tokens.beta",
	"$KV.gastown_agents.beta.p1",
	"$JS.API.STREAM.PURGE.KV_gastown_beads",
	"", // a request that expects a reply and names none
}

// requireDropped publishes m and waits until the coordinator has dropped
// it under the reply rule, then checks nothing was published on target.
func (w *world) requireDropped(t *testing.T, wa *watcher, nc *nats.Conn, m *nats.Msg) {
	t.Helper()
	before := w.h.Daemon.Misdirected()
	require.NoError(t, nc.PublishMsg(m))
	require.NoError(t, nc.Flush())
	require.Eventually(t, func() bool { return w.h.Daemon.Misdirected() > before }, wait, time.Millisecond,
		"%s with reply %q was not dropped", m.Subject, m.Reply)
	if m.Reply != "" {
		require.Empty(t, wa.on(m.Reply), "%s made the coordinator publish on %q", m.Subject, m.Reply)
	}
}

func TestReplyInjectionTownHandlers(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	wa := w.watch(t)
	tok := w.h.ContainerToken("alpha")
	alpha := w.container(t, "alpha", tok)
	state := w.kvRevisions(t)
	bodies := map[string]any{
		schemas.ToolCheckpoint: map[string]any{"note": "injected"},
		schemas.ToolMailSend:   map[string]any{"to": "p1", "subject": "s", "body": "injected"},
		schemas.ToolBeadClose:  map[string]any{"beadId": "b1"},
		schemas.ToolEscalate:   map[string]any{"beadId": "b1", "reason": "injected"},
		schemas.ToolDone:       map[string]any{"beadId": "b1", "branch": "x"},
	}
	for _, method := range schemas.Tools {
		t.Run("rpc."+method, func(t *testing.T) {
			for _, target := range replyTargets {
				m := rpcMsg(t, "alpha", method, tok, bodies[method])
				m.Reply = target
				w.requireDropped(t, wa, alpha, m)
			}
		})
	}
	t.Run("token.get", func(t *testing.T) {
		for _, target := range replyTargets {
			m := nats.NewMsg("gastown.town.alpha.token.get")
			var err error
			m.Data, err = schemas.Encode(&schemas.TokenRequest{TownID: "alpha", ContainerID: "c"})
			require.NoError(t, err)
			m.Reply = target
			w.requireDropped(t, wa, alpha, m)
		}
	})
	require.Equal(t, state, w.kvRevisions(t), "a dropped request changed the state")
	for _, subject := range wa.subjects() {
		require.NotContains(t, subject, "beta", "the attack made something be published for beta")
	}

	// The honest path still works: the reply rule is not a wall.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var ping schemas.PingResult
	require.NoError(t, bus.Call(ctx, alpha, rpcMsg(t, "alpha", schemas.ToolPing, tok, nil), &ping))
	require.Equal(t, "alpha", ping.TownID)
}

func TestReplyInjectionHeartbeat(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	wa := w.watch(t)
	alpha := w.container(t, "alpha", "")
	for _, target := range replyTargets[:len(replyTargets)-1] {
		m := nats.NewMsg("gastown.town.alpha.heartbeat")
		var err error
		m.Data, err = schemas.Encode(&schemas.Heartbeat{TownID: "alpha", ContainerID: "c", SentAt: time.Now()})
		require.NoError(t, err)
		m.Reply = target
		require.NoError(t, alpha.PublishMsg(m))
	}
	require.NoError(t, alpha.Flush())
	// A heartbeat is never answered: a request made after them, answered,
	// proves they were handled by then (one subscription, in order) or
	// dropped, and that none was answered.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var ping schemas.PingResult
	tok := w.h.ContainerToken("alpha")
	require.NoError(t, bus.Call(ctx, w.container(t, "alpha", tok), rpcMsg(t, "alpha", schemas.ToolPing, tok, nil), &ping))
	for _, target := range replyTargets[:len(replyTargets)-1] {
		require.Empty(t, wa.on(target), "a heartbeat was answered on %q", target)
	}
}

// A container whose token expired within the recovery window may only
// ask token.get: it cannot aim the fresh token anywhere but its inbox.
func TestReplyInjectionRecovery(t *testing.T) {
	w := newWorld(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
	wa := w.watch(t)
	old := w.h.Issuer.WithClock(func() time.Time { return time.Now().Add(-2 * time.Hour) })
	expired, _, err := old.MintContainer("alpha", "", time.Hour)
	require.NoError(t, err)
	rec := w.container(t, "alpha", expired)
	for _, target := range replyTargets {
		m := nats.NewMsg("gastown.town.alpha.token.get")
		m.Data, err = schemas.Encode(&schemas.TokenRequest{TownID: "alpha", ContainerID: "c"})
		require.NoError(t, err)
		m.Reply = target
		w.requireDropped(t, wa, rec, m)
	}
	// Asked properly, it gets its fresh token.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var rot schemas.TokenRotation
	require.NoError(t, bus.Request(ctx, rec, "gastown.town.alpha.token.get", &schemas.TokenRequest{TownID: "alpha", ContainerID: "c"}, &rot))
	require.NotEmpty(t, rot.Token)
}

// The administrator's requests are answered only on the admin inbox: the
// admin identity cannot write raw state or another town's subjects either.
func TestReplyInjectionAdmin(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	wa := w.watch(t)
	admin := adminConn(t, w.h)
	state := w.kvRevisions(t)
	bodies := map[string]any{
		schemas.AdminTokenRotate: schemas.TownRequest{TownID: "beta"},
		schemas.AdminTokenRevoke: schemas.TownRequest{TownID: "beta"},
		schemas.AdminTownCreate:  schemas.TownCreate{TownID: "gamma"},
		schemas.AdminRigAdd:      schemas.RigAdd{TownID: "beta", RigID: "r2", GitURL: "/x"},
		schemas.AdminBeadCreate:  schemas.BeadCreate{TownID: "beta", BeadID: "b9", RigID: "r", Title: "x"},
		schemas.AdminSling:       schemas.Sling{TownID: "beta", BeadID: "b1", AgentID: "p2"},
		schemas.AdminStatus:      schemas.TownRequest{TownID: "beta"},
		schemas.AdminConvoy:      map[string]any{"townId": "beta", "convoyId": "c1", "title": "x", "beadIds": []string{"b1"}},
		schemas.AdminTownList:    schemas.TownList{},
		schemas.AdminTownShow:    schemas.TownRequest{TownID: "beta"},
		schemas.AdminTownDelete:  schemas.TownDelete{TownID: "beta", Force: true},
		schemas.AdminRigList:     schemas.TownRequest{TownID: "beta"},
		schemas.AdminRigRemove:   schemas.RigRemove{TownID: "beta", RigID: "r", Force: true},
		schemas.AdminBeadList:    schemas.BeadList{TownID: "beta"},
		schemas.AdminBeadShow:    schemas.TownBeadRef{TownID: "beta", BeadID: "b1"},
		schemas.AdminConvoyList:  schemas.TownRequest{TownID: "beta"},
		schemas.AdminConvoyShow:  schemas.ConvoyRef{TownID: "beta", ConvoyID: "c1"},
	}
	for _, method := range schemas.AdminMethods {
		t.Run(method, func(t *testing.T) {
			subject, err := schemas.Admin(method)
			require.NoError(t, err)
			for _, target := range append(replyTargets, "$KV.gastown_towns.evil", "_INBOX.gastown_adminx.y", "_INBOX.gastown.alpha.x") {
				if schemas.IsAdminReply(target) || strings.HasPrefix(target, schemas.AdminRoot+".") {
					continue // its own inbox, or where it may publish itself
				}
				m := nats.NewMsg(subject)
				m.Data = mustJSON(t, bodies[method])
				m.Reply = target
				w.requireDropped(t, wa, admin, m)
			}
		})
	}
	require.Equal(t, state, w.kvRevisions(t), "a dropped admin request changed the state")
	require.True(t, w.revokedBefore(t, "beta").IsZero(), "beta was revoked by a dropped request")
}
