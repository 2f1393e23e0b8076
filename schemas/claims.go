package schemas

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/golang-jwt/jwt/v5"
)

// ScopeContainer is the `scope` claim of a container token.
const ScopeContainer = "container"

// ErrInvalidClaims marks claims that break PROTOCOL.md's rules.
var ErrInvalidClaims = errors.New("invalid token claims")

// NumericTime is a JWT NumericDate kept to the millisecond, so that a token
// minted right after a revocation is told apart from one minted right before.
// It reads whole seconds as well.
type NumericTime struct{ time.Time }

// At makes a NumericTime, truncated to the millisecond.
func At(t time.Time) NumericTime { return NumericTime{t.Truncate(time.Millisecond).UTC()} }

// MarshalJSON writes seconds since the epoch with up to three decimals.
func (n NumericTime) MarshalJSON() ([]byte, error) {
	if n.IsZero() {
		return []byte("null"), nil
	}
	ms := n.UnixMilli()
	return strconv.AppendFloat(nil, float64(ms)/1000, 'f', -1, 64), nil
}

// UnmarshalJSON reads a JSON number of seconds since the epoch.
func (n *NumericTime) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = NumericTime{}
		return nil
	}
	var f json.Number
	// json.Number also takes a string holding a number; RFC 7519 says a
	// NumericDate is a JSON number, so a quoted one is refused.
	if err := json.Unmarshal(b, &f); err != nil || bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte{'"'}) {
		return errors.Mark(errors.New("a time claim must be a number of seconds"), ErrInvalidClaims)
	}
	v, err := f.Float64()
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > 1e11 {
		return errors.Mark(errors.New("a time claim is out of range"), ErrInvalidClaims)
	}
	ms := int64(math.Round(v * 1000))
	*n = NumericTime{time.UnixMilli(ms).UTC()}
	return nil
}

func (n NumericTime) numericDate() *jwt.NumericDate {
	if n.IsZero() {
		return nil
	}
	return &jwt.NumericDate{Time: n.Time}
}

// timeClaims holds the times both kinds of token carry and implements the
// time part of jwt.Claims.
type timeClaims struct {
	IssuedAt  NumericTime `json:"iat"`
	ExpiresAt NumericTime `json:"exp"`
}

func (c timeClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return c.ExpiresAt.numericDate(), nil
}
func (c timeClaims) GetIssuedAt() (*jwt.NumericDate, error)  { return c.IssuedAt.numericDate(), nil }
func (c timeClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }
func (c timeClaims) GetIssuer() (string, error)              { return "", nil }
func (c timeClaims) GetSubject() (string, error)             { return "", nil }
func (c timeClaims) GetAudience() (jwt.ClaimStrings, error)  { return nil, nil }

func (c timeClaims) validateTimes() error {
	if c.IssuedAt.IsZero() {
		return errors.Mark(errors.New("iat claim is required"), ErrInvalidClaims)
	}
	if c.ExpiresAt.IsZero() {
		return errors.Mark(errors.New("exp claim is required"), ErrInvalidClaims)
	}
	if !c.ExpiresAt.After(c.IssuedAt.Time) {
		return errors.Mark(errors.New("exp must be after iat"), ErrInvalidClaims)
	}
	return nil
}

// ContainerClaims are the claims of a container token: one per town, shared
// by every agent in the town's container.
type ContainerClaims struct {
	TownID string `json:"townId"`
	UserID string `json:"userId"`
	Scope  string `json:"scope"`
	timeClaims
}

// NewContainerClaims builds container claims; userID falls back to townID.
func NewContainerClaims(townID, userID string, issuedAt time.Time, ttl time.Duration) ContainerClaims {
	if userID == "" {
		userID = townID
	}
	return ContainerClaims{
		TownID: townID, UserID: userID, Scope: ScopeContainer,
		timeClaims: timeClaims{IssuedAt: At(issuedAt), ExpiresAt: At(issuedAt.Add(ttl))},
	}
}

// Issued is when the token was minted.
func (c ContainerClaims) Issued() time.Time { return c.IssuedAt.Time }

// Expires is when the token stops working.
func (c ContainerClaims) Expires() time.Time { return c.ExpiresAt.Time }

// Validate is called by the JWT parser: scope must be exactly "container".
func (c ContainerClaims) Validate() error {
	if c.Scope != ScopeContainer {
		return errors.Mark(errors.New("not a container token: scope must be \"container\""), ErrInvalidClaims)
	}
	if err := ValidateID("townId", c.TownID); err != nil {
		return errors.Mark(err, ErrInvalidClaims)
	}
	if c.UserID == "" {
		return errors.Mark(errors.New("userId claim is required"), ErrInvalidClaims)
	}
	return c.validateTimes()
}

// AgentClaims are the claims of a legacy per-agent token. It has no scope.
type AgentClaims struct {
	AgentID string `json:"agentId"`
	RigID   string `json:"rigId"`
	TownID  string `json:"townId"`
	UserID  string `json:"userId"`
	// Scope must be absent; it is a pointer so that presence is seen.
	Scope *string `json:"scope,omitempty"`
	timeClaims
}

// NewAgentClaims builds legacy agent claims; userID falls back to townID.
func NewAgentClaims(townID, rigID, agentID, userID string, issuedAt time.Time, ttl time.Duration) AgentClaims {
	if userID == "" {
		userID = townID
	}
	return AgentClaims{
		AgentID: agentID, RigID: rigID, TownID: townID, UserID: userID,
		timeClaims: timeClaims{IssuedAt: At(issuedAt), ExpiresAt: At(issuedAt.Add(ttl))},
	}
}

// Issued is when the token was minted.
func (c AgentClaims) Issued() time.Time { return c.IssuedAt.Time }

// Expires is when the token stops working.
func (c AgentClaims) Expires() time.Time { return c.ExpiresAt.Time }

// Validate is called by the JWT parser: no scope, every identity present.
func (c AgentClaims) Validate() error {
	if c.Scope != nil {
		return errors.Mark(errors.New("not a legacy agent token: it has a scope"), ErrInvalidClaims)
	}
	if err := validIDs("townId", c.TownID, "rigId", c.RigID, "agentId", c.AgentID); err != nil {
		return errors.Mark(err, ErrInvalidClaims)
	}
	if c.UserID == "" {
		return errors.Mark(errors.New("userId claim is required"), ErrInvalidClaims)
	}
	return c.validateTimes()
}

// PeekContainerClaims reads a container token's claims WITHOUT checking its
// signature: what a container needs to know its town and when its token
// expires. Never use it to decide whether to trust a token.
func PeekContainerClaims(token string) (ContainerClaims, error) {
	var c ContainerClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &c); err != nil {
		return ContainerClaims{}, errors.Mark(errors.New("token is not a well-formed JWT"), ErrInvalidClaims)
	}
	if err := c.Validate(); err != nil {
		return ContainerClaims{}, err
	}
	return c, nil
}
