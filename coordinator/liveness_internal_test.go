package coordinator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// After a restart a town's runs may be declared dead once its container
// has been heard from again (a run it does not list is not running), or
// once the grace has passed; never before, because the coordinator was
// down, and the grace never adds to a run's own silence.
func TestLivenessSettled(t *testing.T) {
	start := time.Unix(1000, 0)
	l := &liveness{lastSeen: map[seenKey]time.Time{}, startedAt: start, restartGrace: time.Minute}
	// Heartbeats stored before the restart do not settle a town.
	l.record(heartbeatRecord{TownID: "A", ReceivedAt: start.Add(-time.Second)})
	require.False(t, l.settled("A", start.Add(time.Second)))
	require.False(t, l.settled("B", start.Add(time.Second)))
	// A heartbeat after the start settles its town, not another.
	l.record(heartbeatRecord{TownID: "A", ReceivedAt: start.Add(2 * time.Second)})
	require.True(t, l.settled("A", start.Add(3*time.Second)))
	require.False(t, l.settled("B", start.Add(3*time.Second)))
	// After the grace every town is settled.
	require.True(t, l.settled("B", start.Add(time.Minute)))
	// What was seen is the run's own last heartbeat, not the start.
	l.record(heartbeatRecord{TownID: "A", ReceivedAt: start.Add(-time.Second), Agents: nil})
	require.Equal(t, start.Add(-5*time.Second), l.seen("A", "p", "r", start.Add(-5*time.Second)))
}
