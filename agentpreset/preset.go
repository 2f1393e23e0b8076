package agentpreset

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/schemas"
)

// The presets.
const (
	Sim      = "sim"
	Claude   = "claude"
	Codex    = "codex"
	OpenCode = "opencode"
)

// Names lists every preset; Sim, the built-in agent, is the one demos and
// tests use.
var Names = []string{Sim, Claude, Codex, OpenCode}

// ServerName is the name the gastown MCP server is registered under in
// every CLI's configuration: its tools appear to the model as gastown's
// (in Claude Code, mcp__gastown__<tool>).
const ServerName = "gastown"

// Dir is the directory of the workspace the presets write their
// configuration to, kept out of git (.git/info/exclude) so an agent never
// commits it.
const Dir = ".gastown"

// Validate checks a preset name.
func Validate(name string) error {
	if slices.Contains(Names, name) {
		return nil
	}
	return errors.Newf("agent preset %q is not one of %s", name, strings.Join(Names, ", "))
}

// Command is the command line a container runs for an agent of preset
// name; bin is the gastown binary (an absolute path). The sim runs
// directly; a CLI runs through `gastown agent launch`, which prepares
// the workspace and then becomes the CLI.
func Command(name, bin string) ([]string, error) {
	if err := Validate(name); err != nil {
		return nil, err
	}
	if name == Sim {
		return []string{bin, "agent", "sim"}, nil
	}
	return []string{bin, "agent", "launch", name}, nil
}

// Launch is how to start a CLI in a workspace.
type Launch struct {
	// Argv is the CLI's command line; Argv[0] is looked up on PATH.
	Argv []string
	// Env are variables to add to the agent's environment.
	Env []string
	// Files are the files to write, by path relative to the workspace.
	Files map[string][]byte
}

// serverEnv is the agent environment `gastown mcp` needs, from getenv:
// written into the CLI's configuration, since a CLI may not hand its own
// environment to the servers it starts (Codex does not). None of it is a
// secret: the token stays in the token file.
func serverEnv(getenv func(string) string) map[string]string {
	env := map[string]string{}
	for _, k := range []string{agentclient.EnvTownID, agentclient.EnvRigID, agentclient.EnvAgentID, agentclient.EnvAgentRole,
		agentclient.EnvRunID, agentclient.EnvBeadID, agentclient.EnvNatsURL, agentclient.EnvTokenFile,
		agentclient.EnvNatsCA, agentclient.EnvNatsCert, agentclient.EnvNatsKey} {
		if v := getenv(k); v != "" {
			env[k] = v
		}
	}
	return env
}

// Prompt is the first message a CLI gets: who it is, where its tools
// are, to start with prime, and the task (GASTOWN_PROMPT, the bead's
// title and body).
func Prompt(getenv func(string) string) string {
	role := getenv(agentclient.EnvAgentRole)
	var b strings.Builder
	fmt.Fprintf(&b, "You are the Gastown %s agent %s (town %s, rig %s). ", role, getenv(agentclient.EnvAgentID),
		getenv(agentclient.EnvTownID), getenv(agentclient.EnvRigID))
	fmt.Fprintf(&b, "Your Gastown tools are on the MCP server named %q. First call its prime tool: it is your briefing "+
		"(the work on your hook, the branch to work on, and how to finish). ", ServerName)
	if finish := schemas.FinishingTool(role); finish != "" {
		fmt.Fprintf(&b, "Then do the work, and end it by calling %s once. ", finish)
	} else {
		b.WriteString("Then run the town until you are stopped. ")
	}
	b.WriteString("If you are blocked, call escalate. Never print or commit the token file or any credential.")
	if task := strings.TrimSpace(getenv(agentclient.EnvPrompt)); task != "" {
		b.WriteString("\n\nYour task:\n\n" + task)
	}
	return b.String()
}

