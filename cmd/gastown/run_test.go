package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/stretchr/testify/require"
)

// testSecret is a signing secret for tests: 64 hex characters.
const testSecret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// lockedBuffer is a bytes.Buffer that a daemon's goroutines may write to
// while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// envOf is an Env whose environment is vars and whose output is captured.
func envOf(vars map[string]string) (Env, *lockedBuffer, *lockedBuffer) {
	var stdout, stderr lockedBuffer
	return Env{
		Getenv: func(k string) string { return vars[k] },
		Stdout: &stdout,
		Stderr: &stderr,
	}, &stdout, &stderr
}

// run runs the binary's Run with vars as its environment.
func run(t *testing.T, vars map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	env, out, errOut := envOf(vars)
	err = Run(context.Background(), args, env)
	return out.String(), errOut.String(), err
}

// printed is what main prints for err.
func printed(err error) string {
	var b bytes.Buffer
	printError(&b, err)
	return b.String()
}

func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage:", "gastown <command> [flags]", "coordinator", "token", "--help"}},
		{[]string{"-h"}, []string{"Usage:", "coordinator", "token"}},
		{[]string{"help"}, []string{"Usage:", "coordinator", "token"}},
		{[]string{"coordinator", "--help"}, []string{
			"Usage: gastown coordinator [flags]",
			"GASTOWN_JWT_SECRET", "openssl rand -hex 32", "GASTOWN_OPS_PASSWORD", "GASTOWN_ADMIN_PASSWORD",
			"-listen", `(default "` + bus.DefaultListen + `")`,
			"-data-dir", `(default "` + bus.DefaultDataDir + `")`,
			"-nats-url",
			"-token-ttl", "(default " + coordinator.DefaultTokenTTL.String() + ")",
			"-refresh-interval", "(default " + coordinator.DefaultRefreshInterval.String() + ")",
			"-recovery-window", "(default " + token.DefaultRecoveryWindow.String() + ")",
			"-replicas", "(default 1)",
			"-log-level", `(default "info")`,
			"-log-format", `(default "text")`,
		}},
		{[]string{"coordinator", "-h"}, []string{"Usage: gastown coordinator", "-listen"}},
		{[]string{"token", "--help"}, []string{"Usage: gastown token <mint|rotate|revoke>", "mint", "rotate", "revoke", "GASTOWN_ADMIN_PASSWORD"}},
		{[]string{"token", "help"}, []string{"Usage: gastown token", "mint"}},
		{[]string{"token", "mint", "--help"}, []string{
			"Usage: gastown token mint --town T",
			"-town", "-user", "-ttl", "(default " + coordinator.DefaultTokenTTL.String() + ")", "-agent", "-rig",
		}},
		{[]string{"token", "rotate", "--help"}, []string{
			"Usage: gastown token rotate --town T",
			"-town", "-server", `(default "nats://127.0.0.1:4222")`, "-timeout duration",
		}},
		{[]string{"token", "revoke", "--help"}, []string{
			"Usage: gastown token revoke --town T",
			"-town", "-server", `(default "nats://127.0.0.1:4222")`, "-timeout duration",
		}},
		// --help wins over everything else on the line, even bad flags.
		{[]string{"token", "mint", "--town", "a.b", "--help"}, []string{"Usage: gastown token mint"}},
		{[]string{"coordinator", "--bogus", "--help"}, []string{"Usage: gastown coordinator"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			// No secret in the environment: help never needs one.
			stdout, stderr, err := run(t, nil, tc.args...)
			require.NoError(t, err)
			require.Zero(t, exitCode(err))
			for _, w := range tc.want {
				require.Contains(t, stdout, w)
			}
			require.Empty(t, stderr, "help goes to stdout only")
		})
	}
}

// Every verb answers --help with its usage on stdout, and the top-level
// usage lists every verb.
func TestHelpEveryVerb(t *testing.T) {
	top, _, err := run(t, nil, "--help")
	require.NoError(t, err)
	for _, v := range verbs() {
		require.Contains(t, top, v.name)
		require.Contains(t, top, v.summary)
		t.Run(v.name, func(t *testing.T) {
			stdout, stderr, err := run(t, nil, v.name, "--help")
			require.NoError(t, err)
			require.Contains(t, stdout, "Usage: gastown "+v.name)
			require.Empty(t, stderr)
		})
	}
}

