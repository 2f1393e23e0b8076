package bus

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The authenticator hears of every token connection but never of its end:
// entries whose deadline has passed must not pile up for Kick forever.
func TestRememberSweepsExpiredConnections(t *testing.T) {
	now := time.Now()
	a := &authenticator{}
	var id uint64
	add := func(deadline time.Time) uint64 {
		id++
		a.rememberLocked(id, tokenConn{town: "A", issuedAt: now.Add(-time.Hour), deadline: deadline}, now)
		return id
	}
	live := map[uint64]bool{}
	for range 50 {
		live[add(now.Add(time.Hour))] = true
	}
	live[add(time.Time{})] = true // no deadline: kept
	for range 10_000 {
		add(now.Add(-time.Second))
		require.LessOrEqual(t, len(a.conns), 2*len(live)+1)
	}
	for id := range live {
		require.Contains(t, a.conns, id, "a live connection was forgotten")
	}
}
