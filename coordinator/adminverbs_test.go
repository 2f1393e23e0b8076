package coordinator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// townKeys lists every key of town in every state bucket.
func townKeys(t *testing.T, h *coordinatortest.Harness, town string) map[string][]string {
	t.Helper()
	js, err := jetstream.New(h.StateConn())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string][]string{}
	for _, name := range schemas.StateBuckets {
		kv, err := js.KeyValue(ctx, name)
		require.NoError(t, err)
		keys, err := kv.Keys(ctx)
		if err == jetstream.ErrNoKeysFound {
			continue
		}
		require.NoError(t, err)
		for _, k := range keys {
			if k == town || strings.HasPrefix(k, town+".") {
				out[name] = append(out[name], k)
			}
		}
	}
	return out
}

func requireCode(t *testing.T, err error, code schemas.Code) {
	t.Helper()
	require.Error(t, err)
	var e *schemas.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, code, e.Code, "%v", err)
}

// Unknown towns are not_found everywhere, and a refused request writes
// nothing.
func TestAdminUnknownTown(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	for method, body := range map[string]any{
		schemas.AdminTokenRevoke: schemas.TownRequest{TownID: "nosuchtown"},
		schemas.AdminTokenRotate: schemas.TownRequest{TownID: "nosuchtown"},
		schemas.AdminStatus:      schemas.TownRequest{TownID: "nosuchtown"},
		schemas.AdminTownShow:    schemas.TownRequest{TownID: "nosuchtown"},
		schemas.AdminTownDelete:  schemas.TownDelete{TownID: "nosuchtown", Force: true},
		schemas.AdminRigList:     schemas.TownRequest{TownID: "nosuchtown"},
		schemas.AdminRigRemove:   schemas.RigRemove{TownID: "nosuchtown", RigID: "r"},
		schemas.AdminBeadList:    schemas.BeadList{TownID: "nosuchtown"},
		schemas.AdminBeadShow:    schemas.TownBeadRef{TownID: "nosuchtown", BeadID: "b"},
		schemas.AdminConvoyList:  schemas.TownRequest{TownID: "nosuchtown"},
		schemas.AdminConvoyShow:  schemas.ConvoyRef{TownID: "nosuchtown", ConvoyID: "c"},
	} {
		t.Run(method, func(t *testing.T) { requireCode(t, admin(t, h, method, body, nil), schemas.CodeNotFound) })
	}
	require.Empty(t, townKeys(t, h, "nosuchtown"), "a refused request wrote a record")
	requireCode(t, admin(t, h, schemas.AdminBeadList, schemas.BeadList{TownID: "T", Status: "done"}, nil), schemas.CodeInvalidArgument)
}

// The listing verbs show what the create verbs made.
func TestAdminListAndShow(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{DispatchCooldown: time.Hour})
	slingOne(t, h) // town T, rig r, bead b
	require.NoError(t, admin(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: "U", UserID: "bob"}, nil))
	var convoy coordinator.Bead
	require.NoError(t, admin(t, h, schemas.AdminConvoy, schemas.AdminConvoyCreate{TownID: "T",
		ConvoyCreate: schemas.ConvoyCreate{Title: "one", Beads: []string{"b"}}}, &convoy))

	var towns []schemas.TownSummary
	require.NoError(t, admin(t, h, schemas.AdminTownList, schemas.TownList{}, &towns))
	require.Len(t, towns, 2)
	require.Equal(t, "T", towns[0].TownID)
	require.Equal(t, 1, towns[0].Rigs)
	require.Equal(t, map[string]int{"open": 2}, towns[0].Beads, "the bead and its convoy")
	require.False(t, towns[0].ContainerConnected)
	require.Equal(t, "bob", towns[1].UserID)

	var show coordinator.TownShow
	require.NoError(t, admin(t, h, schemas.AdminTownShow, schemas.TownRequest{TownID: "T"}, &show))
	require.Equal(t, "T", show.Town.TownID)
	require.Len(t, show.Rigs, 1)

	var rigs []coordinator.Rig
	require.NoError(t, admin(t, h, schemas.AdminRigList, schemas.TownRequest{TownID: "T"}, &rigs))
	require.Equal(t, "r", rigs[0].RigID)

	var beads []coordinator.Bead
	require.NoError(t, admin(t, h, schemas.AdminBeadList, schemas.BeadList{TownID: "T", Type: "issue"}, &beads))
	require.Len(t, beads, 1)
	require.Equal(t, "b", beads[0].BeadID)
	var b coordinator.Bead
	require.NoError(t, admin(t, h, schemas.AdminBeadShow, schemas.TownBeadRef{TownID: "T", BeadID: "b"}, &b))
	require.Equal(t, convoy.BeadID, b.ConvoyID)
	requireCode(t, admin(t, h, schemas.AdminBeadShow, schemas.TownBeadRef{TownID: "T", BeadID: "nope"}, nil), schemas.CodeNotFound)

	var convoys []schemas.ConvoyStatus
	require.NoError(t, admin(t, h, schemas.AdminConvoyList, schemas.TownRequest{TownID: "T"}, &convoys))
	require.Equal(t, []schemas.ConvoyStatus{{ConvoyID: convoy.BeadID, Title: "one", Tracked: 1, Open: []string{"b"}}}, convoys)
	var cs schemas.ConvoyStatus
	require.NoError(t, admin(t, h, schemas.AdminConvoyShow, schemas.ConvoyRef{TownID: "T", ConvoyID: convoy.BeadID}, &cs))
	require.Equal(t, convoys[0], cs)
	requireCode(t, admin(t, h, schemas.AdminConvoyShow, schemas.ConvoyRef{TownID: "T", ConvoyID: "b"}, nil), schemas.CodeInvalidArgument)

	var st coordinator.TownStatus
	require.NoError(t, admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "T"}, &st))
	require.Equal(t, convoys, st.Convoys)
	require.Equal(t, 2, st.Summary.Beads["open"])
}

