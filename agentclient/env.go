package agentclient

// The environment contract, every name in one place: what a container
// reads (PROTOCOL.md, Running a container) and what each agent it starts
// gets (PROTOCOL.md, An agent's environment; built by AgentEnv).

// EnvPrefix begins every Gastown variable. None of the container's own is
// ever passed on to an agent but those AgentEnv sets, and an operator's
// --pass-env and a dispatch's env may not name one.
const EnvPrefix = "GASTOWN_"

// Read by a container (ConfigFromEnv, and `gastown container`).
const (
	EnvContainerToken = "GASTOWN_CONTAINER_TOKEN"
	EnvSessionToken   = "GASTOWN_SESSION_TOKEN" // legacy per-agent token
	EnvContainerID    = "GASTOWN_CONTAINER_ID"
	// EnvAgentCommand, when set, is the command line (run by sh -c) of
	// every agent the container starts; EnvAgentCommand + "_" + the role
	// upper-cased (e.g. _POLECAT), of one role's. The conformance kit
	// drives a container through it.
	EnvAgentCommand = "GASTOWN_AGENT_COMMAND"
)

// Read by a container and passed on to its agents.
const (
	EnvNatsURL   = "GASTOWN_NATS_URL"
	EnvTokenFile = "GASTOWN_TOKEN_FILE"
	// EnvNatsCA names the CA file (PEM) that signs the bus's TLS
	// certificate; EnvNatsCert and EnvNatsKey a client certificate and
	// key, for a bus that requires them. All three are paths, passed to
	// agents as absolute ones (when set).
	EnvNatsCA   = "GASTOWN_NATS_CA"
	EnvNatsCert = "GASTOWN_NATS_CERT"
	EnvNatsKey  = "GASTOWN_NATS_KEY"
)

// Set by a container for each agent run: who it is and what it works on.
const (
	EnvTownID    = "GASTOWN_TOWN_ID"
	EnvRigID     = "GASTOWN_RIG_ID"
	EnvAgentID   = "GASTOWN_AGENT_ID"
	EnvAgentRole = "GASTOWN_AGENT_ROLE"
	EnvRunID     = "GASTOWN_RUN_ID"
	EnvBeadID    = "GASTOWN_BEAD_ID" // may be empty
	EnvPrompt    = "GASTOWN_PROMPT"
)

// AgentEnvAllowed are the variables of the container's own environment
// that every agent gets, when set: what a program needs to run at all.
var AgentEnvAllowed = []string{"PATH", "HOME", "LANG", "TZ"}
