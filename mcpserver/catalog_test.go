package mcpserver

import (
	"log/slog"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// TestCatalogCoversEveryAgentTool: every tool a role may be offered has
// a description and a schema derived from its request type, so a tool
// added to schemas.ToolRoles cannot be silently left out of gastown mcp.
func TestCatalogCoversEveryAgentTool(t *testing.T) {
	for _, role := range schemas.Roles {
		for _, m := range schemas.AgentTools(role) {
			d, ok := catalog[m]
			require.True(t, ok, "%s has no MCP tool definition", m)
			require.NotEmpty(t, d.desc, m)
			sc, err := d.schema()
			require.NoError(t, err, m)
			require.Equal(t, "object", sc.Type, m)
		}
	}
	require.NotContains(t, catalog, schemas.ToolPing)
}

// TestErrorResults: each kind of failure is a tool error with its code
// and what to do; resource_exhausted carries its retry hint, and a
// connection lost says the call may have been handled.
func TestErrorResults(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		err   error
		code  schemas.Code
		retry int64
		text  []string
	}{
		{schemas.Exhausted(1500*time.Millisecond, "town T is over its rate"), schemas.CodeResourceExhausted, 1500,
			[]string{"resource_exhausted", "Retry after 1500 ms (Gastown-Retry-After)", "Wait the time given"}},
		{schemas.Exhausted(0, "town T is at its cap"), schemas.CodeResourceExhausted, 0, []string{"with no time given, waiting will not help"}},
		{schemas.NewError(schemas.CodeConflict, "nothing is on your hook"), schemas.CodeConflict, 0, []string{"nothing is on your hook", "call prime"}},
		{errors.Wrap(agentclient.ErrConnectionLost, "calling"), schemas.CodeUnavailable, 0, []string{"may or may not have been handled"}},
		{errors.WithHint(errors.New("reading token file /x: no such file"), "is GASTOWN_TOKEN_FILE right?"), schemas.CodeUnavailable, 0,
			[]string{"/x", "is GASTOWN_TOKEN_FILE right?"}},
	} {
		res := s.errorResult("done", tc.err)
		require.True(t, res.IsError)
		te := res.StructuredContent.(toolError)
		require.Equal(t, tc.code, te.Error.Code, "%v", tc.err)
		require.Equal(t, tc.retry, te.Error.RetryAfterMs)
		text := resultText(res)
		require.Contains(t, text, "done failed: "+string(tc.code))
		for _, w := range tc.text {
			require.Contains(t, text, w)
		}
	}
}
