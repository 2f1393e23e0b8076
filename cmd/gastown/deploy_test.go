package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// coordinatorSettings is what `gastown coordinator --help` says may be
// set: its flags, and every environment variable it names (the flags'
// and the secrets').
func coordinatorSettings(t *testing.T) (flags map[string]string, env map[string]bool) {
	t.Helper()
	flags, help := helpFlags(t, "coordinator")
	env = map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  (GASTOWN_[A-Z0-9_]+)\s`).FindAllStringSubmatch(help, -1) {
		env[m[1]] = true
	}
	for _, e := range flags {
		env[e] = true
	}
	require.True(t, env["GASTOWN_JWT_SECRET"])
	return flags, env
}

// deployFile reads a file of deploy/ with its continuation lines joined.
func deployFile(t *testing.T, name string) (raw string, lines []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
	require.NoError(t, err)
	raw = string(b)
	joined := strings.ReplaceAll(raw, "\\\n", " ")
	return raw, strings.Split(joined, "\n")
}

// requireCoordinatorArgs checks a coordinator command line: the verb, and
// flags the coordinator has.
func requireCoordinatorArgs(t *testing.T, args []string, flags map[string]string) {
	t.Helper()
	require.NotEmpty(t, args)
	require.Equal(t, "coordinator", args[0], "%q", args)
	for _, a := range args[1:] {
		if !strings.HasPrefix(a, "-") {
			continue // a flag's value
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		require.Contains(t, flags, name, "--%s is not a coordinator flag", name)
	}
}

// requireKnownEnv checks that every GASTOWN_ variable a file names is one
// the coordinator reads.
func requireKnownEnv(t *testing.T, name, raw string, env map[string]bool) {
	t.Helper()
	seen := regexp.MustCompile(`GASTOWN_[A-Z0-9_]+`).FindAllString(raw, -1)
	require.NotEmpty(t, seen)
	for _, v := range seen {
		require.True(t, env[v], "%s names %s, which gastown coordinator does not read", name, v)
	}
}

// docker is not available here: the Dockerfile is checked against the
// binary it builds instead of built.
func TestDeployDockerfile(t *testing.T) {
	flags, env := coordinatorSettings(t)
	raw, lines := deployFile(t, "Dockerfile")
	requireKnownEnv(t, "Dockerfile", raw, env)

	var build, user, entrypoint, cmd string
	envs := map[string]string{}
	for _, l := range lines {
		l = strings.TrimSpace(l)
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch instr {
		case "RUN":
			if strings.Contains(rest, "go build") {
				build = rest
			}
		case "USER":
			user = rest
		case "ENTRYPOINT":
			entrypoint = rest
		case "CMD":
			cmd = rest
		case "ENV":
			for _, kv := range strings.Fields(rest) {
				k, v, ok := strings.Cut(kv, "=")
				require.True(t, ok, "ENV %s: use k=v", kv)
				envs[k] = v
			}
		}
	}
	require.Contains(t, build, "CGO_ENABLED=0", "one static binary")
	require.Contains(t, build, "./cmd/gastown")
	require.NotEmpty(t, user)
	for _, root := range []string{"root", "0", "0:0", "root:root"} {
		require.NotEqual(t, root, user, "a non-root user")
	}
	require.NotEmpty(t, envs)
	for k := range envs {
		require.True(t, env[k], "ENV %s is not a coordinator setting", k)
	}
	require.Contains(t, raw, `VOLUME ["`+envs["GASTOWN_DATA_DIR"]+`"]`, "the data directory is the volume")
	require.Contains(t, raw, "--chown=65532:65532 /out/data "+envs["GASTOWN_DATA_DIR"], "and the user owns it")

	var ep, args []string
	require.NoError(t, json.Unmarshal([]byte(entrypoint), &ep), "ENTRYPOINT in exec form")
	require.NoError(t, json.Unmarshal([]byte(cmd), &args), "CMD in exec form")
	require.Equal(t, []string{"/usr/local/bin/gastown"}, ep)
	requireCoordinatorArgs(t, args, flags)
	// The values parse: without a secret the coordinator gets past its
	// flags and the environment, and stops at the secret.
	_, _, err := run(t, envs, args...)
	require.Error(t, err)
	require.NotEqual(t, 2, exitCode(err), "%v", err)
	require.Contains(t, err.Error(), "GASTOWN_JWT_SECRET", "the image's settings parse; only the secret is missing")
}

func TestDeploySystemdUnit(t *testing.T) {
	flags, env := coordinatorSettings(t)
	raw, lines := deployFile(t, "gastown-coordinator.service")
	requireKnownEnv(t, "the unit", raw, env)
	var exec []string
	settings := 0
	for _, l := range lines {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		switch k {
		case "ExecStart":
			exec = strings.Fields(v)
		case "Environment":
			name, _, ok := strings.Cut(v, "=")
			require.True(t, ok, "Environment=%s", v)
			require.True(t, env[name], "Environment=%s is not a coordinator setting", name)
			settings++
		case "User":
			require.NotEqual(t, "root", v)
		}
	}
	require.NotZero(t, settings)
	require.GreaterOrEqual(t, len(exec), 2)
	require.Equal(t, "/usr/local/bin/gastown", exec[0])
	requireCoordinatorArgs(t, exec[1:], flags)
	require.Contains(t, raw, "\nDynamicUser=yes\n", "never root")
	require.Contains(t, raw, "\nStateDirectory=gastown\n")
	require.Contains(t, raw, "\nEnvironment=GASTOWN_DATA_DIR=/var/lib/gastown\n", "the data directory is the state directory")
	require.Contains(t, raw, "\nEnvironmentFile=", "secrets from a file, not the unit")
}
