package mcpserver

import (
	"context"
	"log/slog"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/schemas"
	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/nats-io/nats.go"
)

// Defaults of Config.
const (
	// DefaultConnectTimeout bounds connecting to the bus on the first call.
	DefaultConnectTimeout = 30 * time.Second
	// DefaultCallTimeout bounds one tool call (agentclient's default:
	// some tools dispatch agents, which may clone a repository).
	DefaultCallTimeout = agentclient.DefaultCallTimeout
)

// Log keys.
const (
	keyTool = "tool"
	keyCode = "code"
	keyRole = "role"
)

// Config configures the server. Everything about the agent comes from its
// environment, as its container set it (PROTOCOL.md, An agent's
// environment): GASTOWN_AGENT_ROLE, GASTOWN_AGENT_ID, GASTOWN_RIG_ID,
// GASTOWN_RUN_ID, GASTOWN_TOKEN_FILE, GASTOWN_NATS_URL and the TLS files.
type Config struct {
	// Getenv reads the agent's environment (os.Getenv).
	Getenv func(string) string
	// ConnectTimeout bounds connecting to the bus (DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// CallTimeout bounds each tool call (DefaultCallTimeout).
	CallTimeout time.Duration
	// Version is the server's version, as it introduces itself.
	Version string
	// Now is the clock (time.Now).
	Now func() time.Time
	// Logger gets one line per call (tool and outcome, never a body or a
	// token); nil discards.
	Logger *slog.Logger
}

// Server is the MCP server of one agent.
type Server struct {
	cfg  Config
	log  *slog.Logger
	role string
	// townID is the town the agent's environment names, for the
	// briefing (the token's town is the one that counts on the wire).
	townID, agentID, rigID, runID string

	conn *connector
	mcp  *mcp.Server
}

// New makes the server of the agent cfg.Getenv describes. It checks the
// environment now (a misconfigured agent learns at once) but connects to
// the bus only on the first call.
func New(cfg Config) (*Server, error) {
	if cfg.Getenv == nil {
		return nil, errors.New("mcpserver: Config.Getenv is required")
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	get := cfg.Getenv
	s := &Server{cfg: cfg, log: log, role: get(agentclient.EnvAgentRole), townID: get(agentclient.EnvTownID),
		agentID: get(agentclient.EnvAgentID), rigID: get(agentclient.EnvRigID), runID: get(agentclient.EnvRunID)}
	hint := "gastown mcp runs inside a container's agent environment, which sets it; start it from the agent the container runs"
	if err := schemas.ValidateRole(s.role); err != nil {
		return nil, errors.WithHint(errors.Wrap(err, agentclient.EnvAgentRole), hint)
	}
	for _, p := range [][2]string{{agentclient.EnvAgentID, s.agentID}, {agentclient.EnvRigID, s.rigID}} {
		if p[1] == "" {
			return nil, errors.WithHint(errors.Newf("%s is not set", p[0]), hint)
		}
		if err := schemas.ValidateID(p[0], p[1]); err != nil {
			return nil, errors.WithHint(err, hint)
		}
	}
	tokenFile := get(agentclient.EnvTokenFile)
	if tokenFile == "" {
		return nil, errors.WithHint(errors.Newf("%s is not set", agentclient.EnvTokenFile), hint)
	}
	url := get(agentclient.EnvNatsURL)
	if url == "" {
		url = agentclient.DefaultURL
	}
	tls := agentclient.TLSFromEnv(get)
	if err := tls.Validate(); err != nil {
		return nil, err
	}
	// The first connect fails at once when the bus is unreachable (the
	// tool error says so; the model retries), rather than hold the call.
	s.conn = &connector{url: url, file: tokenFile, timeout: cfg.ConnectTimeout, now: cfg.Now,
		opts: []nats.Option{tls.Option(), nats.RetryOnFailedConnect(false)}}

	s.mcp = mcp.NewServer(&mcp.Implementation{Name: "gastown", Title: "Gastown", Version: cfg.Version}, &mcp.ServerOptions{
		Instructions: "These are your Gastown tools: you are the " + s.role + " agent " + s.agentID +
			". Call prime first: it is your briefing (your task, your branch, the tool that ends your work).",
		Logger: log,
	})
	for _, d := range toolsFor(s.role) {
		sc, err := d.schema()
		if err != nil {
			return nil, errors.Wrapf(err, "tool %s", d.method)
		}
		applyEnums(d.method, sc)
		resolved, err := sc.Resolve(&jsonschema.ResolveOptions{ValidateDefaults: true})
		if err != nil {
			return nil, errors.Wrapf(err, "tool %s's input schema", d.method)
		}
		s.mcp.AddTool(&mcp.Tool{Name: d.method, Description: d.desc, InputSchema: sc},
			func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				return d.handle(ctx, s, resolved, req.Params.Arguments), nil
			})
	}
	log.Debug("serving the agent's tools", keyRole, s.role, "tools", len(toolsFor(s.role)))
	return s, nil
}

// MCP is the underlying MCP server.
func (s *Server) MCP() *mcp.Server { return s.mcp }

// Role is the role whose tools the server lists.
func (s *Server) Role() string { return s.role }

// Run serves t (mcp.StdioTransport for `gastown mcp`) until the client
// leaves or ctx ends, then closes the bus connection.
func (s *Server) Run(ctx context.Context, t mcp.Transport) error {
	defer s.Close()
	err := s.mcp.Run(ctx, t)
	if ctx.Err() != nil {
		return nil // stopped
	}
	return err
}

// Close closes the bus connection; safe to call twice.
func (s *Server) Close() { s.conn.Close() }

// client is the tool client of the agent, connecting now if need be;
// release must be called when its call is answered.
func (s *Server) client(ctx context.Context) (*agentclient.Client, func(), error) {
	sess, release, err := s.conn.acquire(ctx)
	if err != nil {
		if errors.Is(err, nats.ErrNoServers) {
			return nil, nil, errors.WithHint(schemas.NewError(schemas.CodeUnavailable, "the bus at %s is not reachable", s.conn.url),
				"the call was not made; retry in a few seconds")
		}
		return nil, nil, err
	}
	return agentclient.NewClient(sess, s.agentID, s.rigID).WithTimeout(s.cfg.CallTimeout), release, nil
}

// town is the agent's town: its token's (the town the coordinator
// answers for), or its environment's when the bus cannot be reached.
func (s *Server) town(ctx context.Context) string {
	sess, release, err := s.conn.acquire(ctx)
	if err != nil {
		return s.townID
	}
	defer release()
	return sess.Town().ID()
}
