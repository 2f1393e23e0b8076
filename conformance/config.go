package conformance

import (
	"io"
	"log/slog"
	"time"

	"github.com/cockroachdb/errors"
)

// Defaults of the kit: short enough that a run takes well under a minute,
// long enough for a container on a busy machine.
const (
	DefaultTown              = "conformance"
	DefaultContainerID       = "conformance-container"
	DefaultTokenTTL          = 8 * time.Second
	DefaultRefreshInterval   = time.Second
	DefaultHeartbeatInterval = 250 * time.Millisecond
	DefaultRotations         = 5
	DefaultTimeout           = 15 * time.Second
	DefaultStopWait          = 30 * time.Second
)

// Config configures a run of the kit.
type Config struct {
	// Command is the container under test and its arguments.
	Command []string
	// AgentCommand is the command line (run by sh -c) of the kit's own
	// agent, handed to the container as GASTOWN_AGENT_COMMAND: e.g.
	// "exec '/usr/local/bin/gastown' conformance agent".
	AgentCommand string
	// Getenv reads the kit's own environment: PATH, HOME, LANG and TZ, and
	// the names in ContainerEnv, are passed on to the container.
	Getenv func(string) string
	// ContainerEnv names more variables of the kit's environment the
	// container needs to run (its interpreter's, say).
	ContainerEnv []string
	// WorkDir holds the store, the token file, the container's working
	// directory and output, and the agents' reports. Empty means a
	// temporary directory, removed at the end.
	WorkDir string
	// Town is the town the container runs (DefaultTown).
	Town string
	// TokenTTL is the lifetime of every token (DefaultTokenTTL): the
	// container moves its connection at half of it.
	TokenTTL time.Duration
	// RefreshInterval is how often the coordinator pushes a rotation
	// (DefaultRefreshInterval); under half of TokenTTL.
	RefreshInterval time.Duration
	// HeartbeatInterval is the interval the coordinator tells the container
	// (DefaultHeartbeatInterval).
	HeartbeatInterval time.Duration
	// Rotations is how many rotations the kit pushes itself while an agent
	// calls tools (DefaultRotations).
	Rotations int
	// Timeout bounds the wait for each thing the container must do
	// (DefaultTimeout).
	Timeout time.Duration
	// StopWait bounds how long stopping an agent that ignores SIGTERM may
	// take: the container's grace before SIGKILL (DefaultStopWait).
	StopWait time.Duration
	// Out receives a line per check and the summary.
	Out io.Writer
	// Logger receives the kit's own coordinator's logs; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Town == "" {
		c.Town = DefaultTown
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = DefaultTokenTTL
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.Rotations == 0 {
		c.Rotations = DefaultRotations
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.StopWait == 0 {
		c.StopWait = DefaultStopWait
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Getenv == nil {
		c.Getenv = func(string) string { return "" }
	}
	switch {
	case len(c.Command) == 0:
		return c, errors.WithHint(errors.New("no container command given"),
			"name the container under test after --, e.g. -- gastown container --workdir ./c")
	case c.AgentCommand == "":
		return c, errors.New("the kit's agent command is not set")
	case c.TokenTTL < 2*time.Second:
		return c, errors.Newf("token lifetime %s is too short: at least 2s", c.TokenTTL)
	case c.RefreshInterval <= 0 || c.RefreshInterval*11/10 >= c.TokenTTL/2:
		return c, errors.Newf("refresh interval %s must be positive and under half the token lifetime %s (with a tenth's jitter)", c.RefreshInterval, c.TokenTTL)
	case c.HeartbeatInterval < 10*time.Millisecond:
		return c, errors.Newf("heartbeat interval %s is too short: at least 10ms", c.HeartbeatInterval)
	case c.Rotations < 1 || c.Timeout <= 0 || c.StopWait <= 0:
		return c, errors.New("rotations, the timeout and the stop wait must be positive")
	}
	return c, nil
}
