package attack_test

import (
	"context"
	"encoding/json"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// Passwords coordinatortest gives the ops and admin identities.
const (
	opsPassword   = "ops-test-password"
	adminPassword = "admin-test-password"
)

// wait bounds every wait for something the coordinator does promptly.
const wait = 10 * time.Second

// world is a running coordinator with two towns, alpha (the attacker's)
// and beta (the victim), each with rig r and polecat p1 hooked to bead b1.
type world struct {
	h *coordinatortest.Harness
}

func newWorld(t *testing.T, cfg coordinator.Config) *world {
	t.Helper()
	if cfg.DispatchCooldown == 0 {
		cfg.DispatchCooldown = time.Hour // no container: dispatches fail quietly
	}
	w := &world{h: coordinatortest.Start(t, cfg)}
	for _, town := range []string{"alpha", "beta"} {
		w.admin(t, schemas.AdminTownCreate, schemas.TownCreate{TownID: town, UserID: "owner-" + town}, nil)
		w.admin(t, schemas.AdminRigAdd, schemas.RigAdd{TownID: town, RigID: "r", GitURL: "/nonexistent/r"}, nil)
		w.admin(t, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: town, BeadID: "b1", RigID: "r", Title: "work"}, nil)
		w.admin(t, schemas.AdminSling, schemas.Sling{TownID: town, BeadID: "b1", AgentID: "p1"}, nil)
	}
	// Patrol tries to dispatch each mayor once (there is no container) and
	// then leaves it for the cooldown: wait for that, so the state stays
	// still while a test fingerprints it.
	require.Eventually(t, func() bool {
		for _, town := range []string{"alpha", "beta"} {
			var st coordinator.TownStatus
			if adminCall(w.h.AdminConn(), schemas.AdminStatus, schemas.TownRequest{TownID: town}, &st) != nil {
				return false
			}
			for _, a := range st.Agents {
				if a.AgentID == coordinator.MayorID && a.NextAttemptAt.IsZero() {
					return false
				}
			}
		}
		return true
	}, wait, 10*time.Millisecond, "the mayors' first dispatch never happened")
	return w
}

// admin calls an admin method as the coordinator's tests do (an
// in-process connection with the admin inbox).
func (w *world) admin(t *testing.T, method string, body, out any) {
	t.Helper()
	require.NoError(t, adminCall(w.h.AdminConn(), method, body, out), "admin %s", method)
}

// dial connects to the daemon once, never reconnecting.
func dial(h *coordinatortest.Harness, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(h.URL(), append([]nats.Option{nats.MaxReconnects(0), nats.Timeout(wait)}, opts...)...)
}

