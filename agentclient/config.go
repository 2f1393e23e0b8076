package agentclient

import (
	"log/slog"
	"os"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/clock"
)

// DefaultURL is where the bus is when GASTOWN_NATS_URL is unset.
const DefaultURL = "nats://127.0.0.1:4222"

// Defaults of the token source.
const (
	DefaultRequestTimeout = 10 * time.Second
	// DefaultDrainTimeout bounds how long an old connection waits for its
	// requests in flight before it is closed.
	DefaultDrainTimeout = 30 * time.Second
)

// Config configures a TokenSource.
type Config struct {
	// URL of the bus (comma-separated for a cluster).
	URL string
	// Token is the bootstrap container token.
	Token string
	// LegacyToken is a legacy per-agent token, used as the bearer token
	// when there is no container token. It cannot open a connection.
	LegacyToken string
	// ContainerID names this container in token requests and heartbeats.
	ContainerID string
	// TokenFile, when set, receives every new token (mode 0600, replaced by
	// rename) so that agent processes read the newest one at each call.
	TokenFile string
	// RequestTimeout bounds a request the source makes itself.
	RequestTimeout time.Duration
	// DrainTimeout bounds how long an old connection waits for its
	// requests in flight.
	DrainTimeout time.Duration
	// ReconnectMin is the wait before the first reconnect attempt; it
	// doubles with each failed attempt up to ReconnectMax, ±25% jitter.
	// Zero means DefaultReconnectMin (100 ms) and DefaultReconnectMax (30 s).
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// RefusedExitAfter is how long the bus may go on refusing the token
	// (revoked, another secret, expired) before the source gives up: Done
	// is closed and Err is ErrTokenRefused, and a container exits
	// non-zero. Zero means DefaultRefusedExitAfter (5 min); negative,
	// never.
	RefusedExitAfter time.Duration
	// Clock times the source's loop: its waits for a connection's switch
	// time and its retries; nil means the wall clock (clock.Real). Tests
	// advance a clock.Manual instead. What is bounded by the network (a
	// request, draining an old connection, the NATS client's own
	// reconnects) stays on the wall clock.
	Clock clock.Clock
	// Now reads the time; nil means Clock.Now.
	Now func() time.Time
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// TLS is the CA and client certificate for a bus that speaks TLS.
	TLS bus.ClientTLS
}

// TLSFromEnv reads GASTOWN_NATS_CA, GASTOWN_NATS_CERT and GASTOWN_NATS_KEY.
func TLSFromEnv(getenv func(string) string) bus.ClientTLS {
	return bus.ClientTLS{CAFile: getenv(EnvNatsCA), CertFile: getenv(EnvNatsCert), KeyFile: getenv(EnvNatsKey)}
}

// ConfigFromEnv reads a container's settings from its environment:
// GASTOWN_CONTAINER_TOKEN (falling back to GASTOWN_SESSION_TOKEN for a legacy
// token), GASTOWN_NATS_URL, GASTOWN_CONTAINER_ID (the host name) and
// GASTOWN_TOKEN_FILE, and the TLS files (TLSFromEnv).
func ConfigFromEnv(getenv func(string) string) Config {
	c := Config{
		URL:         getenv(EnvNatsURL),
		Token:       getenv(EnvContainerToken),
		ContainerID: getenv(EnvContainerID),
		TokenFile:   getenv(EnvTokenFile),
		TLS:         TLSFromEnv(getenv),
	}
	if c.Token == "" {
		c.LegacyToken = getenv(EnvSessionToken)
	}
	return c
}

// ErrNoToken is returned when no usable bootstrap token is configured.
var ErrNoToken = errors.New("no container token")

func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.ContainerID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "container"
		}
		c.ContainerID = h
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	c.Clock = clock.Or(c.Clock)
	if c.Now == nil {
		c.Now = c.Clock.Now
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = DefaultReconnectMax
	}
	if c.RefusedExitAfter == 0 {
		c.RefusedExitAfter = DefaultRefusedExitAfter
	}
	if c.ReconnectMin < 0 || c.ReconnectMax < c.ReconnectMin {
		return c, errors.Newf("reconnect waits must be 0 < min (%s) <= max (%s)", c.ReconnectMin, c.ReconnectMax)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if err := c.TLS.Validate(); err != nil {
		return c, err
	}
	if c.Token == "" {
		hint := "set " + EnvContainerToken + " to the token printed by `gastown token mint --town <town>`"
		if c.LegacyToken != "" {
			return c, errors.WithHint(errors.Mark(errors.New("only a legacy per-agent token is set, and a legacy token cannot connect to the bus"), ErrNoToken), hint)
		}
		return c, errors.WithHint(errors.Mark(errors.Newf("%s is not set", EnvContainerToken), ErrNoToken), hint)
	}
	return c, nil
}
