package agentclient

import (
	"os/exec"
	"strings"
	"syscall"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
)

// ValidatePassEnv checks the names an operator asks to pass through to
// agents (--pass-env): plain variable names, never a GASTOWN_ one (the
// container's own settings, its token and the coordinator's secrets are
// all GASTOWN_ variables). What else to hand agents (a git host's token,
// say) is the operator's choice.
func ValidatePassEnv(names []string) error {
	for _, n := range names {
		switch {
		case n == "" || strings.ContainsAny(n, "= \t\n"):
			return errors.Newf("%q is not an environment variable name", n)
		case strings.HasPrefix(n, EnvPrefix):
			return errors.Newf("%s is one of the container's own settings and is never passed to agents", n)
		}
	}
	return nil
}

// AgentEnv is an agent's whole environment, built from an allow-list and
// never inherited: the run's GASTOWN_ variables, PATH, HOME, LANG and TZ
// and the names in pass (read with getenv, when set), and the dispatch's
// env. Never the token itself, the container's own GASTOWN_ settings or
// any secret.
func AgentEnv(getenv func(string) string, pass []string, req schemas.StartAgent, natsURL, tokenFile string) []string {
	var env []string
	for _, k := range append(append([]string{}, AgentEnvAllowed...), pass...) {
		if strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		if v := getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range req.Env {
		env = append(env, k+"="+v)
	}
	return append(env,
		EnvTownID+"="+req.TownID, EnvRigID+"="+req.RigID, EnvAgentID+"="+req.AgentID,
		EnvAgentRole+"="+req.Role, EnvRunID+"="+req.RunID, EnvBeadID+"="+req.BeadID,
		EnvPrompt+"="+req.Prompt, EnvNatsURL+"="+natsURL, EnvTokenFile+"="+tokenFile,
	)
}

// withTLSEnv adds the TLS files that are set to an agent's environment.
func withTLSEnv(env []string, t bus.ClientTLS) []string {
	for _, kv := range [][2]string{{EnvNatsCA, t.CAFile}, {EnvNatsCert, t.CertFile}, {EnvNatsKey, t.KeyFile}} {
		if kv[1] != "" {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	return env
}

// exitStatus is a run's exit code as heartbeats report it: the process's
// exit status, or 128 + the signal number when a signal ended it.
func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return -1
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}
