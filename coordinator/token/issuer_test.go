package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

var fixedTime = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// testSecret derives a 64-character secret from a name.
func testSecret(name string) string {
	sum := sha256.Sum256([]byte("gastown test secret " + name))
	return hex.EncodeToString(sum[:])
}

func testKey(t testing.TB, name string) Key {
	t.Helper()
	k, err := NewKey([]byte(testSecret(name)))
	require.NoError(t, err)
	return k
}

// clockAt is an issuer clock that always reads at.
func clockAt(at time.Time) func() time.Time { return func() time.Time { return at } }

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func jsonB64(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b64(b)
}

// craft builds a token by hand: header and claims (raw JSON when a string),
// signed with HMAC h over key, or with an empty signature when h is nil.
func craft(t testing.TB, header map[string]any, claims any, h func() hash.Hash, key []byte) string {
	t.Helper()
	var payload string
	if s, ok := claims.(string); ok {
		payload = b64([]byte(s))
	} else {
		payload = jsonB64(t, claims)
	}
	input := jsonB64(t, header) + "." + payload
	if h == nil {
		return input + "."
	}
	mac := hmac.New(h, key)
	mac.Write([]byte(input))
	return input + "." + b64(mac.Sum(nil))
}

func containerClaimsMap(iat time.Time) map[string]any {
	return map[string]any{
		"townId": "A", "userId": "owner", "scope": "container",
		"iat": iat.Unix(), "exp": iat.Add(8 * time.Hour).Unix(),
	}
}

func legacyClaimsMap(iat time.Time) map[string]any {
	return map[string]any{
		"agentId": "polecat-1", "rigId": "r1", "townId": "A", "userId": "owner",
		"iat": iat.Unix(), "exp": iat.Add(8 * time.Hour).Unix(),
	}
}

func with(m map[string]any, kv ...any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return c
}

// requireNoLeak checks that err says nothing of token, however printed.
func requireNoLeak(t *testing.T, err error, token string) {
	t.Helper()
	if len(token) < 16 {
		return
	}
	for _, s := range []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		require.NotContains(t, s, token)
		for _, part := range strings.Split(token, ".") {
			if len(part) >= 16 {
				require.NotContains(t, s, part)
			}
		}
	}
}

const rsaPublicKeyPEM = `-----BEGIN PUBLIC KEY-----
MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAMb8Yz0T3lGTCj1QOdLYxsFa2r0E6V8t
l9sJvK5jHDiY9bY0l2m3k2oOqyQYy0H1x8yUpJ5e9Z0h1v0iZJm0Y9ECAwEAAQ==
-----END PUBLIC KEY-----
`