// rig.remove refuses while the rig has unfinished work, unless forced.
func TestAdminRigRemove(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{DispatchCooldown: time.Hour})
	slingOne(t, h)
	var res schemas.SlingResult
	require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res))
	requireCode(t, admin(t, h, schemas.AdminRigRemove, schemas.RigRemove{TownID: "T", RigID: "r"}, nil), schemas.CodeConflict)
	requireCode(t, admin(t, h, schemas.AdminRigRemove, schemas.RigRemove{TownID: "T", RigID: "nope"}, nil), schemas.CodeNotFound)
	var removed schemas.RigRemoveResult
	require.NoError(t, admin(t, h, schemas.AdminRigRemove, schemas.RigRemove{TownID: "T", RigID: "r", Force: true}, &removed))
	require.Equal(t, []string{res.AgentID}, removed.Agents)
	require.Equal(t, []string{"b"}, removed.FailedBeads)
	require.Equal(t, coordinator.BeadFailed, bead(t, h, "b").Status)
	var rigs []coordinator.Rig
	require.NoError(t, admin(t, h, schemas.AdminRigList, schemas.TownRequest{TownID: "T"}, &rigs))
	require.Empty(t, rigs)
	require.NotContains(t, townKeys(t, h, "T")[schemas.BucketAgents], "T."+res.AgentID)
}

// town.delete is refused while the container is connected or an agent
// works; forced, it revokes the town's tokens (closing the container's
// connections), removes every record of the town, and keeps only the
// revocation, so the old tokens stay refused even when a town of that
// name is created again.
func TestAdminTownDelete(t *testing.T) {
	const interval = 100 * time.Millisecond
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: interval, DispatchCooldown: time.Hour})
	slingOne(t, h)
	c := startBeating(t, h, "T", interval/2)
	var res schemas.SlingResult
	require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res))
	require.True(t, res.Dispatched, res.Error)
	oldToken := c.src.Token()
	require.Eventually(t, func() bool {
		var show coordinator.TownShow
		return admin(t, h, schemas.AdminTownShow, schemas.TownRequest{TownID: "T"}, &show) == nil && show.Town.ContainerConnected
	}, 10*time.Second, 10*time.Millisecond, "the container's heartbeats are seen")

	err := admin(t, h, schemas.AdminTownDelete, schemas.TownDelete{TownID: "T"}, nil)
	requireCode(t, err, schemas.CodeConflict)
	require.Contains(t, err.Error(), "connected container")
	require.NotEmpty(t, townKeys(t, h, "T")[schemas.BucketBeads], "a refused delete deleted something")

	var del schemas.TownDeleteResult
	require.NoError(t, admin(t, h, schemas.AdminTownDelete, schemas.TownDelete{TownID: "T", Force: true}, &del))
	require.GreaterOrEqual(t, del.Closed, 1, "the container's connection was closed")
	require.Equal(t, 1, del.Deleted[schemas.BucketTowns])
	require.Equal(t, 2, del.Deleted[schemas.BucketAgents], "the mayor and the polecat")
	require.Equal(t, 1, del.Deleted[schemas.BucketRigs])
	require.Equal(t, 1, del.Deleted[schemas.BucketBeads])
	c.kill() // stops its heartbeats, which would otherwise write the town's heartbeat again
	keys := townKeys(t, h, "T")
	delete(keys, schemas.BucketHeartbeats) // a heartbeat in flight may have landed after the delete
	require.Equal(t, map[string][]string{schemas.BucketTokens: {"T"}}, keys, "only the revocation is kept")
	requireCode(t, admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "T"}, nil), schemas.CodeNotFound)
	var towns []schemas.TownSummary
	require.NoError(t, admin(t, h, schemas.AdminTownList, schemas.TownList{}, &towns))
	require.Empty(t, towns)

	// A town of the same name starts afresh, and the old token stays refused.
	require.NoError(t, admin(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: "T"}, nil))
	_, err = nats.Connect(h.URL(), nats.Token(oldToken), nats.CustomInboxPrefix("_INBOX.gastown.T"), nats.MaxReconnects(0))
	require.ErrorIs(t, err, nats.ErrAuthorization, "a token of the deleted town still connects")
	nc, err := nats.Connect(h.URL(), nats.Token(h.ContainerToken("T")), nats.CustomInboxPrefix("_INBOX.gastown.T"), nats.MaxReconnects(0))
	require.NoError(t, err, "a fresh token of the new town connects")
	nc.Close()
}
