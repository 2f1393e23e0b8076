package conformance

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// shellVars are what `sh -c` itself may add to an agent's environment.
var shellVars = []string{"PWD", "OLDPWD", "SHLVL", "_"}

// tlsVars are the TLS files an agent gets when its container has them.
var tlsVars = []string{agentclient.EnvNatsCA, agentclient.EnvNatsCert, agentclient.EnvNatsKey}

// runVars are the variables that name an agent's run (PROTOCOL.md, An
// agent's environment); every agent gets all of them.
var runVars = []string{
	agentclient.EnvTownID, agentclient.EnvRigID, agentclient.EnvAgentID, agentclient.EnvAgentRole,
	agentclient.EnvRunID, agentclient.EnvBeadID, agentclient.EnvPrompt, agentclient.EnvNatsURL, agentclient.EnvTokenFile,
}

// startReq is a dispatch of the kit's agent in mode, with an empty
// workspace.
func (k *kit) startReq(agent, run, role, mode string) schemas.StartAgent {
	return schemas.StartAgent{
		TownID: k.town.ID(), RigID: "rig", AgentID: agent, RunID: run, Role: role,
		Prompt: "conformance " + run, Workspace: schemas.Workspace{Kind: schemas.WorkspaceEmpty},
		Env: map[string]string{EnvReportDir: k.reports, EnvMode: mode, "CONFORMANCE_EXTRA": "from-the-dispatch"},
	}
}

