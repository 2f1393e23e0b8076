package conformance

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestConfigRefusesWhatCannotWork: a kit configuration that could not
// prove anything is refused with what is wrong.
func TestConfigRefusesWhatCannotWork(t *testing.T) {
	ok := Config{Command: []string{"c"}, AgentCommand: "a"}
	_, err := ok.withDefaults()
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no container command", func(c *Config) { c.Command = nil }, "no container command"},
		{"no agent command", func(c *Config) { c.AgentCommand = "" }, "agent command"},
		{"a token too short-lived", func(c *Config) { c.TokenTTL = time.Second }, "too short"},
		{"refreshes too rare for the lifetime", func(c *Config) { c.RefreshInterval = 4 * time.Second }, "under half"},
		{"a heartbeat too fast", func(c *Config) { c.HeartbeatInterval = time.Millisecond }, "heartbeat interval"},
		{"a negative timeout", func(c *Config) { c.Timeout = -time.Second }, "positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			_, err := c.withDefaults()
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestHoldsToken finds a container token anywhere in a JSON body.
func TestHoldsToken(t *testing.T) {
	const tok = "eyJhbGciOiJIUzI1NiJ9.eyJ0b3duSWQiOiJUIiwidXNlcklkIjoiVCIsInNjb3BlIjoiY29udGFpbmVyIiwiaWF0IjoxLCJleHAiOjk5OTk5OTk5OTl9.c2ln"
	require.True(t, holdsToken([]byte(`{"a":[{"b":"`+tok+`"}]}`)))
	require.True(t, holdsToken([]byte(`not json `+tok)))
	require.False(t, holdsToken([]byte(`{"a":"x.y.z","ok":true}`)))
}
