package schemas_test

import (
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// TestTownSubjects holds the subject builders to the table in PROTOCOL.md.
func TestTownSubjects(t *testing.T) {
	town, err := schemas.ForTown("A")
	require.NoError(t, err)
	require.Equal(t, "A", town.ID())

	rpc, err := town.RPC("bead.get")
	require.NoError(t, err)
	holder, err := town.HolderRPC("bead.get")
	require.NoError(t, err)

	for _, tc := range []struct{ name, got, want string }{
		{"token", town.Token(), "gastown.town.A.token"},
		{"token.get", town.TokenGet(), "gastown.town.A.token.get"},
		{"dispatch", town.Dispatch(), "gastown.town.A.dispatch"},
		{"control.stop", town.ControlStop(), "gastown.town.A.control.stop"},
		{"control wildcard", town.Control(), "gastown.town.A.control.>"},
		{"heartbeat", town.Heartbeat(), "gastown.town.A.heartbeat"},
		{"rpc method", rpc, "gastown.town.A.rpc.bead.get"},
		{"rpc wildcard", town.RPCAll(), "gastown.town.A.rpc.>"},
		{"holder rpc method", holder, "gastown.town.A.holder.rpc.bead.get"},
		{"holder rpc wildcard", town.HolderRPCAll(), "gastown.town.A.holder.rpc.>"},
		{"all towns holder rpc", schemas.AllTowns.HolderRPCAll(), "gastown.town.*.holder.rpc.>"},
		{"events", town.Events(), "gastown.town.A.events"},
		{"inbox", town.Inbox(), "_INBOX.gastown.A"},
		{"all towns heartbeat", schemas.AllTowns.Heartbeat(), "gastown.town.*.heartbeat"},
		{"all towns events", schemas.AllTowns.Events(), "gastown.town.*.events"},
		{"admin wildcard", schemas.AdminAll, "gastown.admin.>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.got)
		})
	}
}

func TestTownSubjectsUseTheTownID(t *testing.T) {
	town, err := schemas.ForTown("town_9-x")
	require.NoError(t, err)
	require.Equal(t, "gastown.town.town_9-x.dispatch", town.Dispatch())
	require.Equal(t, "_INBOX.gastown.town_9-x", town.Inbox())
}

func TestForTownRefusesBadIDs(t *testing.T) {
	for _, id := range []string{"", "a.b", "*", ">", "a b", "é", "a\n"} {
		t.Run(id, func(t *testing.T) {
			_, err := schemas.ForTown(id)
			require.True(t, errors.Is(err, schemas.ErrInvalidID), "%v", err)
		})
	}
}

func TestRPCAndAdminRefuseBadMethods(t *testing.T) {
	town, err := schemas.ForTown("A")
	require.NoError(t, err)
	for _, m := range []string{"", "bead.>", "bead.*", "bead..get", "bead get"} {
		t.Run(m, func(t *testing.T) {
			s, err := town.RPC(m)
			require.True(t, errors.Is(err, schemas.ErrInvalidID), "%v", err)
			require.Empty(t, s)
			s, err = town.HolderRPC(m)
			require.True(t, errors.Is(err, schemas.ErrInvalidID), "%v", err)
			require.Empty(t, s)
			s, err = schemas.Admin(m)
			require.True(t, errors.Is(err, schemas.ErrInvalidID), "%v", err)
			require.Empty(t, s)
		})
	}
}

// TestRPCMethod: both RPC subjects name the same method; nothing else
// names one.
func TestRPCMethod(t *testing.T) {
	for rest, want := range map[string]string{"rpc.bead.get": "bead.get", "holder.rpc.bead.get": "bead.get", "rpc.ping": "ping"} {
		m, ok := schemas.RPCMethod(rest)
		require.True(t, ok, rest)
		require.Equal(t, want, m, rest)
	}
	for _, rest := range []string{"heartbeat", "holder.ping", "token.get", "rpcx.ping", "holder.rpcx.ping"} {
		_, ok := schemas.RPCMethod(rest)
		require.False(t, ok, rest)
	}
}

func TestAdminSubject(t *testing.T) {
	s, err := schemas.Admin(schemas.AdminTokenRotate)
	require.NoError(t, err)
	require.Equal(t, "gastown.admin.token.rotate", s)
	s, err = schemas.Admin(schemas.AdminTokenRevoke)
	require.NoError(t, err)
	require.Equal(t, "gastown.admin.token.revoke", s)
}

func TestParseTownSubject(t *testing.T) {
	good := []struct{ subject, town, rest string }{
		{"gastown.town.A.rpc.bead.get", "A", "rpc.bead.get"},
		{"gastown.town.A.heartbeat", "A", "heartbeat"},
		{"gastown.town.town-1_x.token.get", "town-1_x", "token.get"},
	}
	for _, tc := range good {
		t.Run("good/"+tc.subject, func(t *testing.T) {
			town, rest, err := schemas.ParseTownSubject(tc.subject)
			require.NoError(t, err)
			require.Equal(t, tc.town, town)
			require.Equal(t, tc.rest, rest)
		})
	}

	// Every subject a builder makes parses back to its town.
	town, err := schemas.ForTown("B")
	require.NoError(t, err)
	for _, s := range []string{town.Token(), town.TokenGet(), town.Dispatch(), town.ControlStop(), town.Heartbeat(), town.Events()} {
		t.Run("built/"+s, func(t *testing.T) {
			id, _, err := schemas.ParseTownSubject(s)
			require.NoError(t, err)
			require.Equal(t, "B", id)
		})
	}

	bad := []struct{ name, subject string }{
		{"empty", ""},
		{"other root", "gastown.admin.token.rotate"},
		{"root only", "gastown.town"},
		{"root and dot", "gastown.town."},
		{"no leaf", "gastown.town.A"},
		{"empty leaf", "gastown.town.A."},
		{"empty town", "gastown.town..heartbeat"},
		{"wildcard town", "gastown.town.*.heartbeat"},
		{"full wildcard town", "gastown.town.>.heartbeat"},
		{"prefix look-alike", "gastown.townA.heartbeat"},
		{"inbox", "_INBOX.gastown.A.x"},
		{"unicode town", "gastown.town.é.heartbeat"},
	}
	for _, tc := range bad {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			town, rest, err := schemas.ParseTownSubject(tc.subject)
			require.True(t, errors.Is(err, schemas.ErrInvalidID), "%v", err)
			require.Empty(t, town)
			require.Empty(t, rest)
		})
	}
}