// request sends body (a message, or raw bytes) on subject as the
// coordinator would and returns the reply.
func (k *kit) request(ctx context.Context, subject string, body any) (*nats.Msg, error) {
	var data []byte
	switch b := body.(type) {
	case []byte:
		data = b
	case schemas.Message:
		var err error
		if data, err = schemas.Encode(b); err != nil {
			return nil, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	defer cancel()
	m, err := k.kc.RequestWithContext(rctx, subject, data)
	if err != nil {
		return nil, errors.Wrapf(err, "no answer on %s", subject)
	}
	k.obs.reply(m.Data)
	return m, nil
}

// dispatch sends a StartAgent and decodes the StartAgentResult.
func (k *kit) dispatch(ctx context.Context, req schemas.StartAgent) (schemas.StartAgentResult, error) {
	var res schemas.StartAgentResult
	m, err := k.request(ctx, k.town.Dispatch(), &req)
	if err != nil {
		return res, err
	}
	if err := schemas.Decode(m.Data, &res); err != nil {
		return res, errors.Wrap(err, "the dispatch's answer is not a valid gastown.v1.start_agent_result")
	}
	if !res.OK {
		return res, errors.Newf("the dispatch was refused: %s %s", res.Code, res.Error)
	}
	if res.AgentID != req.AgentID || res.RunID != req.RunID {
		return res, errors.Newf("the answer names agent %s run %s, not %s run %s", res.AgentID, res.RunID, req.AgentID, req.RunID)
	}
	return res, nil
}

// stop sends a StopAgent and returns the raw answer.
func (k *kit) stop(ctx context.Context, agent, run string) (*nats.Msg, schemas.Ack, error) {
	var ack schemas.Ack
	m, err := k.request(ctx, k.town.ControlStop(), &schemas.StopAgent{AgentID: agent, RunID: run, Reason: "conformance"})
	if err != nil {
		return nil, ack, err
	}
	if err := schemas.Decode(m.Data, &ack); err != nil {
		return m, ack, errors.Wrap(err, "the stop's answer is not a valid gastown.v1.ack")
	}
	return m, ack, nil
}

// refused checks that m is a refusal: the Gastown-Error header naming one
// of codes (any protocol code when none are given), and an Ack (or a
// StartAgentResult) that is not ok with the same code and an error.
func refused(m *nats.Msg, codes ...schemas.Code) error {
	h := schemas.Code(m.Header.Get(schemas.ErrorHeader))
	var body struct {
		Type  string       `json:"type"`
		OK    bool         `json:"ok"`
		Code  schemas.Code `json:"code"`
		Error string       `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &body); err != nil {
		return errors.Wrap(err, "the refusal is not JSON")
	}
	switch {
	case body.Type != schemas.TypeAck && body.Type != schemas.TypeStartAgentResult:
		return errors.Newf("the refusal's type is %q, not %s", body.Type, schemas.TypeAck)
	case body.OK:
		return errors.New("it was answered ok")
	case !body.Code.Known():
		return errors.Newf("the refusal's code %q is not a protocol code", body.Code)
	case body.Error == "":
		return errors.New("the refusal does not say why in error")
	case h != body.Code:
		return errors.Newf("the %s header is %q, not the refusal's code %q", schemas.ErrorHeader, h, body.Code)
	case len(codes) > 0 && !slices.Contains(codes, body.Code):
		return errors.Newf("the refusal's code is %s, not %v", body.Code, codes)
	}
	return nil
}

// report waits for the kit agent's report of run.
func (k *kit) report(ctx context.Context, run string) (Report, error) {
	var rep Report
	path := filepath.Join(k.reports, run+".json")
	var err error
	if !waitFor(ctx, k.cfg.Timeout, func() bool {
		var b []byte
		if b, err = os.ReadFile(path); err != nil {
			return false
		}
		err = json.Unmarshal(b, &rep)
		return err == nil
	}) {
		return rep, errors.Newf("the kit's agent never reported for run %s: does the container run GASTOWN_AGENT_COMMAND, and pass the dispatch's env?", run)
	}
	return rep, nil
}

// starts is how many processes of run have started.
func (k *kit) starts(run string) int {
	b, _ := os.ReadFile(filepath.Join(k.reports, run+".starts"))
	return strings.Count(string(b), "\n")
}

// listed waits for a heartbeat, arrived after from, that lists agent's run
// with a live status.
func (k *kit) listed(ctx context.Context, from int, agent, run string) error {
	ok := waitFor(ctx, k.cfg.Timeout, func() bool {
		for _, b := range k.obs.beatsSince(from) {
			for _, a := range b.hb.Agents {
				if a.AgentID == agent && a.RunID == run && (a.Status == schemas.RunRunning || a.Status == schemas.RunStarting) {
					return true
				}
			}
		}
		return false
	})
	if !ok {
		return errors.Newf("no heartbeat lists agent %s run %s as starting or running", agent, run)
	}
	return nil
}

// exitOf waits up to d for a heartbeat reporting agent's run's exit.
func (k *kit) exitOf(ctx context.Context, d time.Duration, agent, run string) (int, error) {
	code, found := 0, false
	waitFor(ctx, d, func() bool {
		for _, b := range k.obs.beatsSince(0) {
			for _, e := range b.hb.Exits {
				if e.AgentID == agent && e.RunID == run {
					code, found = e.ExitCode, true
					return true
				}
			}
		}
		return false
	})
	if !found {
		return 0, errors.Newf("no heartbeat reports the exit of agent %s run %s", agent, run)
	}
	return code, nil
}

// nextBeats waits for n more heartbeats.
func (k *kit) nextBeats(ctx context.Context, n int) {
	from := k.obs.numBeats()
	waitFor(ctx, k.cfg.Timeout, func() bool { return k.obs.numBeats() >= from+n })
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// checkDispatch drives dispatch and control.stop.
func (k *kit) checkDispatch(ctx context.Context) {
	run1 := k.nextRun()
	var rep Report
	from := k.obs.numBeats()
	if !k.check("a dispatch starts the agent and is answered ok", func() error {
		if _, err := k.dispatch(ctx, k.startReq("a1", run1, schemas.RoleMayor, ModeReport)); err != nil {
			return err
		}
		var err error
		rep, err = k.report(ctx, run1)
		return err
	}) {
		return
	}
	k.check("heartbeats list the run", func() error { return k.listed(ctx, from, "a1", run1) })
	k.check("workspace kind empty: a fresh empty directory", func() error {
		switch {
		case rep.Cwd == "":
			return errors.New("the agent could not tell its working directory")
		case len(rep.Entries) > 0:
			return errors.Newf("the workspace holds %d entries at start", len(rep.Entries))
		}
		return nil
	})
	k.check("the agent's environment is the allow-list: no token, no secret, no container setting", func() error {
		return k.checkEnv(rep, k.startReq("a1", run1, schemas.RoleMayor, ModeReport))
	})
	k.check("the agent reads a valid token from GASTOWN_TOKEN_FILE and calls a tool with it", func() error {
		switch {
		case rep.TokenErr != "":
			return errors.Newf("reading the token file: %s", rep.TokenErr)
		case rep.TokenTown != k.town.ID():
			return errors.Newf("the token file's token is town %s's", rep.TokenTown)
		case rep.PingErr != "":
			return errors.Newf("the ping tool call failed: %s", rep.PingErr)
		}
		// The kit's one coordinator holds every town's lease, so it
		// answers on the lease holder's subject (PROTOCOL.md, RPC).
		if want, _ := k.town.HolderRPC(schemas.ToolPing); rep.PingSubject != want {
			return errors.Newf("the ping tool call was answered on %s, not on the lease holder's %s", rep.PingSubject, want)
		}
		return nil
	})
	k.check("a dispatch is idempotent by runId", func() error {
		if _, err := k.dispatch(ctx, k.startReq("a1", run1, schemas.RoleMayor, ModeReport)); err != nil {
			return errors.Wrap(err, "the same dispatch again")
		}
		k.nextBeats(ctx, 2)
		if n := k.starts(run1); n != 1 {
			return errors.Newf("run %s was started %d times", run1, n)
		}
		return nil
	})
	k.check("control.stop refuses a stale runId and leaves the run alone", func() error {
		m, _, err := k.stop(ctx, "a1", "stale-run")
		if m == nil {
			return err
		}
		if err := refused(m, schemas.CodeConflict, schemas.CodeNotFound); err != nil {
			return err
		}
		if !alive(rep.PID) {
			return errors.New("the current run's process is gone")
		}
		return nil
	})
	run2 := k.nextRun()
	var rep2 Report
	k.check("a superseding dispatch stops the old run and reports its exit (128 + 15)", func() error {
		if _, err := k.dispatch(ctx, k.startReq("a1", run2, schemas.RoleMayor, ModeReport)); err != nil {
			return err
		}
		var err error
		if rep2, err = k.report(ctx, run2); err != nil {
			return err
		}
		if alive(rep.PID) {
			return errors.Newf("the old run %s still runs", run1)
		}
		code, err := k.exitOf(ctx, k.cfg.Timeout, "a1", run1)
		if err != nil {
			return err
		}
		if code != 128+int(syscall.SIGTERM) {
			return errors.Newf("the old run's exit code is %d, not %d (SIGTERM)", code, 128+int(syscall.SIGTERM))
		}
		if rep2.Cwd == rep.Cwd {
			return errors.New("the new run works in the old run's directory: each run gets its own")
		}
		return nil
	})
	k.check("control.stop stops the right run, reported as 128 + 15", func() error {
		_, ack, err := k.stop(ctx, "a1", run2)
		if err != nil {
			return err
		}
		if !ack.OK {
			return errors.Newf("the stop was refused: %s %s", ack.Code, ack.Error)
		}
		code, err := k.exitOf(ctx, k.cfg.Timeout, "a1", run2)
		if err != nil {
			return err
		}
		if code != 128+int(syscall.SIGTERM) {
			return errors.Newf("the exit code is %d, not %d", code, 128+int(syscall.SIGTERM))
		}
		return nil
	})
	k.check("an agent's exit status is reported in heartbeats", func() error {
		run := k.nextRun()
		req := k.startReq("a2", run, schemas.RoleTriage, ModeExit)
		req.Env[EnvExitCode] = "3"
		if _, err := k.dispatch(ctx, req); err != nil {
			return err
		}
		code, err := k.exitOf(ctx, k.cfg.Timeout, "a2", run)
		if err != nil {
			return err
		}
		if code != 3 {
			return errors.Newf("the exit code is %d, not 3", code)
		}
		return nil
	})
	k.check("an agent that ignores SIGTERM is killed after the grace (128 + 9)", func() error {
		run := k.nextRun()
		if _, err := k.dispatch(ctx, k.startReq("a3", run, schemas.RoleTriage, ModeStubborn)); err != nil {
			return err
		}
		if _, err := k.report(ctx, run); err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, k.cfg.StopWait+k.cfg.Timeout)
		defer cancel()
		m, err := k.kc.RequestWithContext(sctx, k.town.ControlStop(), mustEncode(&schemas.StopAgent{AgentID: "a3", RunID: run, Reason: "conformance"}))
		if err != nil {
			return errors.Wrapf(err, "no answer to the stop within %s (the --stop-wait)", k.cfg.StopWait+k.cfg.Timeout)
		}
		var ack schemas.Ack
		if err := schemas.Decode(m.Data, &ack); err != nil || !ack.OK {
			return errors.Newf("the stop was not answered ok: %s %s", ack.Code, ack.Error)
		}
		code, err := k.exitOf(ctx, k.cfg.Timeout, "a3", run)
		if err != nil {
			return err
		}
		if code != 128+int(syscall.SIGKILL) {
			return errors.Newf("the exit code is %d, not %d", code, 128+int(syscall.SIGKILL))
		}
		return nil
	})
	k.check("control.<other> is answered not_found", func() error {
		m, err := k.request(ctx, "gastown.town."+k.town.ID()+".control.pause", &schemas.StopAgent{AgentID: "a1", RunID: run2})
		if err != nil {
			return err
		}
		return refused(m, schemas.CodeNotFound)
	})
	k.checkGitWorkspace(ctx)
}

func mustEncode(m schemas.Message) []byte {
	b, err := schemas.Encode(m)
	if err != nil {
		panic(err) // the kit's own messages are valid
	}
	return b
}

// checkEnv holds an agent's environment to PROTOCOL.md's allow-list.
func (k *kit) checkEnv(rep Report, req schemas.StartAgent) error {
	want := map[string]string{
		agentclient.EnvTownID: req.TownID, agentclient.EnvRigID: req.RigID, agentclient.EnvAgentID: req.AgentID,
		agentclient.EnvAgentRole: req.Role, agentclient.EnvRunID: req.RunID, agentclient.EnvBeadID: req.BeadID,
		agentclient.EnvPrompt: req.Prompt,
	}
	for name, v := range req.Env {
		want[name] = v
	}
	var problems []string
	for name, v := range want {
		if got, ok := rep.Env[name]; !ok || got != v {
			problems = append(problems, name+" is missing or wrong")
		}
	}
	for _, name := range runVars {
		if _, ok := rep.Env[name]; !ok {
			problems = append(problems, name+" is missing")
		}
	}
	allowed := slices.Concat(runVars, tlsVars, agentclient.AgentEnvAllowed, shellVars)
	decoy := map[string]bool{}
	for _, v := range k.decoys {
		decoy[v] = true
	}
	for name, v := range rep.Env {
		_, fromDispatch := req.Env[name]
		switch {
		case decoy[v] || k.decoys[name] != "":
			problems = append(problems, name+" is the container's own secret")
		case strings.Contains(v, k.bootstrap) || looksLikeToken(v):
			problems = append(problems, name+" holds a token")
		case name == agentclient.EnvContainerToken || name == agentclient.EnvContainerID || name == agentclient.EnvAgentCommand:
			problems = append(problems, name+" is one of the container's own settings")
		case !slices.Contains(allowed, name) && !fromDispatch:
			problems = append(problems, name+" is not on the allow-list")
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return errors.Newf("%s", strings.Join(problems, "; "))
	}
	return nil
}

// looksLikeToken reports whether v holds a container token.
func looksLikeToken(v string) bool {
	for f := range strings.FieldsSeq(v) {
		if _, err := schemas.PeekContainerClaims(f); err == nil {
			return true
		}
	}
	return false
}