func TestUsageErrors(t *testing.T) {
	secret := map[string]string{"GASTOWN_JWT_SECRET": testSecret}
	tests := []struct {
		name       string
		args       []string
		wantStderr string // a part of the usage printed to stderr, if any
	}{
		{"no arguments", nil, "Usage:"},
		{"unknown verb", []string{"frobnicate"}, "Usage:"},
		{"verb with a typo", []string{"coordinater"}, "Usage:"},
		{"token without a subcommand", []string{"token"}, "Usage: gastown token"},
		{"unknown token subcommand", []string{"token", "frob"}, ""},
		{"unknown coordinator flag", []string{"coordinator", "--bogus"}, ""},
		{"extra coordinator argument", []string{"coordinator", "extra"}, ""},
		{"bad log level", []string{"coordinator", "--log-level", "loud"}, ""},
		{"bad log format", []string{"coordinator", "--log-format", "xml"}, ""},
		{"bad duration", []string{"coordinator", "--token-ttl", "forever"}, ""},
		{"mint without --town", []string{"token", "mint"}, ""},
		{"mint with a dotted town", []string{"token", "mint", "--town", "a.b"}, ""},
		{"mint with a wildcard town", []string{"token", "mint", "--town", "*"}, ""},
		{"mint with a spaced town", []string{"token", "mint", "--town", "a b"}, ""},
		{"mint with a too long town", []string{"token", "mint", "--town", strings.Repeat("a", 65)}, ""},
		{"mint with a negative ttl", []string{"token", "mint", "--town", "A", "--ttl", "-1s"}, ""},
		{"mint with a zero ttl", []string{"token", "mint", "--town", "A", "--ttl", "0s"}, ""},
		{"mint --agent without --rig", []string{"token", "mint", "--town", "A", "--agent", "a"}, ""},
		{"mint --rig without --agent", []string{"token", "mint", "--town", "A", "--rig", "r"}, ""},
		{"mint with a bad agent", []string{"token", "mint", "--town", "A", "--agent", "a.b", "--rig", "r"}, ""},
		{"mint with a bad rig", []string{"token", "mint", "--town", "A", "--agent", "a", "--rig", "r>"}, ""},
		{"mint with an extra argument", []string{"token", "mint", "--town", "A", "extra"}, ""},
		{"rotate without --town", []string{"token", "rotate"}, ""},
		{"revoke with a bad town", []string{"token", "revoke", "--town", "a.>"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := run(t, secret, tc.args...)
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrUsage), "not a usage error: %v", err)
			require.Equal(t, 2, exitCode(err))
			require.Empty(t, stdout, "nothing on stdout when the command line is wrong")
			if tc.wantStderr != "" {
				require.Contains(t, stderr, tc.wantStderr)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	require.Equal(t, 0, exitCode(nil))
	require.Equal(t, 2, exitCode(errors.Wrap(errors.Mark(errors.New("x"), ErrUsage), "wrapped")))
	require.Equal(t, 1, exitCode(errors.New("anything else")))
}

func TestMissingSecret(t *testing.T) {
	const short = "too-short-secret-value"
	tests := []struct {
		name string
		args []string
		vars map[string]string
	}{
		{"coordinator without a secret", []string{"coordinator"}, nil},
		{"coordinator with a short secret", []string{"coordinator"}, map[string]string{"GASTOWN_JWT_SECRET": short}},
		{"mint without a secret", []string{"token", "mint", "--town", "A"}, nil},
		{"mint with a short secret", []string{"token", "mint", "--town", "A"}, map[string]string{"GASTOWN_JWT_SECRET": short}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, _, err := run(t, tc.vars, tc.args...)
			require.Error(t, err)
			require.NotZero(t, exitCode(err))
			require.NotEqual(t, 2, exitCode(err), "a missing secret is not a command-line mistake")
			require.Contains(t, err.Error(), "GASTOWN_JWT_SECRET")
			require.Contains(t, strings.Join(errors.GetAllHints(err), "\n"), "openssl rand -hex 32")
			p := printed(err)
			require.Contains(t, p, "gastown: ")
			require.Contains(t, p, "hint: ")
			require.Contains(t, p, "openssl rand -hex 32")
			require.NotContains(t, p, short, "the secret is never printed")
			require.Empty(t, stdout)
		})
	}

	t.Run("a bad accepted secret", func(t *testing.T) {
		_, _, err := run(t, map[string]string{"GASTOWN_JWT_SECRET": testSecret, "GASTOWN_JWT_ACCEPT_SECRETS": short},
			"token", "mint", "--town", "A")
		require.Error(t, err)
		require.Equal(t, 1, exitCode(err))
		require.Contains(t, err.Error(), "GASTOWN_JWT_ACCEPT_SECRETS")
		require.NotContains(t, printed(err), short)
	})
}
