package token

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestKeyRingFromEnvErrors(t *testing.T) {
	good := testSecret("current")
	const short = "short-secret-xyz" // 16 bytes
	for _, tc := range []struct {
		name      string
		vars      map[string]string
		mentions  []string
		hint      bool
		neverSays []string
	}{
		{
			name:     "missing",
			vars:     map[string]string{},
			mentions: []string{"GASTOWN_JWT_SECRET"}, hint: true,
		},
		{
			name:     "missing, even with accepted secrets",
			vars:     map[string]string{EnvJWTAcceptSecrets: good},
			mentions: []string{"GASTOWN_JWT_SECRET"}, hint: true, neverSays: []string{good},
		},
		{
			name:     "short",
			vars:     map[string]string{EnvJWTSecret: short},
			mentions: []string{"GASTOWN_JWT_SECRET", "32"}, hint: true, neverSays: []string{short},
		},
		{
			name:     "31 bytes",
			vars:     map[string]string{EnvJWTSecret: good[:31]},
			mentions: []string{"GASTOWN_JWT_SECRET"}, hint: true, neverSays: []string{good[:31]},
		},
		{
			name:     "bad accept entry",
			vars:     map[string]string{EnvJWTSecret: good, EnvJWTAcceptSecrets: testSecret("old") + "," + short},
			mentions: []string{"GASTOWN_JWT_ACCEPT_SECRETS", "entry 2"}, neverSays: []string{good, short, testSecret("old")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ring, err := KeyRingFromEnv(env(tc.vars))
			require.Nil(t, ring)
			require.True(t, errors.Is(err, ErrNoSecret), "%v", err)
			for _, m := range tc.mentions {
				require.Contains(t, err.Error(), m)
			}
			if tc.hint {
				require.Contains(t, strings.Join(errors.GetAllHints(err), "\n"), "openssl rand -hex 32")
			}
			for _, s := range tc.neverSays {
				require.NotContains(t, fmt.Sprintf("%+v", err), s)
				require.NotContains(t, strings.Join(errors.GetAllHints(err), "\n"), s)
			}
		})
	}
}

func TestKeyRingFromEnv(t *testing.T) {
	cur, old, next := testSecret("current"), testSecret("old"), testSecret("next")
	t.Run("current only", func(t *testing.T) {
		ring, err := KeyRingFromEnv(env(map[string]string{EnvJWTSecret: cur}))
		require.NoError(t, err)
		require.Equal(t, testKey(t, "current").ID, ring.CurrentID())
		require.Equal(t, []string{ring.CurrentID()}, ring.IDs())
	})
	t.Run("exactly 32 bytes", func(t *testing.T) {
		_, err := KeyRingFromEnv(env(map[string]string{EnvJWTSecret: cur[:32]}))
		require.NoError(t, err)
	})
	t.Run("accepted secrets, spaces trimmed", func(t *testing.T) {
		ring, err := KeyRingFromEnv(env(map[string]string{EnvJWTSecret: cur, EnvJWTAcceptSecrets: " " + old + " ,\t" + next}))
		require.NoError(t, err)
		require.Equal(t, testKey(t, "current").ID, ring.CurrentID())
		require.ElementsMatch(t, []string{testKey(t, "current").ID, testKey(t, "old").ID, testKey(t, "next").ID}, ring.IDs())
	})
	t.Run("current repeated in accepted", func(t *testing.T) {
		ring, err := KeyRingFromEnv(env(map[string]string{EnvJWTSecret: cur, EnvJWTAcceptSecrets: cur}))
		require.NoError(t, err)
		require.Equal(t, []string{ring.CurrentID()}, ring.IDs())
	})
}

// TestKeyRotation walks a key from current to accepted to removed.
func TestKeyRotation(t *testing.T) {
	a, b := testKey(t, "A"), testKey(t, "B")
	onA := NewIssuer(NewKeyRing(a), clockAt(fixedTime))
	tokA, _, err := onA.MintContainer("T", "", time.Hour)
	require.NoError(t, err)
	legacyA, _, err := onA.MintAgent("T", "r", "ag", "", time.Hour)
	require.NoError(t, err)

	// B is current, A still accepted: A's tokens verify, new ones are B's.
	onBA := NewIssuer(NewKeyRing(b, a), clockAt(fixedTime))
	v, err := onBA.Verify(tokA)
	require.NoError(t, err)
	require.Equal(t, KindContainer, v.Kind)
	v, err = onBA.Verify(legacyA)
	require.NoError(t, err)
	require.Equal(t, KindAgent, v.Kind)
	require.Equal(t, b.ID, NewKeyRing(b, a).CurrentID())
	tokB, _, err := onBA.MintContainer("T", "", time.Hour)
	require.NoError(t, err)
	_, err = onA.VerifyContainer(tokB)
	require.True(t, errors.Is(err, ErrTokenInvalid), "a ring that does not know B refuses B's tokens: %v", err)

	// Rolling out: A current, B accepted ahead of becoming current.
	_, err = NewIssuer(NewKeyRing(a, b), clockAt(fixedTime)).VerifyContainer(tokB)
	require.NoError(t, err)

	// A removed: its tokens fail, B's still verify.
	onB := NewIssuer(NewKeyRing(b), clockAt(fixedTime))
	for _, tok := range []string{tokA, legacyA} {
		_, err = onB.Verify(tok)
		require.True(t, errors.Is(err, ErrTokenInvalid), "%v", err)
		requireNoLeak(t, err, tok)
	}
	_, err = onB.VerifyContainer(tokB)
	require.NoError(t, err)

	// The same through the environment.
	ring, err := KeyRingFromEnv(env(map[string]string{EnvJWTSecret: testSecret("B"), EnvJWTAcceptSecrets: testSecret("A")}))
	require.NoError(t, err)
	_, err = NewIssuer(ring, clockAt(fixedTime)).VerifyContainer(tokA)
	require.NoError(t, err)
}

