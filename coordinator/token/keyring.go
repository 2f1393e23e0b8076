package token

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/cockroachdb/errors"
)

// MinSecretLen is the shortest signing secret accepted, in bytes.
const MinSecretLen = 32

// Environment variables that hold signing secrets.
const (
	// EnvJWTSecret holds the current signing secret.
	EnvJWTSecret = "GASTOWN_JWT_SECRET"
	// EnvJWTAcceptSecrets holds further secrets, comma-separated, whose
	// tokens are still accepted (an old key being retired, or a new key
	// being rolled out before it becomes current).
	EnvJWTAcceptSecrets = "GASTOWN_JWT_ACCEPT_SECRETS"
)

// ErrNoSecret is returned when the signing secret is missing or too short.
var ErrNoSecret = errors.New("no usable signing secret")

// Key is one HMAC signing key and its key id. The id is derived from the
// secret (a prefix of its SHA-256), so every coordinator given the same
// secret names it the same way, and the id reveals nothing of the secret.
type Key struct {
	ID string
	// secret returns the secret. It is a func so that printing a Key or a
	// KeyRing by mistake, with any verb, shows an address and never the
	// secret's bytes.
	secret func() []byte
}

// bytes is the HMAC key; nil for a Key that was not made by NewKey.
func (k Key) bytes() []byte {
	if k.secret == nil {
		return nil
	}
	return k.secret()
}

// NewKey checks a secret and derives its key id.
func NewKey(secret []byte) (Key, error) {
	if len(secret) < MinSecretLen {
		return Key{}, errors.Mark(errors.Newf("a signing secret must be at least %d bytes; this one is %d", MinSecretLen, len(secret)), ErrNoSecret)
	}
	sum := sha256.Sum256(secret)
	b := append([]byte(nil), secret...)
	return Key{ID: hex.EncodeToString(sum[:8]), secret: func() []byte { return b }}, nil
}

// KeyRing is the current signing key plus the others still accepted.
type KeyRing struct {
	current Key
	byID    map[string]Key
}

// NewKeyRing makes a ring that signs with current and accepts current and
// every key in accepted.
func NewKeyRing(current Key, accepted ...Key) *KeyRing {
	r := &KeyRing{current: current, byID: map[string]Key{current.ID: current}}
	for _, k := range accepted {
		r.byID[k.ID] = k
	}
	return r
}

// KeyRingFromEnv builds the ring from GASTOWN_JWT_SECRET and
// GASTOWN_JWT_ACCEPT_SECRETS, as given by getenv.
func KeyRingFromEnv(getenv func(string) string) (*KeyRing, error) {
	raw := getenv(EnvJWTSecret)
	if raw == "" {
		return nil, errors.WithHint(
			errors.Mark(errors.Newf("%s is not set", EnvJWTSecret), ErrNoSecret),
			"set "+EnvJWTSecret+" to a random secret of at least 32 bytes, e.g. export "+EnvJWTSecret+"=$(openssl rand -hex 32)")
	}
	cur, err := NewKey([]byte(raw))
	if err != nil {
		return nil, errors.WithHint(errors.Wrapf(err, "%s", EnvJWTSecret),
			"make a longer one with: openssl rand -hex 32")
	}
	var accepted []Key
	if extra := getenv(EnvJWTAcceptSecrets); extra != "" {
		for i, s := range strings.Split(extra, ",") {
			if strings.TrimSpace(s) == "" {
				continue // a trailing or doubled comma
			}
			k, err := NewKey([]byte(strings.TrimSpace(s)))
			if err != nil {
				return nil, errors.Wrapf(err, "%s entry %d", EnvJWTAcceptSecrets, i+1)
			}
			accepted = append(accepted, k)
		}
	}
	return NewKeyRing(cur, accepted...), nil
}

// CurrentID is the id of the key new tokens are signed with.
func (r *KeyRing) CurrentID() string { return r.current.ID }

// IDs lists the ids of every accepted key.
func (r *KeyRing) IDs() []string {
	ids := make([]string, 0, len(r.byID))
	for id := range r.byID {
		ids = append(ids, id)
	}
	return ids
}

// lookup finds an accepted key. A Key that was not made by NewKey (its zero
// value, with an empty id and no secret) is never found: an empty HMAC key
// would accept tokens anyone can sign.
func (r *KeyRing) lookup(id string) (Key, bool) {
	k, ok := r.byID[id]
	if !ok || len(k.bytes()) < MinSecretLen {
		return Key{}, false
	}
	return k, true
}
