package schemas_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

func TestNumericTimeMarshal(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   schemas.NumericTime
		want string
	}{
		{"zero is null", schemas.NumericTime{}, "null"},
		{"whole seconds", schemas.At(time.Unix(1_700_000_000, 0)), "1700000000"},
		{"milliseconds", schemas.At(time.UnixMilli(1_700_000_000_123)), "1700000000.123"},
		{"one millisecond", schemas.At(time.UnixMilli(1_700_000_000_001)), "1700000000.001"},
		{"sub-millisecond is truncated by At", schemas.At(time.Unix(1_700_000_000, 999_999)), "1700000000"},
		{"sub-millisecond kept in the value is dropped", schemas.NumericTime{Time: time.Unix(1_700_000_000, 5_678_901)}, "1700000000.005"},
		{"epoch", schemas.At(time.Unix(0, 0)), "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.want, string(b))
		})
	}
}

func TestNumericTimeUnmarshal(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want time.Time
	}{
		{"whole seconds", "1700000000", time.Unix(1_700_000_000, 0)},
		{"milliseconds", "1700000000.123", time.UnixMilli(1_700_000_000_123)},
		{"exponent", "1.7e9", time.Unix(1_700_000_000, 0)},
		{"sub-millisecond rounds", "1700000000.0006", time.UnixMilli(1_700_000_000_001)},
		{"zero", "0", time.Unix(0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n schemas.NumericTime
			require.NoError(t, json.Unmarshal([]byte(tc.in), &n))
			require.True(t, n.Equal(tc.want), "got %v want %v", n.Time, tc.want)
			require.Equal(t, time.UTC, n.Location())
		})
	}
	t.Run("null is zero", func(t *testing.T) {
		n := schemas.At(time.Unix(5, 0))
		require.NoError(t, json.Unmarshal([]byte("null"), &n))
		require.True(t, n.IsZero())
	})
	for _, in := range []string{`"1700000000"`, `"soon"`, `true`, `{}`, `[]`, `-1`, `1e12`, `1e400`, `-0.5`} {
		t.Run("bad "+in, func(t *testing.T) {
			var n schemas.NumericTime
			err := n.UnmarshalJSON([]byte(in))
			require.True(t, errors.Is(err, schemas.ErrInvalidClaims), "%v", err)
		})
	}
	t.Run("round trip keeps milliseconds", func(t *testing.T) {
		in := schemas.At(time.Date(2025, 3, 4, 5, 6, 7, 891_000_000, time.UTC))
		b, err := json.Marshal(in)
		require.NoError(t, err)
		var out schemas.NumericTime
		require.NoError(t, json.Unmarshal(b, &out))
		require.Equal(t, in, out)
	})
}

func TestNewContainerClaims(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 891_234_567, time.UTC)
	t.Run("userId falls back to townId", func(t *testing.T) {
		c := schemas.NewContainerClaims("A", "", at, 8*time.Hour)
		require.Equal(t, "A", c.TownID)
		require.Equal(t, "A", c.UserID)
		require.Equal(t, schemas.ScopeContainer, c.Scope)
		require.Equal(t, at.Truncate(time.Millisecond), c.Issued())
		require.Equal(t, at.Add(8*time.Hour).Truncate(time.Millisecond), c.Expires())
		require.NoError(t, c.Validate())
	})
	t.Run("owner is kept", func(t *testing.T) {
		c := schemas.NewContainerClaims("A", "user-7", at, time.Hour)
		require.Equal(t, "user-7", c.UserID)
	})
	t.Run("wire claims", func(t *testing.T) {
		b, err := json.Marshal(schemas.NewContainerClaims("A", "", at, time.Hour))
		require.NoError(t, err)
		require.JSONEq(t, `{"townId":"A","userId":"A","scope":"container","iat":1741064767.891,"exp":1741068367.891}`, string(b))
	})
	t.Run("agent claims have no scope", func(t *testing.T) {
		c := schemas.NewAgentClaims("A", "r", "a", "", at, time.Hour)
		require.Equal(t, "A", c.UserID)
		require.NoError(t, c.Validate())
		b, err := json.Marshal(c)
		require.NoError(t, err)
		require.JSONEq(t, `{"agentId":"a","rigId":"r","townId":"A","userId":"A","iat":1741064767.891,"exp":1741068367.891}`, string(b))
	})
}

