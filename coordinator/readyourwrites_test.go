package coordinator_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// heard is a coordinator's logger that also records each message it
// logs (at info and above), so that a test can tell which of several
// coordinators handled a request.
type heard struct {
	slog.Handler
	mu   *sync.Mutex
	msgs *[]string
}

func newHeard(t *testing.T) (*slog.Logger, func(msg string) bool) {
	h := heard{Handler: bustest.Logger(t).Handler(), mu: &sync.Mutex{}, msgs: new([]string)}
	said := func(msg string) bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return slices.Contains(*h.msgs, msg)
	}
	return slog.New(h), said
}

func (h heard) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h heard) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	*h.msgs = append(*h.msgs, r.Message)
	h.mu.Unlock()
	if h.Handler.Enabled(ctx, r.Level) {
		return h.Handler.Handle(ctx, r)
	}
	return nil
}

func (h heard) WithAttrs(as []slog.Attr) slog.Handler {
	return heard{Handler: h.Handler.WithAttrs(as), mu: h.mu, msgs: h.msgs}
}

func (h heard) WithGroup(name string) slog.Handler {
	return heard{Handler: h.Handler.WithGroup(name), mu: h.mu, msgs: h.msgs}
}

// pauseWatches pauses, for an hour, every consumer of the named buckets'
// streams: the coordinators' watches of them deliver nothing more, as if
// each watch were behind the writes of the others (a coordinator still
// sees its own writes, which it applies itself).
func pauseWatches(ctx context.Context, t *testing.T, state *nats.Conn, buckets ...string) {
	t.Helper()
	js, err := jetstream.New(state)
	require.NoError(t, err)
	for _, b := range buckets {
		stream, err := js.Stream(ctx, "KV_"+b)
		require.NoError(t, err)
		names := stream.ConsumerNames(ctx)
		n := 0
		for name := range names.Name() {
			_, err := stream.PauseConsumer(ctx, name, time.Now().Add(time.Hour))
			require.NoError(t, err, "pausing %s of %s", name, b)
			n++
		}
		require.NoError(t, names.Err())
		require.NotZero(t, n, "%s has watches", b)
	}
}

// ringOfThree is three coordinators on node 1 of a cluster, each logging
// to a heard logger, so that a test can close the one that handled a
// request (closeWho) and send the next to another.
type ringOfThree struct {
	t  *testing.T
	o  *onCluster
	ms []ringMember
}

type ringMember struct {
	d    *coordinator.Daemon
	said func(string) bool
}

func startRingOfThree(t *testing.T) *ringOfThree {
	o := startOnCluster(t, 0)
	// Every coordinator on node 1, with the clients: a coordinator that
	// closes is gone from the queue group there once its connection is.
	o.cfg.NatsURL = o.c.URLs()[0]
	r := &ringOfThree{t: t, o: o}
	for range 3 {
		log, said := newHeard(t)
		o.cfg.Config.Logger = log
		r.ms = append(r.ms, ringMember{d: o.add(), said: said})
	}
	return r
}

// closeWho closes the member that logged msg and waits until node 1 has
// dropped its connection; the rest stay.
func (r *ringOfThree) closeWho(msg string) {
	t := r.t
	t.Helper()
	for i, m := range r.ms {
		if !m.said(msg) {
			continue
		}
		cid, err := m.d.Conn().GetClientID()
		require.NoError(t, err)
		m.d.Close()
		require.Eventually(t, func() bool {
			cz, err := r.o.c.Connz(0, server.ConnzOptions{CID: cid})
			return err == nil && len(cz.Conns) == 0
		}, time.Minute, 10*time.Millisecond, "node 1 drops the closed coordinator's connection")
		r.ms = slices.Delete(r.ms, i, i+1)
		return
	}
	t.Fatalf("no coordinator logged %q", msg)
}

