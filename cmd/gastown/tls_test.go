package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator"
	"github.com/stretchr/testify/require"
)

// httpGet fetches url and returns its body, failing on any status but 200.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", url, b)
	return string(b)
}

// agentLogs prints the agents' logs of a container's work directory.
type agentLogs struct{ work string }

func (a agentLogs) String() string {
	var b strings.Builder
	paths, _ := filepath.Glob(filepath.Join(a.work, "logs", "*.log"))
	for _, p := range paths {
		text, _ := os.ReadFile(p)
		b.WriteString("== " + filepath.Base(p) + "\n" + string(text))
	}
	return b.String()
}

// TestTLSEndToEnd runs the coordinator with mutual TLS and monitoring:
// the admin verbs, a container and the agents it starts (real `gastown
// agent sim` processes, which call tools), `gastown tool`, and the real
// nats CLI with the context `gastown ops context` writes all connect
// over tls:// with the CA and the client certificate; a client without
// them is refused; the monitoring endpoint shows the TLS connections and
// no secret.
func TestTLSEndToEnd(t *testing.T) {
	bin := binary(t)
	certs := bustest.NewCerts(t)
	addr, monitor := freeAddr(t), freeAddr(t)
	url := "tls://" + addr
	vars := map[string]string{
		"GASTOWN_JWT_SECRET":     testSecret,
		"GASTOWN_ADMIN_PASSWORD": "admin-pw-tls",
		"GASTOWN_OPS_PASSWORD":   "ops-pw-tls",
	}
	coordLogs := daemon(t, vars, "coordinator", "--listen", addr, "--data-dir", t.TempDir(),
		"--tls-cert", certs.ServerCert, "--tls-key", certs.ServerKey, "--tls-ca", certs.CAFile,
		"--monitor-listen", monitor, "--heartbeat-interval", "500ms")
	tlsArgs := []string{"--tls-ca", certs.CAFile, "--tls-cert", certs.ClientCert, "--tls-key", certs.ClientKey}
	call := adminCLI(t, vars, url)
	admin := func(args ...string) string { return call(append(args, tlsArgs...)...) }

	repo := bareRepo(t)
	admin("town", "create", "--town", "tls", "--owner", "alice")
	admin("rig", "add", "--town", "tls", "--rig", "app", "--git", repo, "--branch", "main")
	require.NotContains(t, coordLogs.String(), "NO TLS", "TLS is on: no warning")

	t.Run("admin without a client certificate", func(t *testing.T) {
		_, _, err := run(t, vars, "status", "--town", "tls", "--server", url, "--timeout", "5s", "--tls-ca", certs.CAFile)
		require.Error(t, err)
		require.Contains(t, err.Error(), "connecting to "+url+" as admin")
	})
	t.Run("admin without the CA", func(t *testing.T) {
		_, _, err := run(t, vars, "status", "--town", "tls", "--server", url, "--timeout", "5s")
		require.Error(t, err)
		require.Contains(t, err.Error(), "certificate")
	})
	t.Run("admin speaking plain NATS", func(t *testing.T) {
		_, _, err := run(t, vars, "status", "--town", "tls", "--server", "nats://"+addr, "--timeout", "5s")
		require.Error(t, err)
	})

	// The container takes its TLS files from the environment and hands
	// them to its agents.
	token, _, err := run(t, vars, "token", "mint", "--town", "tls", "--user", "alice")
	require.NoError(t, err)
	token = strings.TrimSpace(token)
	work := t.TempDir()
	sim := bin + " agent sim --work 100ms"
	contLogs := daemon(t, map[string]string{
		"GASTOWN_CONTAINER_TOKEN": token, "GASTOWN_NATS_CA": certs.CAFile,
		"GASTOWN_NATS_CERT": certs.ClientCert, "GASTOWN_NATS_KEY": certs.ClientKey,
	}, "container", "--server", url, "--workdir", work, "--heartbeat", "200ms",
		"--polecat-cmd", sim, "--refinery-cmd", sim, "--triage-cmd", sim, "--mayor-cmd", sim)
	admin("bead", "create", "--town", "tls", "--rig", "app", "--id", "login", "--title", "Add login")
	slingOrHooked(t, vars, append([]string{"--town", "tls", "--bead", "login", "--server", url}, tlsArgs...)...)
	require.Eventually(t, func() bool {
		var st coordinator.TownStatus
		if json.Unmarshal([]byte(admin("status", "--town", "tls", "--json")), &st) != nil {
			return false
		}
		for _, b := range st.Beads {
			if b.BeadID == "login" {
				return b.Status == coordinator.BeadClosed
			}
		}
		return false
	}, 90*time.Second, 200*time.Millisecond, "the agents work the bead over TLS and it closes\ncontainer log:\n%s\nagent logs:\n%s",
		contLogs, agentLogs{work})

	// gastown tool, as an agent calls it.
	toolVars := map[string]string{"GASTOWN_TOKEN_FILE": filepath.Join(work, "token"), "GASTOWN_NATS_URL": url,
		"GASTOWN_NATS_CA": certs.CAFile, "GASTOWN_NATS_CERT": certs.ClientCert, "GASTOWN_NATS_KEY": certs.ClientKey,
		"GASTOWN_AGENT_ID": "mayor", "GASTOWN_RIG_ID": "town"}
	out, _, err := run(t, toolVars, "tool", "beads.list", "type=issue")
	require.NoError(t, err)
	require.Contains(t, out, `"login"`)
	delete(toolVars, "GASTOWN_NATS_CERT")
	delete(toolVars, "GASTOWN_NATS_KEY")
	_, _, err = run(t, toolVars, "tool", "beads.list", "--timeout", "1s")
	require.Error(t, err, "without a client certificate the tool is refused")
	require.Contains(t, err.Error(), "tls", "and says it was TLS")

	// The real nats CLI with the ops context, over mutual TLS.
	config := t.TempDir()
	_, _, err = run(t, map[string]string{"GASTOWN_OPS_PASSWORD": "ops-pw-tls", "XDG_CONFIG_HOME": config},
		append([]string{"ops", "context", "--server", url}, tlsArgs...)...)
	require.NoError(t, err)
	var nctx map[string]string
	b, err := os.ReadFile(filepath.Join(config, "nats", "context", "gastown-ops.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &nctx))
	require.Equal(t, certs.CAFile, nctx["ca"])
	require.Equal(t, certs.ClientCert, nctx["cert"])
	require.Equal(t, certs.ClientKey, nctx["key"])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := bustest.NatsCommand(ctx, t, "--context", "gastown-ops", "sub", "gastown.town.tls.heartbeat", "--count", "1")
	cmd.Env = append(cmd.Env[:len(cmd.Env):len(cmd.Env)], "XDG_CONFIG_HOME="+config)
	cli, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", cli)
	require.Contains(t, string(cli), `"containerId"`, "ops hears the container's heartbeat")

	// The monitoring endpoint: every connection is TLS, and no page shows
	// a secret.
	varz := httpGet(t, "http://"+monitor+"/varz")
	require.Contains(t, varz, `"tls_required": true`)
	require.Contains(t, varz, `"tls_verify": true`)
	for _, path := range []string{"/varz", "/connz?auth=true&subs=true", "/connz?state=all&auth=true", "/subsz?subs=1",
		"/accountz", "/jsz?accounts=true", "/routez", "/healthz"} {
		page := httpGet(t, "http://"+monitor+path)
		for _, secret := range []string{token, testSecret, "admin-pw-tls", "ops-pw-tls"} {
			require.NotContains(t, page, secret, path)
		}
		require.Empty(t, jwtPattern.FindString(page), "%s holds something shaped like a token", path)
	}
	require.Contains(t, httpGet(t, "http://"+monitor+"/connz?auth=true"), `"tls_version": "1.3"`)
}

// TestTLSUsageErrors: TLS files that cannot work are refused with what to
// do, before anything connects or is made on disk.
func TestTLSUsageErrors(t *testing.T) {
	certs := bustest.NewCerts(t)
	vars := map[string]string{"GASTOWN_JWT_SECRET": testSecret, "GASTOWN_ADMIN_PASSWORD": "pw", "GASTOWN_OPS_PASSWORD": "pw",
		"GASTOWN_CONTAINER_TOKEN": mint(t, map[string]string{"GASTOWN_JWT_SECRET": testSecret}, "--town", "A")}
	for _, tc := range []struct {
		name string
		vars map[string]string
		args []string
	}{
		{"coordinator TLS with --nats-url", nil, []string{"coordinator", "--nats-url", "nats://127.0.0.1:1", "--tls-cert", certs.ServerCert, "--tls-key", certs.ServerKey}},
		{"coordinator monitoring with --nats-url", nil, []string{"coordinator", "--nats-url", "nats://127.0.0.1:1", "--monitor-listen", "127.0.0.1:0"}},
		{"container certificate without key", nil, []string{"container", "--mayor-cmd", "true", "--tls-cert", certs.ClientCert}},
		{"container key from the environment only", map[string]string{"GASTOWN_NATS_KEY": certs.ClientKey}, []string{"container", "--mayor-cmd", "true"}},
		{"admin certificate without key", nil, []string{"status", "--town", "A", "--tls-cert", certs.ClientCert}},
		{"tool certificate without key", map[string]string{"GASTOWN_TOKEN_FILE": "x", "GASTOWN_NATS_CERT": certs.ClientCert}, []string{"tool", "ping"}},
		{"ops context key without certificate", nil, []string{"ops", "context", "--dir", t.TempDir(), "--tls-key", certs.ClientKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := map[string]string{}
			for k, x := range vars {
				v[k] = x
			}
			for k, x := range tc.vars {
				v[k] = x
			}
			_, _, err := run(t, v, tc.args...)
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrUsage), "not a usage error: %v", err)
			require.NotEmpty(t, errors.GetAllHints(err), "says what to do")
		})
	}

	t.Run("coordinator with a key that is not the certificate's", func(t *testing.T) {
		data := filepath.Join(t.TempDir(), "data")
		_, _, err := run(t, vars, "coordinator", "--listen", "127.0.0.1:0", "--data-dir", data,
			"--tls-cert", certs.ServerCert, "--tls-key", certs.ClientKey)
		require.Error(t, err)
		require.Contains(t, err.Error(), "private key does not match")
		require.NotEmpty(t, errors.GetAllHints(err))
		require.NoDirExists(t, data, "nothing is made on disk")
	})
	t.Run("coordinator with a bad monitoring address", func(t *testing.T) {
		_, _, err := run(t, vars, "coordinator", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--monitor-listen", "8222")
		require.Error(t, err)
		require.Contains(t, err.Error(), "monitoring address")
	})
}

// TestNoTLSWarning: a coordinator on a network address without TLS says
// loudly that tokens and passwords cross the network in clear text.
func TestNoTLSWarning(t *testing.T) {
	vars := map[string]string{"GASTOWN_JWT_SECRET": testSecret}
	logs := daemon(t, vars, "coordinator", "--listen", "0.0.0.0:0", "--data-dir", t.TempDir())
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "coordinator ready") },
		30*time.Second, 20*time.Millisecond, "the coordinator starts\n%s", logs)
	require.Contains(t, logs.String(), "NO TLS ON A NETWORK ADDRESS")
	require.Contains(t, logs.String(), "level=WARN")
}
