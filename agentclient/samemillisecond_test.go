package agentclient_test

import (
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// TestSameMillisecondRotationIsHeld: rotations minted within one
// millisecond (here, on a coordinator whose clock stands still) are still
// different tokens (their jti), and the container holds and writes the one
// pushed last, on the same connection: an acknowledged rotation is always
// the token held.
func TestSameMillisecondRotationIsHeld(t *testing.T) {
	frozen := time.Now()
	h := coordinatortest.Start(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute,
		Now: func() time.Time { return frozen }})
	var tokenFile string
	src := startContainer(t, h, "still", time.Hour, func(c *agentclient.Config) { tokenFile = c.TokenFile })
	client := agentclient.NewClient(src, "", "")
	require.NoError(t, ping(t, client))
	for range 3 {
		before := src.Token()
		var res schemas.RotateResult
		adminCall(t, h, schemas.AdminTokenRotate, "still", &res)
		require.True(t, res.Acknowledged, "%+v", res)
		require.True(t, before != src.Token(), "the pushed token is held") // never print a token
		onDisk, err := agentclient.ReadTokenFile(tokenFile)
		require.NoError(t, err)
		require.True(t, src.Token() == onDisk, "the token file holds it too")
		require.NoError(t, ping(t, client))
	}
	require.Zero(t, src.Switches(), "a token of the same millisecond is no reason to reconnect")
}