func TestKeyID(t *testing.T) {
	s1, s2 := testSecret("one"), testSecret("two")
	k1, err := NewKey([]byte(s1))
	require.NoError(t, err)
	k1again, err := NewKey([]byte(s1))
	require.NoError(t, err)
	k2, err := NewKey([]byte(s2))
	require.NoError(t, err)

	require.Equal(t, k1.ID, k1again.ID, "stable for the same secret")
	require.NotEqual(t, k1.ID, k2.ID, "differs between secrets")
	require.Len(t, k1.ID, 16)
	_, err = hex.DecodeString(k1.ID)
	require.NoError(t, err, "kid is hex")
	for _, s := range []string{s1, s1[:16], hex.EncodeToString([]byte(s1))[:16]} {
		require.NotContains(t, k1.ID, s)
	}

	t.Run("minted tokens carry the kid, not the secret", func(t *testing.T) {
		iss := NewIssuer(NewKeyRing(k1), clockAt(fixedTime))
		tok, _, err := iss.MintContainer("A", "", time.Hour)
		require.NoError(t, err)
		require.NotContains(t, tok, s1)
		require.NotContains(t, tok, b64([]byte(s1))[:16])
		require.Contains(t, tok, strings.TrimRight(b64([]byte(`{"alg":"HS256","kid":"`+k1.ID)), "=")[:20])
	})
}

func TestNewKey(t *testing.T) {
	for _, n := range []int{0, 1, 31} {
		t.Run(fmt.Sprintf("%d bytes", n), func(t *testing.T) {
			_, err := NewKey([]byte(strings.Repeat("s", n)))
			require.True(t, errors.Is(err, ErrNoSecret), "%v", err)
		})
	}
	t.Run("the secret is copied", func(t *testing.T) {
		secret := []byte(testSecret("copied"))
		k, err := NewKey(secret)
		require.NoError(t, err)
		iss := NewIssuer(NewKeyRing(k), clockAt(fixedTime))
		tok, _, err := iss.MintContainer("A", "", time.Hour)
		require.NoError(t, err)
		for i := range secret {
			secret[i] = 'x'
		}
		_, err = iss.VerifyContainer(tok)
		require.NoError(t, err)
	})
}

// TestSecretsNeverPrint: a Key, a KeyRing or an Issuer logged by mistake
// shows no secret.
func TestSecretsNeverPrint(t *testing.T) {
	secret := testSecret("printed")
	k, err := NewKey([]byte(secret))
	require.NoError(t, err)
	ring := NewKeyRing(k, testKey(t, "other"))
	iss := NewIssuer(ring, nil)
	asBytes := strings.Trim(fmt.Sprint([]byte(secret)), "[]")[:40]
	for _, v := range []any{k, &k, ring, *ring, iss} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x"} {
			out := fmt.Sprintf(verb, v)
			require.NotContains(t, out, secret, "%s of %T", verb, v)
			require.NotContains(t, out, asBytes, "%s of %T", verb, v)
			require.NotContains(t, out, hex.EncodeToString([]byte(secret))[:32], "%s of %T", verb, v)
		}
	}
}

// TestZeroKeyIsNeverUsed: a Key not made by NewKey has no secret; a ring
// holding one neither signs with it nor accepts tokens signed with an
// empty key.
func TestZeroKeyIsNeverUsed(t *testing.T) {
	iss := NewIssuer(NewKeyRing(Key{}), clockAt(fixedTime))
	tok, _, err := iss.MintContainer("A", "", time.Hour)
	require.True(t, errors.Is(err, ErrNoSecret), "%v", err)
	require.Empty(t, tok)

	forged := craft(t, map[string]any{"alg": "HS256", "typ": "JWT"}, containerClaimsMap(fixedTime), sha256.New, nil)
	forgedKid := craft(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": ""}, containerClaimsMap(fixedTime), sha256.New, nil)
	for _, ring := range []*KeyRing{NewKeyRing(Key{}), NewKeyRing(testKey(t, "current"), Key{})} {
		iss := NewIssuer(ring, clockAt(fixedTime))
		for _, tok := range []string{forged, forgedKid} {
			_, err := iss.Verify(tok)
			require.True(t, errors.Is(err, ErrTokenInvalid), "%v", err)
		}
	}
}
