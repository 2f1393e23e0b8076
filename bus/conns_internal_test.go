package bus

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The town cap counts live connections only: at the cap, the town's
// records are checked against the server first. The sweep forgets closed
// connections and keeps the town index in step with the records.
func TestAdmitAndDropClosed(t *testing.T) {
	var mu sync.Mutex
	live := map[uint64]bool{}
	a := &authenticator{authLimits: authLimits{now: time.Now, townConns: 2,
		live: func(id uint64) bool { mu.Lock(); defer mu.Unlock(); return live[id] }}}
	open := func(id uint64, town string) bool {
		mu.Lock()
		live[id] = true
		mu.Unlock()
		ok, _ := a.admit(id, tokenConn{town: town, deadline: time.Now().Add(time.Hour)})
		return ok
	}
	closeConn := func(id uint64) {
		mu.Lock()
		delete(live, id)
		mu.Unlock()
	}
	require.True(t, open(1, "A"))
	require.True(t, open(2, "A"))
	require.False(t, open(3, "A"), "over the cap")
	closeConn(3) // the refused connection is closed by the server
	require.True(t, open(4, "B"), "another town is not held back")

	closeConn(1)
	require.True(t, open(5, "A"), "a closed connection frees its slot before any sweep")
	require.NotContains(t, a.conns, uint64(1))
	require.Len(t, a.byTown["A"], 2)

	for _, id := range []uint64{2, 4, 5} {
		closeConn(id)
	}
	buf := a.dropClosed(nil)
	require.Empty(t, a.conns)
	require.Empty(t, a.byTown, "the town index empties with the records")
	a.dropClosed(buf) // a sweep of nothing is fine
}

// A connection that passed the token check just before a kick of its town,
// and is recorded just after it, is refused: the kick did not see it.
func TestAdmitAfterKick(t *testing.T) {
	a := &authenticator{authLimits: authLimits{now: time.Now}}
	issued := time.Now()
	a.mu.Lock()
	a.revokeLocked("A", issued.Add(time.Millisecond))
	a.mu.Unlock()
	ok, revoked := a.admit(1, tokenConn{town: "A", issuedAt: issued, deadline: time.Now().Add(time.Hour)})
	require.False(t, ok)
	require.True(t, revoked, "a token issued before the kick is not admitted after it")
	ok, revoked = a.admit(2, tokenConn{town: "A", issuedAt: issued.Add(2 * time.Millisecond), deadline: time.Now().Add(time.Hour)})
	require.True(t, ok, "a token issued after the kick is")
	require.False(t, revoked)
	ok, _ = a.admit(3, tokenConn{town: "B", issuedAt: issued, deadline: time.Now().Add(time.Hour)})
	require.True(t, ok, "another town is not affected")
}
