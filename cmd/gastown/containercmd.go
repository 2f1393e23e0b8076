package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/schemas"
)

const containerDesc = `
Runs a town's container: it keeps the newest container token (asking for a
fresh one at start, storing each pushed one in the token file before
acknowledging it), starts the agents the coordinator dispatches as child
processes, each in a workspace of its own (a git clone for polecats and the
refinery, an empty directory for the mayor and triage agents), and sends a
heartbeat listing them at the interval the coordinator sends with every
token (--heartbeat until it has). Ctrl-C stops the agents (SIGTERM,
then SIGKILL after --stop-grace) and exits.

When the bus is lost it reconnects, waiting --reconnect-min doubling to
--reconnect-max, and logs the cause once: unreachable, refused (the token
revoked, signed with another secret, or expired past the recovery window),
or the coordinator still starting. A token refused for --refused-exit-after
cannot recover (a revocation is final): the container stops its agents and
exits with status 1, so that a supervisor restarts it with a fresh bootstrap
token (gastown token mint --town T).

An agent's environment is an allow-list, never inherited: GASTOWN_TOWN_ID,
GASTOWN_RIG_ID, GASTOWN_AGENT_ID, GASTOWN_AGENT_ROLE, GASTOWN_RUN_ID,
GASTOWN_BEAD_ID, GASTOWN_PROMPT, GASTOWN_NATS_URL and GASTOWN_TOKEN_FILE
(and GASTOWN_NATS_CA, GASTOWN_NATS_CERT, GASTOWN_NATS_KEY, absolute paths,
when TLS files are given); PATH, HOME, LANG and TZ; the dispatch's env; and
the variables named by --pass-env. Never the token itself nor the
container's own settings. Their output goes to
<workdir>/logs/<agent>-<run>.log.

Environment:
  GASTOWN_CONTAINER_TOKEN  the bootstrap container token (required);
                           its townId claim names the town
  GASTOWN_NATS_URL         default for --server (tls://host:port for a bus
                           that speaks TLS)
  GASTOWN_NATS_CA          default for --tls-ca
  GASTOWN_NATS_CERT        default for --tls-cert
  GASTOWN_NATS_KEY         default for --tls-key
  GASTOWN_CONTAINER_ID     default for --id
  GASTOWN_TOKEN_FILE       default for --token-file
  GASTOWN_AGENT_COMMAND    when set, the command line (run by sh -c) of
                           every agent, over --config and the --<role>-cmd
                           flags; GASTOWN_AGENT_COMMAND_<ROLE> (e.g.
                           GASTOWN_AGENT_COMMAND_POLECAT) for one role
A flag's own variable (GASTOWN_SERVER, GASTOWN_ID: see Flags) wins over
these.

--config FILE is JSON: {"commands": {"polecat": ["prog", "arg"], ...}};
--agent (every role) and the --<role>-agent flags override it with a
preset (sim: gastown agent sim; claude, codex, opencode: that CLI with the
gastown MCP server registered, through gastown agent launch), and the
--<role>-cmd flags override those.`

// EnvAgentCommand, when set, is the command line of every agent a container
// starts (PROTOCOL.md, Running a container); EnvAgentCommand_<ROLE> of one
// role's.
const EnvAgentCommand = agentclient.EnvAgentCommand

// envAgentCommands sets the commands GASTOWN_AGENT_COMMAND (every role)
// and GASTOWN_AGENT_COMMAND_<ROLE> (one role, over the first) name, each
// run by sh -c, over the configured ones.
func envAgentCommands(getenv func(string) string, commands map[string][]string) {
	for _, role := range []string{schemas.RoleMayor, schemas.RolePolecat, schemas.RoleRefinery, schemas.RoleTriage} {
		for _, name := range []string{EnvAgentCommand, EnvAgentCommand + "_" + strings.ToUpper(role)} {
			if line := strings.TrimSpace(getenv(name)); line != "" {
				commands[role] = []string{"sh", "-c", line}
			}
		}
	}
}

