package coordinator_test

import (
	"testing"
	"time"

	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestCloseCancelsBlockedHandlers: Close cancels the handlers it waits for.
// A sling whose dispatch waits on a container that never answers (and a
// dispatch timeout of an hour) is cut short by Close: the caller is told
// the dispatch was cancelled, Close returns, and the container is still
// sitting on the request it never answered.
func TestCloseCancelsBlockedHandlers(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{DispatchTimeout: time.Hour})
	slingOne(t, h) // town T, rig r, bead b
	tw, err := schemas.ForTown("T")
	require.NoError(t, err)
	received := make(chan struct{}, 1)
	answered := make(chan struct{})
	_, err = h.Conn().QueueSubscribe(tw.Dispatch(), schemas.ContainerQueue, func(*nats.Msg) {
		received <- struct{}{} // and never answer
	})
	require.NoError(t, err)
	require.NoError(t, h.Conn().Flush())

	var res schemas.SlingResult
	var slingErr error
	go func() {
		defer close(answered)
		slingErr = admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res)
	}()
	<-received // the sling's handler now waits on the container
	h.Daemon.Close()
	<-answered
	require.NoError(t, slingErr)
	require.False(t, res.Dispatched)
	require.Contains(t, res.Error, "container did not answer: context canceled", "the handler's wait was cancelled, not timed out")
	require.Len(t, received, 0, "the container got the one request and never answered it")
}