func TestContainerClaimsValidate(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	good := func() schemas.ContainerClaims { return schemas.NewContainerClaims("A", "u", at, time.Hour) }
	for _, tc := range []struct {
		name   string
		change func(*schemas.ContainerClaims)
	}{
		{"no scope", func(c *schemas.ContainerClaims) { c.Scope = "" }},
		{"admin scope", func(c *schemas.ContainerClaims) { c.Scope = "admin" }},
		{"scope in capitals", func(c *schemas.ContainerClaims) { c.Scope = "Container" }},
		{"scope with space", func(c *schemas.ContainerClaims) { c.Scope = "container " }},
		{"no town", func(c *schemas.ContainerClaims) { c.TownID = "" }},
		{"bad town", func(c *schemas.ContainerClaims) { c.TownID = "A.>" }},
		{"no user", func(c *schemas.ContainerClaims) { c.UserID = "" }},
		{"no iat", func(c *schemas.ContainerClaims) { c.IssuedAt = schemas.NumericTime{} }},
		{"no exp", func(c *schemas.ContainerClaims) { c.ExpiresAt = schemas.NumericTime{} }},
		{"exp equals iat", func(c *schemas.ContainerClaims) { c.ExpiresAt = c.IssuedAt }},
		{"exp before iat", func(c *schemas.ContainerClaims) { c.ExpiresAt = schemas.At(at.Add(-time.Second)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			require.NoError(t, c.Validate())
			tc.change(&c)
			err := c.Validate()
			require.True(t, errors.Is(err, schemas.ErrInvalidClaims), "%v", err)
			require.Equal(t, schemas.CodeUnauthenticated, schemas.CodeOf(err))
		})
	}
}

func TestAgentClaimsValidate(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		name   string
		change func(*schemas.AgentClaims)
	}{
		{"container scope", func(c *schemas.AgentClaims) { c.Scope = str("container") }},
		{"empty scope present", func(c *schemas.AgentClaims) { c.Scope = str("") }},
		{"admin scope", func(c *schemas.AgentClaims) { c.Scope = str("admin") }},
		{"no agent", func(c *schemas.AgentClaims) { c.AgentID = "" }},
		{"no rig", func(c *schemas.AgentClaims) { c.RigID = "" }},
		{"bad town", func(c *schemas.AgentClaims) { c.TownID = "*" }},
		{"no user", func(c *schemas.AgentClaims) { c.UserID = "" }},
		{"no exp", func(c *schemas.AgentClaims) { c.ExpiresAt = schemas.NumericTime{} }},
		{"no iat", func(c *schemas.AgentClaims) { c.IssuedAt = schemas.NumericTime{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := schemas.NewAgentClaims("A", "r", "a", "u", at, time.Hour)
			require.NoError(t, c.Validate())
			tc.change(&c)
			require.True(t, errors.Is(c.Validate(), schemas.ErrInvalidClaims))
		})
	}
	t.Run("scope on the wire, even empty, is refused", func(t *testing.T) {
		for _, body := range []string{`"scope":""`, `"scope":"container"`} {
			var c schemas.AgentClaims
			require.NoError(t, json.Unmarshal([]byte(`{"agentId":"a","rigId":"r","townId":"A","userId":"u","iat":1,"exp":2,`+body+`}`), &c))
			require.True(t, errors.Is(c.Validate(), schemas.ErrInvalidClaims), body)
		}
	})
}

// signHS256 builds a token with the jwt library directly, as any HS256
// signer would.
func signHS256(t *testing.T, secret string, claims jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header["kid"] = "0123456789abcdef"
	s, err := tok.SignedString([]byte(secret))
	require.NoError(t, err)
	return s
}

func TestPeekContainerClaims(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	iat := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

	t.Run("reads town and expiry without the secret", func(t *testing.T) {
		want := schemas.NewContainerClaims("A", "owner", iat, 8*time.Hour)
		for _, s := range []string{secret, "a-completely-different-secret-of-32-bytes"} {
			got, err := schemas.PeekContainerClaims(signHS256(t, s, want))
			require.NoError(t, err)
			require.Equal(t, "A", got.TownID)
			require.Equal(t, "owner", got.UserID)
			require.True(t, got.Expires().Equal(iat.Add(8*time.Hour)))
			require.True(t, got.Issued().Equal(iat))
		}
	})
	t.Run("reads whole-second times", func(t *testing.T) {
		got, err := schemas.PeekContainerClaims(signHS256(t, secret, jwt.MapClaims{
			"townId": "B", "userId": "B", "scope": "container", "iat": 1_700_000_000, "exp": 1_700_028_800,
		}))
		require.NoError(t, err)
		require.Equal(t, "B", got.TownID)
		require.True(t, got.Expires().Equal(time.Unix(1_700_028_800, 0)))
	})
	t.Run("an expired token still peeks", func(t *testing.T) {
		got, err := schemas.PeekContainerClaims(signHS256(t, secret, schemas.NewContainerClaims("A", "", time.Unix(1000, 0), time.Hour)))
		require.NoError(t, err)
		require.True(t, got.Expires().Equal(time.Unix(1000+3600, 0)))
	})

	good := signHS256(t, secret, schemas.NewContainerClaims("A", "", iat, time.Hour))
	parts := strings.Split(good, ".")
	for _, tc := range []struct{ name, token string }{
		{"empty", ""},
		{"garbage", "not a token"},
		{"one segment", parts[0]},
		{"two segments", parts[0] + "." + parts[1]},
		{"four segments", good + ".x"},
		{"bad base64 claims", parts[0] + ".!!!." + parts[2]},
		{"non-JSON claims", parts[0] + "." + b64("not json") + "." + parts[2]},
		{"non-JSON header", b64("nope") + "." + parts[1] + "." + parts[2]},
		{"string times", parts[0] + "." + b64(`{"townId":"A","userId":"A","scope":"container","iat":"1","exp":"2"}`) + "." + parts[2]},
		{"legacy agent token", signHS256(t, secret, schemas.NewAgentClaims("A", "r", "a", "", iat, time.Hour))},
		{"admin scope", signHS256(t, secret, jwt.MapClaims{"townId": "A", "userId": "A", "scope": "admin", "iat": 1, "exp": 2})},
		{"no exp", signHS256(t, secret, jwt.MapClaims{"townId": "A", "userId": "A", "scope": "container", "iat": 1})},
		{"bad town", signHS256(t, secret, jwt.MapClaims{"townId": "A.B", "userId": "A", "scope": "container", "iat": 1, "exp": 2})},
	} {
		t.Run("refuses/"+tc.name, func(t *testing.T) {
			c, err := schemas.PeekContainerClaims(tc.token)
			require.True(t, errors.Is(err, schemas.ErrInvalidClaims), "%v", err)
			require.Equal(t, schemas.ContainerClaims{}, c)
			if len(tc.token) > 20 {
				require.NotContains(t, err.Error(), tc.token)
			}
		})
	}
}