// Plan is how preset name starts in workspace dir, for the agent getenv
// describes; bin is the gastown binary the CLI starts as its MCP server.
func Plan(name, bin, dir string, getenv func(string) string) (Launch, error) {
	if err := Validate(name); err != nil {
		return Launch{}, err
	}
	if !filepath.IsAbs(bin) || !filepath.IsAbs(dir) {
		return Launch{}, errors.Newf("the gastown binary (%s) and the workspace (%s) must be absolute paths", bin, dir)
	}
	if err := schemas.ValidateRole(getenv(agentclient.EnvAgentRole)); err != nil {
		return Launch{}, errors.WithHint(errors.Wrap(err, agentclient.EnvAgentRole),
			"gastown agent launch runs as a container's agent, whose environment names its role")
	}
	env, prompt := serverEnv(getenv), Prompt(getenv)
	switch name {
	case Claude:
		// claude -p runs one prompt headless; --mcp-config loads the
		// servers of a file (--strict-mcp-config: only those); in -p mode
		// tools must be allowed up front: edits, Bash, and every tool of
		// the gastown server.
		cfg := filepath.Join(Dir, "mcp.json")
		doc := map[string]any{"mcpServers": map[string]any{ServerName: map[string]any{
			"type": "stdio", "command": bin, "args": []string{"mcp"}, "env": env}}}
		return Launch{
			Argv: []string{"claude", "-p", prompt, "--mcp-config", cfg, "--strict-mcp-config",
				"--permission-mode", "acceptEdits", "--allowedTools", "mcp__" + ServerName + ",Bash"},
			Files: map[string][]byte{cfg: jsonFile(doc)},
		}, nil
	case Codex:
		// codex exec runs one prompt headless and reads its
		// configuration from $CODEX_HOME/config.toml. The container is
		// the sandbox, and the agent must push: danger-full-access.
		// --skip-git-repo-check: triage and mayor workspaces are not git.
		home := filepath.Join(Dir, "codex")
		return Launch{
			Argv:  []string{"codex", "exec", "--sandbox", "danger-full-access", "--skip-git-repo-check", prompt},
			Env:   []string{"CODEX_HOME=" + filepath.Join(dir, home)},
			Files: map[string][]byte{filepath.Join(home, "config.toml"): codexConfig(bin, env)},
		}, nil
	case OpenCode:
		// opencode run runs one prompt headless; OPENCODE_CONFIG names a
		// configuration file, whose mcp section starts local servers.
		cfg := filepath.Join(Dir, "opencode.json")
		doc := map[string]any{"$schema": "https://opencode.ai/config.json", "mcp": map[string]any{ServerName: map[string]any{
			"type": "local", "command": []string{bin, "mcp"}, "enabled": true, "environment": env}}}
		return Launch{
			Argv:  []string{"opencode", "run", prompt},
			Env:   []string{"OPENCODE_CONFIG=" + filepath.Join(dir, cfg)},
			Files: map[string][]byte{cfg: jsonFile(doc)},
		}, nil
	}
	return Launch{}, errors.Newf("agent preset %s runs directly, not through gastown agent launch: use gastown agent sim", name)
}

// Write writes l's files into dir (mode 0600, in directories of mode
// 0700), and keeps Dir out of git when dir is a git clone.
func (l Launch) Write(dir string) error {
	for rel, data := range l.Files {
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return errors.Wrapf(err, "creating %s", filepath.Dir(path))
		}
		if err := agentclient.WriteSecretFile(path, data); err != nil {
			return err
		}
	}
	return excludeFromGit(dir)
}

// excludeFromGit adds Dir to dir's .git/info/exclude, once.
func excludeFromGit(dir string) error {
	info := filepath.Join(dir, ".git", "info")
	if st, err := os.Stat(filepath.Join(dir, ".git")); err != nil || !st.IsDir() {
		return nil // not a git clone (triage, mayor)
	}
	if err := os.MkdirAll(info, 0o755); err != nil {
		return errors.Wrapf(err, "creating %s", info)
	}
	path, line := filepath.Join(info, "exclude"), "/"+Dir+"/"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return errors.Wrapf(err, "reading %s", path)
	}
	for _, l := range strings.Split(string(old), "\n") {
		if strings.TrimSpace(l) == line {
			return nil
		}
	}
	if len(old) > 0 && !bytes.HasSuffix(old, []byte("\n")) {
		old = append(old, '\n')
	}
	return errors.Wrapf(os.WriteFile(path, append(old, []byte(line+"\n")...), 0o644), "writing %s", path)
}

// jsonFile is v as an indented JSON file.
func jsonFile(v any) []byte {
	b, _ := json.MarshalIndent(v, "", "  ") // maps of strings: cannot fail
	return append(b, '\n')
}

// codexConfig is Codex's config.toml registering the gastown server.
func codexConfig(bin string, env map[string]string) []byte {
	var b strings.Builder
	b.WriteString("# Written by gastown agent launch codex: this run's gastown MCP server.\n")
	fmt.Fprintf(&b, "[mcp_servers.%s]\ncommand = %s\nargs = [%s]\n\n[mcp_servers.%s.env]\n", ServerName, tomlString(bin), tomlString("mcp"), ServerName)
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, tomlString(env[k]))
	}
	return []byte(b.String())
}

// tomlString is s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
