package token

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestEveryTokenDiffers: two tokens minted in the same millisecond with the
// same claims are different tokens (each carries a jti of its own), and
// both verify with the same claims.
func TestEveryTokenDiffers(t *testing.T) {
	iss := NewIssuer(NewKeyRing(testKey(t, "current")), clockAt(fixedTime))
	jti := func(tok string) string {
		payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
		require.NoError(t, err)
		var claims map[string]any
		require.NoError(t, json.Unmarshal(payload, &claims))
		id, _ := claims["jti"].(string)
		require.NotEmpty(t, id, "a minted token carries a jti")
		return id
	}
	t.Run("container", func(t *testing.T) {
		a, ca, err := iss.MintContainer("A", "", time.Hour)
		require.NoError(t, err)
		b, cb, err := iss.MintContainer("A", "", time.Hour)
		require.NoError(t, err)
		require.Equal(t, ca, cb, "the same claims")
		require.True(t, a != b, "but different tokens") // never print a token
		require.NotEqual(t, jti(a), jti(b))
		for _, tok := range []string{a, b} {
			v, err := iss.VerifyContainer(tok)
			require.NoError(t, err)
			require.Equal(t, ca, v)
		}
	})
	t.Run("legacy agent", func(t *testing.T) {
		a, ca, err := iss.MintAgent("A", "r1", "polecat-1", "", time.Hour)
		require.NoError(t, err)
		b, _, err := iss.MintAgent("A", "r1", "polecat-1", "", time.Hour)
		require.NoError(t, err)
		require.True(t, a != b, "different tokens")
		require.NotEqual(t, jti(a), jti(b))
		v, err := iss.VerifyAgent(b)
		require.NoError(t, err)
		require.Equal(t, ca, v)
	})
}
