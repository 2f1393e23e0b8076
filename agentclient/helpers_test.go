package agentclient_test

import (
	"context"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/stretchr/testify/require"
)

// startContainer starts a token source for town on h's bus with a
// bootstrap token of ttl, and closes it when the test ends.
func startContainer(t *testing.T, h *coordinatortest.Harness, town string, ttl time.Duration, mod ...func(*agentclient.Config)) *agentclient.TokenSource {
	t.Helper()
	tok, _, err := h.Issuer.MintContainer(town, "", ttl)
	require.NoError(t, err)
	cfg := agentclient.Config{
		URL: h.URL(), Token: tok, ContainerID: "c-" + town,
		TokenFile: t.TempDir() + "/token", Logger: bustest.Logger(t),
		RequestTimeout: 2 * time.Second,
	}
	for _, m := range mod {
		m(&cfg)
	}
	src, err := agentclient.Start(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(src.Close)
	return src
}