// TestClusterReadsYourWritesAcrossCoordinators: an administrator's script
// creates a town, adds a rig and removes it, each step answered by a
// different coordinator whose watch has not brought the step before (the
// watches are paused): each step finds what the one before wrote, in the
// store. Without the read-through, rig.add says the town does not exist
// (requireTown) and rig.remove that the rig does not (removeRig).
func TestClusterReadsYourWritesAcrossCoordinators(t *testing.T) {
	r := startRingOfThree(t)
	o := r.o
	admin, err := o.node(0, nats.UserInfo(bus.AdminUser, clusterAdminPassword), nats.CustomInboxPrefix(schemas.AdminInbox))
	require.NoError(t, err)
	call := func(method string, body any) error {
		subject, err := schemas.Admin(method)
		require.NoError(t, err)
		b, err := json.Marshal(body)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return bus.Call(ctx, admin, &nats.Msg{Subject: subject, Data: b}, nil)
	}

	pauseWatches(t.Context(), t, r.ms[0].d.StateConn(), schemas.BucketTowns, schemas.BucketRigs)
	require.NoError(t, call(schemas.AdminTownCreate, schemas.TownCreate{TownID: "alpha"}))
	r.closeWho("town created")
	require.NoError(t, call(schemas.AdminRigAdd, schemas.RigAdd{TownID: "alpha", RigID: "web", GitURL: "https://example.com/web.git"}),
		"the town another coordinator created is found")
	r.closeWho("rig added")
	require.NoError(t, call(schemas.AdminRigRemove, schemas.RigRemove{TownID: "alpha", RigID: "web"}),
		"the rig another coordinator added is found")
	require.True(t, r.ms[0].said("rig removed"))
}

// TestClusterAgentCallsBeforeTheWatch: an agent another coordinator has
// just made calls a tool on one whose watch has not brought it (the
// watches are paused), as a town's mayor does right after the town is
// created, or a polecat right after its dispatch. Its prime is its
// record in the store, and its bead.get finds the bead another
// coordinator created. Before the fix the middleware refused the call
// (permission_denied, "no agent mayor"), and prime and bead.get answered
// from the view.
func TestClusterAgentCallsBeforeTheWatch(t *testing.T) {
	r := startRingOfThree(t)
	o := r.o
	pauseWatches(t.Context(), t, r.ms[0].d.StateConn(), schemas.BucketTowns, schemas.BucketAgents, schemas.BucketBeads)
	require.NoError(t, o.admin(schemas.AdminTownCreate, schemas.TownCreate{TownID: "alpha"}, nil))
	r.closeWho("town created")
	// A bead written to the store as another coordinator writes one:
	// no coordinator left has it in its view.
	js, err := jetstream.New(r.ms[0].d.StateConn())
	require.NoError(t, err)
	beads, err := js.KeyValue(t.Context(), schemas.BucketBeads)
	require.NoError(t, err)
	bead, err := json.Marshal(coordinator.Bead{TownID: "alpha", BeadID: "b-1", Type: coordinator.BeadIssue, Status: coordinator.BeadOpen, Title: "plan"})
	require.NoError(t, err)
	_, err = beads.Create(t.Context(), schemas.Key("alpha", "b-1"), bead)
	require.NoError(t, err)

	town, err := schemas.ForTown("alpha")
	require.NoError(t, err)
	tok := o.token("alpha")
	nc, err := o.node(0, nats.Token(tok), nats.CustomInboxPrefix(town.Inbox()))
	require.NoError(t, err)
	call := func(method string, body, out any) error {
		m := nats.NewMsg("gastown.town.alpha.rpc." + method)
		m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+tok)
		m.Header.Set(schemas.AgentIDHeader, coordinator.MayorID)
		m.Header.Set(schemas.RigIDHeader, coordinator.MayorRig)
		var err error
		m.Data, err = json.Marshal(body)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return bus.Call(ctx, nc, m, out)
	}
	var p coordinator.Prime
	require.NoError(t, call(schemas.ToolPrime, struct{}{}, &p), "the mayor another coordinator made may call")
	require.Equal(t, coordinator.MayorID, p.AgentID)
	require.Equal(t, schemas.RoleMayor, p.Role)
	var got coordinator.Bead
	require.NoError(t, call(schemas.ToolBeadGet, schemas.BeadRef{BeadID: "b-1"}, &got), "the bead another coordinator created is found")
	require.Equal(t, "plan", got.Title)
	// An agent the store has not either is refused as before.
	m := nats.NewMsg("gastown.town.alpha.rpc." + schemas.ToolPrime)
	m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+tok)
	m.Header.Set(schemas.AgentIDHeader, "nobody")
	m.Header.Set(schemas.RigIDHeader, "web")
	m.Data = []byte("{}")
	err = bus.Call(t.Context(), nc, m, nil)
	require.Equal(t, schemas.CodePermissionDenied, schemas.CodeOf(err), "%v", err)
}