func runContainer(ctx context.Context, args []string, env Env) error {
	fs := newFlags("container", "container [flags]", containerDesc, env)
	defURL := env.Getenv(agentclient.EnvNatsURL)
	if defURL == "" {
		defURL = agentclient.DefaultURL
	}
	town := fs.String("town", "", "town id; must match the token's (default: the token's)")
	server := fs.String("server", defURL, "NATS URL of the bus")
	id := fs.String("id", env.Getenv(agentclient.EnvContainerID), "container id in heartbeats (default: the host name)")
	workdir := fs.String("workdir", "./container", "directory for workspaces, logs and the token file")
	tokenFile := fs.String("token-file", env.Getenv(agentclient.EnvTokenFile), "where agents read the newest token (default: GASTOWN_TOKEN_FILE, or <workdir>/token)")
	heartbeat := fs.Duration("heartbeat", agentclient.DefaultHeartbeatInterval, "heartbeat interval until the coordinator sends its own (with every token)")
	grace := fs.Duration("stop-grace", agentclient.DefaultStopGrace, "wait between SIGTERM and SIGKILL when stopping an agent")
	config := fs.String("config", "", "JSON file with the agent commands per role")
	reconnectMin := fs.Duration("reconnect-min", agentclient.DefaultReconnectMin, "wait before the first reconnect attempt; it doubles with each failed one (±25% jitter)")
	reconnectMax := fs.Duration("reconnect-max", agentclient.DefaultReconnectMax, "longest wait between reconnect attempts")
	refusedExit := fs.Duration("refused-exit-after", agentclient.DefaultRefusedExitAfter,
		"exit with status 1 once the bus has refused the token this long (revoked, another secret, expired); 0 never")
	passEnv := fs.String("pass-env", "", "comma-separated names of variables of this environment that agents get too (never GASTOWN_ ones)")
	tlsf := addTLSFlags(fs)
	agentPreset := fs.String("agent", "", "agent preset of every role: sim, claude, codex or opencode (see README, Bringing your own agent)")
	roleCmds, roleAgents := map[string]*string{}, map[string]*string{}
	for _, role := range []string{schemas.RoleMayor, schemas.RolePolecat, schemas.RoleRefinery, schemas.RoleTriage} {
		roleCmds[role] = fs.String(role+"-cmd", "", "command line of the "+role+" agent, e.g. \"gastown agent sim\"")
		roleAgents[role] = fs.String(role+"-agent", "", "agent preset of the "+role+" (over --agent; --"+role+"-cmd wins over it)")
	}
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	if done, err := parse(fs, args, env); done {
		return err
	}
	log, err := newLogger(env.Stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	commands := map[string][]string{}
	if *config != "" {
		b, err := os.ReadFile(*config)
		if err != nil {
			return errors.Wrapf(err, "reading --config %s", *config)
		}
		var cf struct {
			Commands map[string][]string `json:"commands"`
		}
		if err := json.Unmarshal(b, &cf); err != nil {
			return errors.Mark(errors.Wrapf(err, "--config %s is not {\"commands\": {role: [argv...]}}", *config), ErrUsage)
		}
		for role, argv := range cf.Commands {
			if err := schemas.ValidateRole(role); err != nil {
				return errors.Mark(errors.Wrapf(err, "--config %s", *config), ErrUsage)
			}
			commands[role] = argv
		}
	}
	if err := applyPresets(commands, *agentPreset, roleAgents); err != nil {
		return errors.Mark(err, ErrUsage)
	}
	for role, cmd := range roleCmds {
		if f := strings.Fields(*cmd); len(f) > 0 {
			commands[role] = f
		}
	}
	envAgentCommands(env.Getenv, commands)
	if len(commands) == 0 {
		return errors.Mark(errors.WithHint(errors.New("no agent commands configured"),
			"give --agent (sim, claude, codex or opencode), --polecat-cmd and the others, or --config, or set "+EnvAgentCommand+"; e.g. --agent sim"), ErrUsage)
	}
	var pass []string
	for n := range strings.SplitSeq(*passEnv, ",") {
		if n = strings.TrimSpace(n); n != "" {
			pass = append(pass, n)
		}
	}
	if err := agentclient.ValidatePassEnv(pass); err != nil {
		return errors.Mark(errors.Wrap(err, "--pass-env"), ErrUsage)
	}
	src := agentclient.ConfigFromEnv(env.Getenv)
	src.URL, src.ContainerID, src.TokenFile, src.Logger = *server, *id, *tokenFile, log
	if *reconnectMin <= 0 || *reconnectMax < *reconnectMin || *refusedExit < 0 {
		return errors.Mark(errors.New("--reconnect-min must be positive and at most --reconnect-max, and --refused-exit-after not negative"), ErrUsage)
	}
	src.ReconnectMin, src.ReconnectMax, src.RefusedExitAfter = *reconnectMin, *reconnectMax, *refusedExit
	if *refusedExit == 0 {
		src.RefusedExitAfter = -1 // never
	}
	if src.TLS, err = tlsf.resolve(env); err != nil {
		return err
	}
	if src.Token == "" {
		return errors.Mark(errors.WithHint(errors.Newf("%s is not set", agentclient.EnvContainerToken),
			"set it to the token printed by `gastown token mint --town <town>`"), ErrUsage)
	}
	claims, err := schemas.PeekContainerClaims(src.Token)
	if err != nil {
		return errors.Mark(errors.Wrap(err, agentclient.EnvContainerToken), ErrUsage)
	}
	if *town != "" && *town != claims.TownID {
		return errors.Mark(errors.Newf("--town %s does not match the token, which is for town %s", *town, claims.TownID), ErrUsage)
	}
	return agentclient.RunContainer(ctx, agentclient.ContainerConfig{
		Source:            src,
		Runner:            agentclient.RunnerConfig{WorkDir: *workdir, Commands: commands, PassEnv: pass, StopGrace: *grace, Logger: log},
		HeartbeatInterval: *heartbeat,
	})
}