func TestVerifyGoodTokens(t *testing.T) {
	key := testKey(t, "current")
	iss := NewIssuer(NewKeyRing(key), clockAt(fixedTime))

	t.Run("container token", func(t *testing.T) {
		tok, minted, err := iss.MintContainer("A", "owner", 8*time.Hour)
		require.NoError(t, err)
		require.Equal(t, schemas.NewContainerClaims("A", "owner", fixedTime, 8*time.Hour), minted)

		v, err := iss.Verify(tok)
		require.NoError(t, err)
		require.Equal(t, KindContainer, v.Kind)
		require.Equal(t, "container", v.Kind.String())
		require.Equal(t, minted, v.Container)
		require.Equal(t, schemas.AgentClaims{}, v.Agent)
		require.Equal(t, "A", v.TownID())
		require.Equal(t, fixedTime, v.Issued())
		require.Equal(t, fixedTime.Add(8*time.Hour), v.Expires())

		c, err := iss.VerifyContainer(tok)
		require.NoError(t, err)
		require.Equal(t, minted, c)

		a, err := iss.VerifyAgent(tok)
		require.True(t, errors.Is(err, ErrTokenInvalid), "a container token never verifies as legacy: %v", err)
		require.False(t, errors.Is(err, ErrTokenExpired))
		require.Equal(t, schemas.AgentClaims{}, a)
		requireNoLeak(t, err, tok)
	})

	t.Run("container token without owner", func(t *testing.T) {
		tok, _, err := iss.MintContainer("B", "", time.Hour)
		require.NoError(t, err)
		c, err := iss.VerifyContainer(tok)
		require.NoError(t, err)
		require.Equal(t, "B", c.UserID, "userId falls back to townId")
	})

	t.Run("legacy agent token", func(t *testing.T) {
		tok, minted, err := iss.MintAgent("A", "r1", "polecat-1", "owner", 8*time.Hour)
		require.NoError(t, err)

		v, err := iss.Verify(tok)
		require.NoError(t, err)
		require.Equal(t, KindAgent, v.Kind)
		require.Equal(t, "legacy agent", v.Kind.String())
		require.Equal(t, minted, v.Agent)
		require.Equal(t, schemas.ContainerClaims{}, v.Container)
		require.Equal(t, "A", v.TownID())
		require.Equal(t, fixedTime, v.Issued())
		require.Equal(t, fixedTime.Add(8*time.Hour), v.Expires())

		a, err := iss.VerifyAgent(tok)
		require.NoError(t, err)
		require.Equal(t, "polecat-1", a.AgentID)
		require.Equal(t, "r1", a.RigID)

		for name, verify := range map[string]func(string) (schemas.ContainerClaims, error){
			"VerifyContainer":        iss.VerifyContainer,
			"VerifyContainerExpired": func(s string) (schemas.ContainerClaims, error) { return iss.VerifyContainerExpired(s, 24*time.Hour) },
		} {
			c, err := verify(tok)
			require.True(t, errors.Is(err, ErrTokenInvalid), "%s: a legacy token never verifies as a container token: %v", name, err)
			require.Equal(t, schemas.ContainerClaims{}, c)
			requireNoLeak(t, err, tok)
		}
	})

	t.Run("hand-made container token with whole seconds", func(t *testing.T) {
		tok := craft(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": key.ID}, containerClaimsMap(fixedTime), sha256.New, key.bytes())
		v, err := iss.Verify(tok)
		require.NoError(t, err)
		require.Equal(t, KindContainer, v.Kind)
		require.Equal(t, "owner", v.Container.UserID)
	})

	t.Run("token header", func(t *testing.T) {
		tok, _, err := iss.MintContainer("A", "", time.Hour)
		require.NoError(t, err)
		hdr, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
		require.NoError(t, err)
		require.JSONEq(t, `{"alg":"HS256","typ":"JWT","kid":"`+key.ID+`"}`, string(hdr))
	})
}

func TestVerifyRefusesBadTokens(t *testing.T) {
	key := testKey(t, "current")
	other := testKey(t, "other")
	iss := NewIssuer(NewKeyRing(key), clockAt(fixedTime))
	otherIss := NewIssuer(NewKeyRing(other), clockAt(fixedTime))
	secret := key.bytes()

	good, _, err := iss.MintContainer("A", "owner", 8*time.Hour)
	require.NoError(t, err)
	parts := strings.Split(good, ".")
	require.Len(t, parts, 3)

	hdr := func(alg string) map[string]any { return map[string]any{"alg": alg, "typ": "JWT", "kid": key.ID} }
	cc := containerClaimsMap(fixedTime)
	lc := legacyClaimsMap(fixedTime)
	hs256 := func(claims any) string { return craft(t, hdr("HS256"), claims, sha256.New, secret) }

	otherContainer, _, err := otherIss.MintContainer("A", "owner", 8*time.Hour)
	require.NoError(t, err)
	otherLegacy, _, err := otherIss.MintAgent("A", "r1", "polecat-1", "owner", 8*time.Hour)
	require.NoError(t, err)

	flipped := []byte(parts[2])
	if flipped[0] == 'A' {
		flipped[0] = 'B'
	} else {
		flipped[0] = 'A'
	}

	cases := []struct{ name, token string }{
		{"container signed with another secret", otherContainer},
		{"legacy signed with another secret", otherLegacy},
		{"other secret under our kid", craft(t, hdr("HS256"), cc, sha256.New, other.bytes())},
		{"alg none", craft(t, hdr("none"), cc, nil, nil)},
		{"alg none legacy", craft(t, hdr("none"), lc, nil, nil)},
		{"alg None", craft(t, hdr("None"), cc, nil, nil)},
		{"alg NONE", craft(t, hdr("NONE"), cc, nil, nil)},
		{"alg none with our signature", craft(t, hdr("none"), cc, sha256.New, secret)},
		{"HS256 with empty signature", craft(t, hdr("HS256"), cc, nil, nil)},
		{"HS384 with our secret", craft(t, hdr("HS384"), cc, sha512.New384, secret)},
		{"HS512 with our secret", craft(t, hdr("HS512"), cc, sha512.New, secret)},
		{"RS256 header, HMAC with our secret", craft(t, hdr("RS256"), cc, sha256.New, secret)},
		{"RS256 header, HMAC with a public key", craft(t, hdr("RS256"), cc, sha256.New, []byte(rsaPublicKeyPEM))},
		{"HS256 keyed with a public key", craft(t, hdr("HS256"), cc, sha256.New, []byte(rsaPublicKeyPEM))},
		{"HS256 keyed with the kid", craft(t, hdr("HS256"), cc, sha256.New, []byte(key.ID))},
		{"HS256 keyed with nothing", craft(t, hdr("HS256"), cc, sha256.New, nil)},
		{"ES256 header", craft(t, hdr("ES256"), cc, sha256.New, secret)},
		{"unknown alg", craft(t, hdr("XS256"), cc, sha256.New, secret)},
		{"no alg", craft(t, map[string]any{"typ": "JWT", "kid": key.ID}, cc, sha256.New, secret)},
		{"unknown kid", craft(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": "0123456789abcdef"}, cc, sha256.New, secret)},
		{"missing kid", craft(t, map[string]any{"alg": "HS256", "typ": "JWT"}, cc, sha256.New, secret)},
		{"empty kid", craft(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": ""}, cc, sha256.New, secret)},
		{"kid not a string", craft(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": 7}, cc, sha256.New, secret)},
		{"secret as kid", craft(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": string(secret)}, cc, sha256.New, secret)},
		{"truncated signature", good[:len(good)-5]},
		{"truncated in the claims", good[:len(parts[0])+1+len(parts[1])/2]},
		{"signature flipped", parts[0] + "." + parts[1] + "." + string(flipped)},
		{"claims changed", parts[0] + "." + jsonB64(t, with(cc, "townId", "B")) + "." + parts[2]},
		{"header changed", jsonB64(t, map[string]any{"alg": "HS256", "kid": key.ID}) + "." + parts[1] + "." + parts[2]},
		{"empty", ""},
		{"one segment", parts[0]},
		{"two segments", parts[0] + "." + parts[1]},
		{"four segments", good + "." + parts[2]},
		{"trailing dot", good + "."},
		{"bearer prefix left on", "Bearer " + good},
		{"whitespace around", " " + good + "\n"},
		{"padded base64", parts[0] + "=." + parts[1] + "." + parts[2]},
		{"non-JSON claims", hs256("this is not json")},
		{"claims are an array", hs256(`["townId","A"]`)},
		{"claims are null", hs256(`null`)},
		{"non-JSON header", b64([]byte("not json")) + "." + parts[1] + "." + parts[2]},
		{"huge well-signed token", hs256(with(cc, "pad", strings.Repeat("x", 1<<20)))},
		{"huge garbage", strings.Repeat("a", 1<<20)},
		{"container exp missing", hs256(with(cc, "exp", nil))},
		{"container iat missing", hs256(with(cc, "iat", nil))},
		{"container exp null", hs256(with(cc, "exp", json.RawMessage("null")))},
		{"container exp a string", hs256(with(cc, "exp", fmt.Sprint(fixedTime.Add(time.Hour).Unix())))},
		{"container exp before iat", hs256(with(cc, "exp", fixedTime.Add(-time.Minute).Unix()))},
		{"legacy exp missing", hs256(with(lc, "exp", nil))},
		{"legacy iat missing", hs256(with(lc, "iat", nil))},
		{"scope admin", hs256(with(cc, "scope", "admin"))},
		{"scope admin with legacy claims", hs256(with(lc, "scope", "admin"))},
		{"scope empty for container", hs256(with(cc, "scope", ""))},
		{"scope empty with legacy claims", hs256(with(lc, "scope", ""))},
		{"scope Container", hs256(with(cc, "scope", "Container"))},
		{"scope missing, no agent", hs256(with(cc, "scope", nil))},
		{"scope not a string", hs256(with(cc, "scope", true))},
		{"bad town", hs256(with(cc, "townId", "A.>"))},
		{"no town", hs256(with(cc, "townId", nil))},
		{"no user", hs256(with(cc, "userId", nil))},
		{"legacy bad agent", hs256(with(lc, "agentId", "a b"))},
		{"legacy no rig", hs256(with(lc, "rigId", nil))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := iss.Verify(tc.token)
			require.True(t, errors.Is(err, ErrTokenInvalid), "Verify: %v", err)
			require.False(t, errors.Is(err, ErrTokenExpired), "Verify: %v", err)
			require.Equal(t, Verified{}, v)
			requireNoLeak(t, err, tc.token)

			c, err := iss.VerifyContainer(tc.token)
			require.True(t, errors.Is(err, ErrTokenInvalid), "VerifyContainer: %v", err)
			require.Equal(t, schemas.ContainerClaims{}, c)
			requireNoLeak(t, err, tc.token)

			a, err := iss.VerifyAgent(tc.token)
			require.True(t, errors.Is(err, ErrTokenInvalid), "VerifyAgent: %v", err)
			require.Equal(t, schemas.AgentClaims{}, a)
			requireNoLeak(t, err, tc.token)

			c, err = iss.VerifyContainerExpired(tc.token, 24*time.Hour)
			require.True(t, errors.Is(err, ErrTokenInvalid), "VerifyContainerExpired: %v", err)
			require.Equal(t, schemas.ContainerClaims{}, c)
			requireNoLeak(t, err, tc.token)
		})
	}
}

func TestVerifyExpiry(t *testing.T) {
	key := testKey(t, "current")
	ring := NewKeyRing(key)
	minter := NewIssuer(ring, clockAt(fixedTime))
	container, _, err := minter.MintContainer("A", "", time.Hour)
	require.NoError(t, err)
	legacy, _, err := minter.MintAgent("A", "r1", "polecat-1", "", time.Hour)
	require.NoError(t, err)
	exp := fixedTime.Add(time.Hour)

	for _, tc := range []struct {
		name    string
		at      time.Time
		expired bool
	}{
		{"just minted", fixedTime, false},
		{"a minute before exp", exp.Add(-time.Minute), false},
		{"at exp", exp, false},
		{"expired 2s ago (within leeway)", exp.Add(2 * time.Second), false},
		{"expired 10s ago", exp.Add(10 * time.Second), true},
		{"expired an hour ago", exp.Add(time.Hour), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iss := NewIssuer(ring, clockAt(tc.at))

			v, err := iss.Verify(container)
			if tc.expired {
				require.True(t, errors.Is(err, ErrTokenExpired), "%v", err)
				require.False(t, errors.Is(err, ErrTokenInvalid), "%v", err)
				require.Equal(t, Verified{}, v)
				requireNoLeak(t, err, container)
			} else {
				require.NoError(t, err)
				require.Equal(t, KindContainer, v.Kind)
			}

			c, err := iss.VerifyContainer(container)
			if tc.expired {
				require.True(t, errors.Is(err, ErrTokenExpired), "%v", err)
				require.Equal(t, schemas.ContainerClaims{}, c)
			} else {
				require.NoError(t, err)
				require.Equal(t, "A", c.TownID)
			}

			v, err = iss.Verify(legacy)
			if tc.expired {
				require.True(t, errors.Is(err, ErrTokenExpired), "an expired legacy token is expired: %v", err)
				requireNoLeak(t, err, legacy)
			} else {
				require.NoError(t, err)
				require.Equal(t, KindAgent, v.Kind)
			}

			// The wrong kind stays the wrong kind, expired or not.
			_, err = iss.VerifyContainer(legacy)
			require.True(t, errors.Is(err, ErrTokenInvalid), "%v", err)
			require.False(t, errors.Is(err, ErrTokenExpired), "%v", err)
			_, err = iss.VerifyAgent(container)
			require.True(t, errors.Is(err, ErrTokenInvalid), "%v", err)
			require.False(t, errors.Is(err, ErrTokenExpired), "%v", err)
		})
	}
}

func TestVerifyContainerExpired(t *testing.T) {
	ring := NewKeyRing(testKey(t, "current"))
	container, minted, err := NewIssuer(ring, clockAt(fixedTime)).MintContainer("A", "", time.Hour)
	require.NoError(t, err)
	exp := fixedTime.Add(time.Hour)
	const grace = 24 * time.Hour

	for _, tc := range []struct {
		name string
		at   time.Time
		ok   bool
	}{
		{"not expired", fixedTime.Add(time.Minute), true},
		{"expired a second ago", exp.Add(time.Second), true},
		{"expired 2 hours ago", exp.Add(2 * time.Hour), true},
		{"expired 23 hours ago", exp.Add(23 * time.Hour), true},
		{"expired a little less than grace ago", exp.Add(grace - time.Second), true},
		{"expired grace and 10s ago", exp.Add(grace + 10*time.Second), false},
		{"expired two days ago", exp.Add(2 * grace), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iss := NewIssuer(ring, clockAt(tc.at))
			c, err := iss.VerifyContainerExpired(container, grace)
			if tc.ok {
				require.NoError(t, err)
				require.Equal(t, minted, c)
				return
			}
			require.True(t, errors.Is(err, ErrTokenExpired), "%v", err)
			require.Equal(t, schemas.ContainerClaims{}, c)
			requireNoLeak(t, err, container)
		})
	}

	t.Run("a bad signature is not rescued by grace", func(t *testing.T) {
		bad, _, err := NewIssuer(NewKeyRing(testKey(t, "other")), clockAt(fixedTime)).MintContainer("A", "", time.Hour)
		require.NoError(t, err)
		_, err = NewIssuer(ring, clockAt(exp.Add(time.Hour))).VerifyContainerExpired(bad, grace)
		require.True(t, errors.Is(err, ErrTokenInvalid), "%v", err)
	})
}

func TestMintRefuses(t *testing.T) {
	iss := NewIssuer(NewKeyRing(testKey(t, "current")), clockAt(fixedTime))
	for _, tc := range []struct {
		name string
		mint func() (string, error)
	}{
		{"bad town", func() (string, error) { s, _, err := iss.MintContainer("a.b", "", time.Hour); return s, err }},
		{"empty town", func() (string, error) { s, _, err := iss.MintContainer("", "", time.Hour); return s, err }},
		{"zero ttl", func() (string, error) { s, _, err := iss.MintContainer("A", "", 0); return s, err }},
		{"negative ttl", func() (string, error) { s, _, err := iss.MintContainer("A", "", -time.Hour); return s, err }},
		{"huge user", func() (string, error) {
			s, _, err := iss.MintContainer("A", strings.Repeat("u", 1<<16), time.Hour)
			return s, err
		}},
		{"agent with bad rig", func() (string, error) { s, _, err := iss.MintAgent("A", "r*", "a", "", time.Hour); return s, err }},
		{"agent without agent", func() (string, error) { s, _, err := iss.MintAgent("A", "r", "", "", time.Hour); return s, err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := tc.mint()
			require.Error(t, err)
			require.Empty(t, tok)
		})
	}
}

func TestIssuerClock(t *testing.T) {
	iss := NewIssuer(NewKeyRing(testKey(t, "current")), clockAt(fixedTime))
	require.Equal(t, fixedTime, iss.Now())
	later := iss.WithClock(clockAt(fixedTime.Add(2 * time.Hour)))
	require.Equal(t, fixedTime.Add(2*time.Hour), later.Now())
	require.Equal(t, fixedTime, iss.Now(), "WithClock leaves the original alone")

	tok, _, err := iss.MintContainer("A", "", time.Hour)
	require.NoError(t, err)
	_, err = later.VerifyContainer(tok)
	require.True(t, errors.Is(err, ErrTokenExpired), "same keys, later clock: %v", err)

	real := NewIssuer(NewKeyRing(testKey(t, "current")), nil)
	require.WithinDuration(t, time.Now(), real.Now(), time.Minute, "a nil clock is the wall clock")
}

func TestIssuerIsSafeForConcurrentUse(t *testing.T) {
	iss := NewIssuer(NewKeyRing(testKey(t, "current"), testKey(t, "old")), clockAt(fixedTime))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			town := fmt.Sprintf("town-%d", g)
			for range 50 {
				tok, _, err := iss.MintContainer(town, "", time.Hour)
				if err == nil {
					var v Verified
					v, err = iss.Verify(tok)
					if err == nil && v.TownID() != town {
						err = fmt.Errorf("verified town %q, want %q", v.TownID(), town)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func BenchmarkMintContainer(b *testing.B) {
	iss := NewIssuer(NewKeyRing(testKey(b, "current")), clockAt(fixedTime))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := iss.MintContainer("A", "owner", 8*time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyContainer(b *testing.B) {
	iss := NewIssuer(NewKeyRing(testKey(b, "current")), clockAt(fixedTime))
	tok, _, err := iss.MintContainer("A", "owner", 8*time.Hour)
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := iss.VerifyContainer(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyLegacy measures Verify on a legacy token: the container
// attempt fails first, then the legacy one succeeds.
func BenchmarkVerifyLegacy(b *testing.B) {
	iss := NewIssuer(NewKeyRing(testKey(b, "current")), clockAt(fixedTime))
	tok, _, err := iss.MintAgent("A", "r1", "polecat-1", "owner", 8*time.Hour)
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := iss.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
