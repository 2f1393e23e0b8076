package token

import (
	"crypto/rand"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/golang-jwt/jwt/v5"
)

// DefaultLeeway is the clock skew tolerated when checking a token's times.
const DefaultLeeway = 5 * time.Second

// maxTokenLen is the longest token verified or minted. Ours are a few
// hundred bytes; refusing anything longer before parsing bounds the work an
// unauthenticated caller can cause (a NATS CONNECT line is at most 4 KiB
// by default anyway).
const maxTokenLen = 8 << 10

// Token verification errors. All of them are unauthenticated on the wire;
// none of them ever carries the token.
var (
	// ErrTokenInvalid is any token that is not one of ours: malformed, badly
	// signed, an unknown key, a wrong algorithm, bad claims.
	ErrTokenInvalid = errors.New("invalid token")
	// ErrTokenExpired is a well-signed token past its exp.
	ErrTokenExpired = errors.New("token expired")
)

// Kind says which kind of token verified.
type Kind int

// The kinds of token.
const (
	KindContainer Kind = iota + 1
	KindAgent
)

func (k Kind) String() string {
	switch k {
	case KindContainer:
		return "container"
	case KindAgent:
		return "legacy agent"
	}
	return "unknown"
}

// Verified is a token that passed verification, with the claims of its kind.
type Verified struct {
	Kind      Kind
	Container schemas.ContainerClaims // when Kind is KindContainer
	Agent     schemas.AgentClaims     // when Kind is KindAgent
}

// TownID is the town the token belongs to.
func (v Verified) TownID() string {
	if v.Kind == KindAgent {
		return v.Agent.TownID
	}
	return v.Container.TownID
}

// Issued is when the token was minted.
func (v Verified) Issued() time.Time {
	if v.Kind == KindAgent {
		return v.Agent.Issued()
	}
	return v.Container.Issued()
}

// Expires is when the token stops working.
func (v Verified) Expires() time.Time {
	if v.Kind == KindAgent {
		return v.Agent.Expires()
	}
	return v.Container.Expires()
}

// Issuer mints and verifies tokens with a key ring. It is safe for
// concurrent use.
type Issuer struct {
	ring   *KeyRing
	now    func() time.Time
	leeway time.Duration
}

// NewIssuer makes an issuer. now is the clock (time.Now when nil).
func NewIssuer(ring *KeyRing, now func() time.Time) *Issuer {
	if now == nil {
		now = time.Now
	}
	return &Issuer{ring: ring, now: now, leeway: DefaultLeeway}
}

// Now is the issuer's clock.
func (i *Issuer) Now() time.Time { return i.now() }

// MintContainer signs a container token for town, valid for ttl from now.
// userID falls back to townID.
func (i *Issuer) MintContainer(townID, userID string, ttl time.Duration) (string, schemas.ContainerClaims, error) {
	c := schemas.NewContainerClaims(townID, userID, i.now(), ttl)
	if err := c.Validate(); err != nil {
		return "", schemas.ContainerClaims{}, errors.Wrap(err, "minting container token")
	}
	tok, err := i.sign(containerToken{c, rand.Text()})
	return tok, c, err
}

// containerToken and agentToken are what is signed: the claims and a jti,
// a random id that makes every token differ, even two minted in the same
// millisecond for the same town (PROTOCOL.md, Tokens). Verifiers read the
// claims and ignore it.
type (
	containerToken struct {
		schemas.ContainerClaims
		ID string `json:"jti"`
	}
	agentToken struct {
		schemas.AgentClaims
		ID string `json:"jti"`
	}
)

// MintAgent signs a legacy per-agent token, valid for ttl from now.
func (i *Issuer) MintAgent(townID, rigID, agentID, userID string, ttl time.Duration) (string, schemas.AgentClaims, error) {
	c := schemas.NewAgentClaims(townID, rigID, agentID, userID, i.now(), ttl)
	if err := c.Validate(); err != nil {
		return "", schemas.AgentClaims{}, errors.Wrap(err, "minting agent token")
	}
	tok, err := i.sign(agentToken{c, rand.Text()})
	return tok, c, err
}

