package token

import (
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"
)

// FuzzVerify feeds arbitrary tokens to the token parser. It never panics;
// it accepts only claims this issuer signed (a mutation may at most change
// how the same bytes are spelled, never what they say); every refusal is
// one of its documented errors and never echoes the token.
func FuzzVerify(f *testing.F) {
	key := testKey(f, "fuzz")
	iss := NewIssuer(NewKeyRing(key), clockAt(fixedTime))
	container, cclaims, err := iss.MintContainer("A", "owner", 8*time.Hour)
	require.NoError(f, err)
	agent, aclaims, err := iss.MintAgent("A", "r", "polecat-1", "owner", 8*time.Hour)
	require.NoError(f, err)
	other := NewIssuer(NewKeyRing(testKey(f, "other")), clockAt(fixedTime))
	foreign, _, err := other.MintContainer("A", "owner", 8*time.Hour)
	require.NoError(f, err)
	for _, seed := range []string{
		container, agent, foreign, "", ".", "..", "a.b.c", container + ".", strings.Repeat("A", 9000),
		container[:len(container)-3], strings.Replace(container, ".", "..", 1),
		`eyJhbGciOiJub25lIn0.eyJ0b3duSWQiOiJBIn0.`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		v, err := iss.Verify(token)
		if err == nil {
			switch v.Kind {
			case KindContainer:
				require.Equal(t, cclaims, v.Container, "accepted claims it never signed")
			case KindAgent:
				require.Equal(t, aclaims, v.Agent, "accepted claims it never signed")
			default:
				t.Fatalf("accepted a token of kind %v", v.Kind)
			}
			return
		}
		require.True(t, errors.Is(err, ErrTokenInvalid) || errors.Is(err, ErrTokenExpired), "undocumented error: %v", err)
		if len(token) >= 8 {
			require.NotContains(t, err.Error(), token, "the error echoes the token")
		}
	})
}
