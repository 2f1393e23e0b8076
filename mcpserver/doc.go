// Package mcpserver is `gastown mcp`: a Model Context Protocol server on
// stdio that a coding agent (Claude Code, Codex, opencode, ...) starts
// inside its container to call the coordinator's tools. It lists exactly
// the tools the agent's role may call (schemas.ToolRoles), each with a
// description written for a model and an input schema derived from the
// schemas request types; it reads the container's token file at every
// call, like `gastown tool`, and turns error replies into tool errors a
// model can act on. No token ever goes into a result or a log line.
//
// It also holds the simulated agent's MCP path (RunSim): the sim doing
// its work through `gastown mcp`, as a real agent would.
package mcpserver
