package token

import (
	"sync"

	"github.com/cockroachdb/errors"
)

// verifyCacheSize bounds the verified-token cache; when full it is emptied
// (tokens are few: one per town, a handful live at a time).
const verifyCacheSize = 1 << 16

// VerifyCache remembers tokens whose signature and claims were verified,
// so a request pays for a signature check once per token, not per call.
// Expiry is checked again on every use (revocation by the caller). It is
// safe for concurrent use.
type VerifyCache struct {
	issuer *Issuer
	mu     sync.RWMutex
	ok     map[string]Verified
}

// NewVerifyCache makes an empty cache in front of issuer.
func NewVerifyCache(issuer *Issuer) *VerifyCache {
	return &VerifyCache{issuer: issuer, ok: map[string]Verified{}}
}

// Verify is Issuer.Verify, cached.
func (v *VerifyCache) Verify(token string) (Verified, error) {
	v.mu.RLock()
	got, hit := v.ok[token]
	v.mu.RUnlock()
	if hit {
		if v.issuer.Now().After(got.Expires().Add(v.issuer.leeway)) {
			return Verified{}, errors.Mark(errors.New("token has expired"), ErrTokenExpired)
		}
		return got, nil
	}
	got, err := v.issuer.Verify(token)
	if err != nil {
		return got, err
	}
	v.mu.Lock()
	if len(v.ok) >= verifyCacheSize {
		clear(v.ok)
	}
	v.ok[token] = got
	v.mu.Unlock()
	return got, nil
}
