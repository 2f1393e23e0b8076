package coordinator

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// News of a town's container clears its no-container warning only when
// it came after the failure: a dispatch answered just before the
// container died, and recorded after a dispatch that failed for its
// death, leaves the warning given (TestNoContainerWarnedOnce saw a third
// warning under load).
func TestNoContainerClearedOnlyByLaterNews(t *testing.T) {
	var s townSet
	answered := s.stamp() // a dispatch is answered
	failed := s.stamp()   // the next one finds no container
	require.True(t, s.add("T", failed), "the first failure warns")
	s.remove("T", answered) // the answered one is recorded late
	require.False(t, s.add("T", s.stamp()), "the next failure does not warn")
	s.remove("T", s.stamp()) // a heartbeat after the failure
	require.True(t, s.add("T", s.stamp()), "the container was back: a failure warns again")
}
