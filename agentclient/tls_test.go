package agentclient_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// TestContainerOverTLS: a container given the CA and its client
// certificate connects to a bus that requires them over tls://, calls a
// tool and gets a fresh token; without the certificate, or without the
// CA, it is refused at once.
func TestContainerOverTLS(t *testing.T) {
	certs := bustest.NewCerts(t)
	h := coordinatortest.StartWith(t, coordinator.Config{}, bus.Config{TLS: certs.ServerTLS(true)})
	require.True(t, strings.HasPrefix(h.URL(), "tls://"), h.URL())

	src := startContainer(t, h, "alpha", time.Hour, func(c *agentclient.Config) { c.TLS = certs.ClientTLS() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out map[string]any
	require.NoError(t, agentclient.NewClient(src, "", "").Call(ctx, "ping", nil, &out))
	before := src.Token()
	require.NoError(t, src.Refresh(ctx))
	require.NotEqual(t, before, src.Token(), "token.get answered over TLS")

	for name, tls := range map[string]bus.ClientTLS{
		"no client certificate": {CAFile: certs.CAFile},
		"no CA":                 {CertFile: certs.ClientCert, KeyFile: certs.ClientKey},
		"nothing":               {},
	} {
		t.Run(name, func(t *testing.T) {
			tok, _, err := h.Issuer.MintContainer("alpha", "", time.Hour)
			require.NoError(t, err)
			_, err = agentclient.Start(ctx, agentclient.Config{URL: h.URL(), Token: tok, TokenFile: t.TempDir() + "/token", TLS: tls})
			require.Error(t, err)
		})
	}
	t.Run("a certificate without its key", func(t *testing.T) {
		_, err := agentclient.Start(ctx, agentclient.Config{URL: h.URL(), Token: h.ContainerToken("alpha"),
			TLS: bus.ClientTLS{CAFile: certs.CAFile, CertFile: certs.ClientCert}})
		require.ErrorContains(t, err, "needs its key")
	})
}

// TestAgentsGetTheTLSFiles: a container given its TLS files by relative
// paths passes them to its agents as absolute paths in GASTOWN_NATS_CA,
// GASTOWN_NATS_CERT and GASTOWN_NATS_KEY, and still never the token.
func TestAgentsGetTheTLSFiles(t *testing.T) {
	certs := bustest.NewCerts(t)
	h := coordinatortest.StartWith(t, coordinator.Config{}, bus.Config{TLS: certs.ServerTLS(true)})
	wd, err := os.Getwd()
	require.NoError(t, err)
	relTo := func(p string) string {
		r, err := filepath.Rel(wd, p)
		require.NoError(t, err)
		return r
	}
	rel := bus.ClientTLS{CAFile: relTo(certs.CAFile), CertFile: relTo(certs.ClientCert), KeyFile: relTo(certs.ClientKey)}
	require.False(t, filepath.IsAbs(rel.CAFile))
	cr := runContainer(t, h, "W", 5*time.Second, func(c *agentclient.ContainerConfig) { c.Source.TLS = rel })
	out := t.TempDir()
	res, _ := dispatch(t, h, schemas.StartAgent{TownID: "W", RigID: "r", AgentID: "mayor", RunID: "run1", Role: schemas.RoleMayor,
		Workspace: schemas.Workspace{Kind: schemas.WorkspaceEmpty}, Env: map[string]string{"AGENT_OUT": out}})
	require.True(t, res.OK, res.Error)
	base := filepath.Join(out, "mayor-run1")
	require.Eventually(t, func() bool { _, err := os.Stat(base + ".ready"); return err == nil }, 20*time.Second, 10*time.Millisecond)
	env := readEnv(t, base+".env")
	require.Equal(t, certs.CAFile, env[agentclient.EnvNatsCA])
	require.Equal(t, certs.ClientCert, env[agentclient.EnvNatsCert])
	require.Equal(t, certs.ClientKey, env[agentclient.EnvNatsKey])
	require.Equal(t, h.URL(), env[agentclient.EnvNatsURL])
	envText, err := os.ReadFile(base + ".env")
	require.NoError(t, err)
	require.NotContains(t, string(envText), cr.token)
}
