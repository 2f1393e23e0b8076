package bus

import (
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// countFixture is a cluster count without a connection: events and
// CONNZ answers are handed to it, on a clock of the test's.
type countFixture struct {
	c   *clusterConns
	now time.Time
}

func newCountFixture(limit int) *countFixture {
	f := &countFixture{now: time.Unix(1_800_000_000, 0)}
	f.c = &clusterConns{limit: limit, every: time.Second, now: func() time.Time { return f.now },
		log: slog.New(slog.DiscardHandler), servers: map[string]*serverConns{}, towns: map[string]int{},
		pending: map[string][]pendingGrant{}, gone: map[connKey]time.Time{}, early: map[string][]time.Time{}, id: "me"}
	return f
}

func (f *countFixture) event(t *testing.T, connect bool, server string, cid uint64, name string) {
	t.Helper()
	var e connEventMsg
	e.Server.ID, e.Client.ID, e.Client.User = server, cid, name
	b, err := json.Marshal(e)
	require.NoError(t, err)
	f.c.onEvent(&nats.Msg{Data: b}, connect)
}

// connz is a reconcile whose servers answered with conns (cid → name).
func (f *countFixture) connz(answers map[string]map[uint64]string, replay ...connEvent) {
	var pages []connzReply
	for id, conns := range answers {
		var p connzReply
		p.Server.ID = id
		for cid, name := range conns {
			p.Data.Conns = append(p.Data.Conns, struct {
				CID  uint64 `json:"cid"`
				User string `json:"authorized_user"`
			}{cid, name})
		}
		pages = append(pages, p)
	}
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	f.c.applyReconcileLocked(pages, replay, f.now)
}

// note hands the fixture a grant note from coordinator from.
func (f *countFixture) note(t *testing.T, from, town, name string) {
	t.Helper()
	b, err := json.Marshal(grantNote{From: from, Town: town, Name: name})
	require.NoError(t, err)
	f.c.onGrant(&nats.Msg{Data: b})
}

func (f *countFixture) total(town string) int {
	live, pending := f.c.count(town)
	return live + pending
}

func TestClusterCount(t *testing.T) {
	const a1, a2 = "town:alpha;iat=1", "town:alpha;iat=2"
	t.Run("grants count until announced, closes free them", func(t *testing.T) {
		f := newCountFixture(2)
		require.True(t, f.c.admit("alpha", a1))
		require.True(t, f.c.admit("alpha", a1))
		require.False(t, f.c.admit("alpha", a1), "two grants not yet announced")
		require.True(t, f.c.admit("beta", "town:beta;iat=1"), "another town")
		f.event(t, true, "S1", 7, a1)
		f.event(t, true, "S2", 3, a1)
		live, pending := f.c.count("alpha")
		require.Equal(t, [2]int{2, 0}, [2]int{live, pending}, "the announcements confirm the grants")
		f.event(t, true, "S2", 3, a1) // an event twice changes nothing
		require.Equal(t, 2, f.total("alpha"))
		require.False(t, f.c.admit("alpha", a1))
		f.event(t, false, "S1", 7, a1)
		require.True(t, f.c.admit("alpha", a1), "a close frees its slot")
		f.event(t, true, "S1", 8, "admin")
		require.Equal(t, 2, f.total("alpha"), "not a container's connection")
	})
	t.Run("a grant never announced stops counting", func(t *testing.T) {
		f := newCountFixture(1)
		require.True(t, f.c.admit("alpha", a1))
		require.False(t, f.c.admit("alpha", a1))
		f.now = f.now.Add(grantGrace)
		require.True(t, f.c.admit("alpha", a1))
	})
	t.Run("the other coordinators' grants count until announced", func(t *testing.T) {
		f := newCountFixture(2)
		f.note(t, "other", "alpha", a1)
		f.note(t, "me", "alpha", a1)   // its own, echoed
		f.note(t, "other", "beta", a1) // a note whose name is not its town's
		require.Equal(t, 1, f.total("alpha"))
		require.True(t, f.c.admit("alpha", a1))
		require.False(t, f.c.admit("alpha", a1), "one granted here, one elsewhere")
		f.event(t, true, "S1", 1, a1)
		f.event(t, true, "S2", 1, a1)
		live, pending := f.c.count("alpha")
		require.Equal(t, [2]int{2, 0}, [2]int{live, pending})
		// A server announces another coordinator's grant before its note.
		f.event(t, false, "S1", 1, a1)
		f.event(t, true, "S1", 2, a2)
		f.note(t, "other", "alpha", a2)
		require.Equal(t, 2, f.total("alpha"), "the late note counted the connection twice")
		f.now = f.now.Add(grantGrace)
		f.event(t, true, "S1", 3, "town:alpha;iat=3") // its note never comes
		f.now = f.now.Add(grantGrace)
		f.note(t, "other", "alpha", "town:alpha;iat=3")
		require.Equal(t, 4, f.total("alpha"), "an early announcement is forgotten after the grace")
	})
	t.Run("a close announced before its connect", func(t *testing.T) {
		f := newCountFixture(2)
		f.event(t, false, "S1", 9, a2)
		f.event(t, true, "S1", 9, a2)
		require.Zero(t, f.total("alpha"))
	})
	t.Run("CONNZ replaces the lists but does not bring back a closed one", func(t *testing.T) {
		f := newCountFixture(4)
		f.event(t, true, "S1", 1, a1)
		f.event(t, true, "S1", 2, a1)
		f.event(t, false, "S1", 2, a1)
		// S1 still lists 2 (it announces a close before it forgets the
		// connection), and 3, whose connect this coordinator missed; S2
		// lists one more; one connect arrived after the question.
		f.connz(map[string]map[uint64]string{"S1": {1: a1, 2: a1, 3: a2}, "S2": {5: a2, 6: "admin"}},
			connEvent{connect: true, server: "S2", cid: 7, name: a2})
		live, _ := f.c.count("alpha")
		require.Equal(t, 4, live, "1, 3, 5 and 7")
	})
	t.Run("a server that misses two reconciles is taken for dead", func(t *testing.T) {
		f := newCountFixture(4)
		f.connz(map[string]map[uint64]string{"S1": {1: a1}, "S2": {2: a1, 3: a1}})
		require.Equal(t, 3, f.total("alpha"))
		f.connz(map[string]map[uint64]string{"S1": {1: a1}})
		require.Equal(t, 3, f.total("alpha"), "one missed answer (a loaded server) keeps its connections")
		f.connz(map[string]map[uint64]string{"S1": {1: a1}, "S2": {2: a1, 3: a1}})
		f.connz(map[string]map[uint64]string{"S1": {1: a1}})
		require.Equal(t, 3, f.total("alpha"), "the count of misses starts again after an answer")
		f.connz(map[string]map[uint64]string{"S1": {1: a1}})
		require.Equal(t, 1, f.total("alpha"))
	})
	t.Run("closes are forgotten after a while", func(t *testing.T) {
		f := newCountFixture(4)
		f.event(t, false, "S1", 1, a1)
		f.now = f.now.Add(f.c.goneFor())
		f.connz(map[string]map[uint64]string{"S1": {}})
		require.Empty(t, f.c.gone)
	})
}