// containerConn connects over TCP as town's container with tok and the
// town's inbox prefix, never reconnecting, closed when the test ends.
func containerConn(t *testing.T, h *coordinatortest.Harness, town, tok string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	all := append([]nats.Option{nats.Token(tok), nats.CustomInboxPrefix(schemas.InboxRoot + "." + town)}, opts...)
	nc, err := dial(h, all...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.NoError(t, nc.Flush())
	return nc
}

// container connects as town's container with tok, a fresh one when empty.
func (w *world) container(t *testing.T, town, tok string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	if tok == "" {
		tok = w.h.ContainerToken(town)
	}
	return containerConn(t, w.h, town, tok, opts...)
}

// ops connects over TCP as the operator, as the nats CLI would with the
// context `gastown ops context` writes.
func (w *world) ops(t *testing.T, opts ...nats.Option) *nats.Conn {
	t.Helper()
	all := append([]nats.Option{nats.UserInfo(bus.OpsUser, opsPassword), nats.CustomInboxPrefix(schemas.OpsInbox), nats.MaxReconnects(0)}, opts...)
	nc, err := nats.Connect(w.h.URL(), all...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// adminConn connects over TCP as the administrator, with its inbox.
func adminConn(t *testing.T, h *coordinatortest.Harness) *nats.Conn {
	t.Helper()
	nc, err := dial(h, nats.UserInfo(bus.AdminUser, adminPassword), nats.CustomInboxPrefix(schemas.AdminInbox))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// rpcMsg is a tool request of town as agent p1 of rig r, bearing tok.
func rpcMsg(t *testing.T, town, method, tok string, body any) *nats.Msg {
	return agentMsg(t, town, "p1", "r", method, tok, body)
}

// agentMsg is a tool request of town as agent of rig, bearing tok.
func agentMsg(t testing.TB, town, agent, rig, method, tok string, body any) *nats.Msg {
	t.Helper()
	subject, err := schemas.ForTown(town)
	require.NoError(t, err)
	s, err := subject.RPC(method)
	require.NoError(t, err)
	m := nats.NewMsg(s)
	m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+tok)
	m.Header.Set(schemas.AgentIDHeader, agent)
	m.Header.Set(schemas.RigIDHeader, rig)
	if body != nil {
		m.Data, err = json.Marshal(body)
		require.NoError(t, err)
	}
	return m
}

// watcher records every message published in the control account, where
// the handlers listen: what an attacker made someone publish shows here.
type watcher struct {
	mu   sync.Mutex
	seen map[string][]*nats.Msg
}

func (w *world) watch(t *testing.T) *watcher {
	t.Helper()
	wa := &watcher{seen: map[string][]*nats.Msg{}}
	sub, err := w.h.Conn().Subscribe(">", func(m *nats.Msg) {
		wa.mu.Lock()
		wa.seen[m.Subject] = append(wa.seen[m.Subject], m)
		wa.mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, w.h.Conn().Flush())
	return wa
}

// subjects is every subject something was seen on.
func (wa *watcher) subjects() []string {
	wa.mu.Lock()
	defer wa.mu.Unlock()
	out := make([]string, 0, len(wa.seen))
	for s := range wa.seen {
		out = append(out, s)
	}
	return out
}

// any reports whether something was seen on one of subjects.
func (wa *watcher) any(subjects []string) bool {
	for _, s := range subjects {
		if len(wa.on(s)) > 0 {
			return true
		}
	}
	return false
}

// on is what was seen on subject.
func (wa *watcher) on(subject string) []*nats.Msg {
	wa.mu.Lock()
	defer wa.mu.Unlock()
	return wa.seen[subject]
}

// state is the coordinator's JetStream, in the state account.
func (w *world) state(t *testing.T) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(w.h.StateConn())
	require.NoError(t, err)
	return js
}

// kvRevisions is the last revision of every key of every state bucket:
// a fingerprint of the state that any write changes.
func (w *world) kvRevisions(t *testing.T) map[string]uint64 {
	t.Helper()
	out, err := w.revisions()
	require.NoError(t, err)
	return out
}

// revisions is kvRevisions without the test: safe from any goroutine.
func (w *world) revisions() (map[string]uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	js, err := jetstream.New(w.h.StateConn())
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, b := range schemas.StateBuckets {
		if b == schemas.BucketLeases {
			continue // renewed all the time by the coordinator itself
		}
		kv, err := js.KeyValue(ctx, b)
		if err != nil {
			return nil, err
		}
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return nil, err
		}
		for k := range keys.Keys() {
			e, err := kv.Get(ctx, k)
			if err != nil {
				return nil, err
			}
			out[b+"/"+k] = e.Revision()
		}
	}
	return out, nil
}

// stateMoved reports whether the state's fingerprint differs from before
// (or cannot be read): safe to call from any goroutine.
func (w *world) stateMoved(before map[string]uint64) bool {
	now, err := w.revisions()
	return err != nil || !maps.Equal(before, now)
}

// token state of town, as stored.
func (w *world) revokedBefore(t *testing.T, town string) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := w.state(t).KeyValue(ctx, schemas.BucketTokens)
	require.NoError(t, err)
	e, err := kv.Get(ctx, town)
	if err != nil {
		return time.Time{}
	}
	var s struct {
		RevokedBefore time.Time `json:"revokedBefore"`
	}
	require.NoError(t, json.Unmarshal(e.Value(), &s))
	return s.RevokedBefore
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}
