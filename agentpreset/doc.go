// Package agentpreset fills in the agent command for the coding-agent
// CLIs Gastown knows (Claude Code, Codex, opencode) and its own simulated
// agent: the command a container runs for a role, and what that command
// (`gastown agent launch <preset>`) does in the run's workspace: write the
// CLI's MCP configuration registering `gastown mcp`, and start the CLI
// with the prompt passed the way it takes one. It never handles a token:
// the configuration names the token file, which `gastown mcp` reads at
// every call.
package agentpreset
