package main

import (
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/stretchr/testify/require"
)

// mint runs `token mint` with args and returns the one token it printed.
func mint(t *testing.T, vars map[string]string, args ...string) string {
	t.Helper()
	stdout, stderr, err := run(t, vars, append([]string{"token", "mint"}, args...)...)
	require.NoError(t, err)
	require.Empty(t, stderr, "a token is never written to stderr")
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	require.Len(t, lines, 1, "one token, one line: %q", stdout)
	require.Equal(t, 3, len(strings.Split(lines[0], ".")), "a JWT")
	return lines[0]
}

// issuerFor is an issuer with the key ring vars give.
func issuerFor(t *testing.T, vars map[string]string) *token.Issuer {
	t.Helper()
	ring, err := token.KeyRingFromEnv(func(k string) string { return vars[k] })
	require.NoError(t, err)
	return token.NewIssuer(ring, nil)
}

func TestTokenMint(t *testing.T) {
	vars := map[string]string{"GASTOWN_JWT_SECRET": testSecret}
	issuer := issuerFor(t, vars)

	t.Run("container token", func(t *testing.T) {
		for _, tc := range []struct {
			name     string
			args     []string
			wantUser string
			wantTTL  time.Duration
		}{
			{"defaults", []string{"--town", "A"}, "A", coordinator.DefaultTokenTTL},
			{"owner", []string{"--town", "A", "--user", "U"}, "U", coordinator.DefaultTokenTTL},
			{"lifetime", []string{"--town", "A", "--ttl", "90m"}, "A", 90 * time.Minute},
			{"equals form", []string{"--town=A", "--user=U", "--ttl=1h"}, "U", time.Hour},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tok := mint(t, vars, tc.args...)
				c, err := issuer.VerifyContainer(tok)
				require.NoError(t, err)
				require.Equal(t, "A", c.TownID)
				require.Equal(t, tc.wantUser, c.UserID)
				require.Equal(t, "container", c.Scope)
				require.Equal(t, tc.wantTTL, c.Expires().Sub(c.Issued()))
				require.WithinDuration(t, time.Now(), c.Issued(), time.Minute)

				v, err := issuer.Verify(tok)
				require.NoError(t, err)
				require.Equal(t, token.KindContainer, v.Kind)
				_, err = issuer.VerifyAgent(tok)
				require.Error(t, err, "a container token never parses as a legacy one")
			})
		}
	})

	t.Run("legacy agent token", func(t *testing.T) {
		tok := mint(t, vars, "--town", "A", "--agent", "a", "--rig", "r", "--user", "U")
		c, err := issuer.VerifyAgent(tok)
		require.NoError(t, err)
		require.Equal(t, "A", c.TownID)
		require.Equal(t, "r", c.RigID)
		require.Equal(t, "a", c.AgentID)
		require.Equal(t, "U", c.UserID)
		require.Nil(t, c.Scope)
		_, err = issuer.VerifyContainer(tok)
		require.Error(t, err, "a legacy token never parses as a container token")
	})

	t.Run("signed with the current secret only", func(t *testing.T) {
		other := issuerFor(t, map[string]string{"GASTOWN_JWT_SECRET": strings.Repeat("z", 32)})
		_, err := other.VerifyContainer(mint(t, vars, "--town", "A"))
		require.True(t, errors.Is(err, token.ErrTokenInvalid), "%v", err)

		// A ring that still accepts the old secret while signing with a new
		// one verifies tokens minted before the switch.
		rolled := issuerFor(t, map[string]string{
			"GASTOWN_JWT_SECRET":         strings.Repeat("n", 40),
			"GASTOWN_JWT_ACCEPT_SECRETS": testSecret,
		})
		_, err = rolled.VerifyContainer(mint(t, vars, "--town", "A"))
		require.NoError(t, err)
	})

	t.Run("bad town is a usage error", func(t *testing.T) {
		_, _, err := run(t, vars, "token", "mint", "--town", "A.B")
		require.Equal(t, 2, exitCode(err))
		require.NotContains(t, printed(err), testSecret)
	})
}