func (i *Issuer) sign(c jwt.Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	t.Header["kid"] = i.ring.current.ID
	key := i.ring.current.bytes()
	if len(key) < MinSecretLen {
		return "", errors.Mark(errors.New("signing token: the key ring has no usable current key"), ErrNoSecret)
	}
	s, err := t.SignedString(key)
	if err != nil {
		return "", errors.Wrap(err, "signing token")
	}
	if len(s) > maxTokenLen {
		return "", errors.Newf("signing token: it is %d bytes; at most %d are accepted", len(s), maxTokenLen)
	}
	return s, nil
}

// Verify checks a token of either kind: container first, then legacy.
func (i *Issuer) Verify(token string) (Verified, error) {
	c, cerr := i.VerifyContainer(token)
	if cerr == nil {
		return Verified{Kind: KindContainer, Container: c}, nil
	}
	a, aerr := i.VerifyAgent(token)
	if aerr == nil {
		return Verified{Kind: KindAgent, Agent: a}, nil
	}
	// Report expiry when the token was ours but late; otherwise invalid.
	if errors.Is(cerr, ErrTokenExpired) {
		return Verified{}, cerr
	}
	return Verified{}, aerr
}

// VerifyContainer checks a container token.
func (i *Issuer) VerifyContainer(token string) (schemas.ContainerClaims, error) {
	var c schemas.ContainerClaims
	if err := i.parse(token, &c, i.now); err != nil {
		return schemas.ContainerClaims{}, err // never hand out unverified claims
	}
	return c, nil
}

// VerifyAgent checks a legacy per-agent token.
func (i *Issuer) VerifyAgent(token string) (schemas.AgentClaims, error) {
	var c schemas.AgentClaims
	if err := i.parse(token, &c, i.now); err != nil {
		return schemas.AgentClaims{}, err
	}
	return c, nil
}

// VerifyContainerExpired checks a container token that may have expired up
// to grace ago: everything else about it must be right. It is for recovery
// only: such a token may ask for a fresh one and do nothing else.
func (i *Issuer) VerifyContainerExpired(token string, grace time.Duration) (schemas.ContainerClaims, error) {
	var c schemas.ContainerClaims
	if err := i.parse(token, &c, func() time.Time { return i.now().Add(-grace) }); err != nil {
		return schemas.ContainerClaims{}, err
	}
	return c, nil
}

// parse verifies signature, algorithm, key id and claims, checking times
// against now.
func (i *Issuer) parse(token string, claims jwt.Claims, now func() time.Time) error {
	if len(token) > maxTokenLen {
		return errors.Mark(errors.Newf("token is %d bytes; at most %d are accepted", len(token), maxTokenLen), ErrTokenInvalid)
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(i.leeway),
		jwt.WithTimeFunc(now),
	)
	_, err := p.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, ok := i.ring.lookup(kid)
		if !ok {
			return nil, errors.New("unknown key id")
		}
		return k.bytes(), nil
	})
	switch {
	case err == nil:
		// A token issued in the future (beyond the leeway) is refused: it
		// would outlive a revocation made before its iat. Checked against
		// the real clock, also when now is shifted for recovery.
		if iat, _ := claims.GetIssuedAt(); iat != nil && iat.After(i.now().Add(i.leeway)) {
			return errors.Mark(errors.New("token is issued in the future"), ErrTokenInvalid)
		}
		return nil
	case errors.Is(err, jwt.ErrTokenExpired):
		// The parser reports expiry together with the claims' own errors: a
		// token of the other kind that has also expired is the wrong kind,
		// not a late token of this kind (so it is not offered recovery).
		if v, ok := claims.(jwt.ClaimsValidator); ok {
			if verr := v.Validate(); verr != nil {
				return errors.Mark(errors.Newf("token claims are invalid: %s", verr.Error()), ErrTokenInvalid)
			}
		}
		return errors.Mark(errors.New("token has expired"), ErrTokenExpired)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return errors.Mark(errors.New("token signature is invalid"), ErrTokenInvalid)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return errors.Mark(errors.New("token is signed with an unknown key or algorithm"), ErrTokenInvalid)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errors.Mark(errors.New("token is malformed"), ErrTokenInvalid)
	}
	// Claims errors come after the signature check and are our own words.
	return errors.Mark(errors.Newf("token claims are invalid: %s", err.Error()), ErrTokenInvalid)
}

// WithClock returns an issuer with the same keys and another clock.
func (i *Issuer) WithClock(now func() time.Time) *Issuer {
	c := *i
	c.now = now
	return &c
}
