package token

import (
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/stretchr/testify/require"
)

// revokedBefore is a RevocationChecker over one town's revocation time;
// err, when set, is its only answer (a store not loaded yet).
type revokedBefore struct {
	town string
	at   time.Time
	err  error
}

func (r revokedBefore) Revoked(townID string, issuedAt time.Time) (bool, error) {
	if r.err != nil {
		return false, r.err
	}
	return townID == r.town && issuedAt.Before(r.at), nil
}

// TestConnAuthorizerGrants checks what a connecting container gets for
// each kind of token, with the default recovery settings.
func TestConnAuthorizerGrants(t *testing.T) {
	key := testKey(t, "connauth")
	mint := func(at time.Time, ttl time.Duration) string {
		tok, _, err := NewIssuer(NewKeyRing(key), clockAt(at)).MintContainer("A", "owner", ttl)
		require.NoError(t, err)
		return tok
	}
	now := fixedTime
	auth, err := NewConnAuthorizer(NewIssuer(NewKeyRing(key), clockAt(now)), AuthConfig{}, revokedBefore{town: "A", at: now.Add(-10 * time.Hour)})
	require.NoError(t, err)

	g, err := auth.AuthorizeConnection(mint(now.Add(-time.Hour), 8*time.Hour))
	require.NoError(t, err)
	require.Equal(t, bus.Grant{TownID: "A", Deadline: now.Add(7 * time.Hour), IssuedAt: now.Add(-time.Hour)}, g)

	// Expired within the default recovery window: recovery only, for the
	// default recovery connection lifetime.
	g, err = auth.AuthorizeConnection(mint(now.Add(-9*time.Hour), 8*time.Hour))
	require.NoError(t, err)
	require.True(t, g.RecoveryOnly)
	require.Equal(t, now.Add(DefaultRecoveryConnTTL), g.Deadline)

	_, err = auth.AuthorizeConnection(mint(now.Add(-8*time.Hour-DefaultRecoveryWindow-time.Minute), 8*time.Hour))
	require.True(t, errors.Is(err, ErrTokenExpired), "%v", err)

	_, err = auth.AuthorizeConnection(mint(now.Add(-11*time.Hour), 8*time.Hour))
	require.True(t, errors.Is(err, ErrTokenRevoked), "issued before the town's revocation, even inside the recovery window: %v", err)

	_, err = auth.AuthorizeConnection("not-a-token")
	require.True(t, errors.Is(err, ErrTokenInvalid), "%v", err)
}

// TestConnAuthorizerNotReady: no token is accepted while the revocations
// are not loaded, and the refusal is one the bus logs as expected.
func TestConnAuthorizerNotReady(t *testing.T) {
	key := testKey(t, "connauth")
	iss := NewIssuer(NewKeyRing(key), clockAt(fixedTime))
	tok, _, err := iss.MintContainer("A", "", time.Hour)
	require.NoError(t, err)
	auth, err := NewConnAuthorizer(iss, AuthConfig{}, revokedBefore{err: ErrNotReady})
	require.NoError(t, err)
	_, err = auth.AuthorizeConnection(tok)
	require.True(t, errors.Is(err, bus.ErrNotReady), "%v", err)
}

func TestConnAuthorizerRefusesNegativeSettings(t *testing.T) {
	iss := NewIssuer(NewKeyRing(testKey(t, "connauth")), nil)
	for _, cfg := range []AuthConfig{{RecoveryWindow: -time.Second}, {RecoveryConnTTL: -time.Second}} {
		_, err := NewConnAuthorizer(iss, cfg, nil)
		require.Error(t, err)
		require.Contains(t, err.Error(), "must not be negative")
	}
}
