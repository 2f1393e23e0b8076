package agentclient

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/clock"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// DefaultStopGrace is how long an agent has to stop after SIGTERM.
const DefaultStopGrace = 10 * time.Second

// RunnerConfig configures the agents a container runs.
type RunnerConfig struct {
	// WorkDir holds the workspaces and per-run log files.
	WorkDir string
	// Commands maps a role to the argv of its agent program.
	Commands map[string][]string
	// NatsURL and TokenFile are passed to agents (never the token).
	NatsURL   string
	TokenFile string
	// PassEnv names variables of the container's own environment that its
	// agents get too, besides the allow-list of AgentEnvAllowed (the
	// operator's --pass-env). Never a GASTOWN_ variable or a token.
	PassEnv []string
	// TLS is passed to agents as GASTOWN_NATS_CA, GASTOWN_NATS_CERT and
	// GASTOWN_NATS_KEY (absolute paths), those that are set.
	TLS bus.ClientTLS
	// StopGrace is the wait between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// Clock times the stop grace and the container's heartbeats; nil means
	// the wall clock (clock.Real). Tests advance a clock.Manual instead.
	Clock clock.Clock
	// Now reads the time; nil means Clock.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// run is one agent run: its process and what is known of it.
type run struct {
	req     schemas.StartAgent
	cmd     *exec.Cmd
	logPath string
	started time.Time
	exited  chan struct{} // closed when the process has been waited for
	status  string
	code    int
}

// Runner starts and stops a town's agents as child processes, each in a
// workspace of its own, and reports them for heartbeats. Dispatch is
// idempotent by run id; a stop or start naming an older run never touches
// a newer one.
type Runner struct {
	town string
	cfg  RunnerConfig
	log  *slog.Logger

	mu   sync.Mutex
	runs map[string]*run // agent → current run
	// starting holds the runs being started (their workspace prepared, a
	// clone that may take longer than the coordinator waits for a
	// heartbeat), from their admission until they are tracked or refused:
	// heartbeats list them as starting, so they are not declared dead.
	starting map[startKey]time.Time
	// reported is each agent's last run whose exit a heartbeat listed,
	// once it is no longer among the runs: stopping it again is fine.
	reported map[string]string
	// agentMu serializes starts of one agent.
	agentMu map[string]*sync.Mutex
	exits   []schemas.AgentExit
	closed  bool
	wg      sync.WaitGroup
}

// startKey names one run being started.
type startKey struct{ agent, run string }

// NewRunner makes the runner of a town's container.
func NewRunner(townID string, cfg RunnerConfig) (*Runner, error) {
	if err := schemas.ValidateID("townId", townID); err != nil {
		return nil, err
	}
	if cfg.WorkDir == "" {
		return nil, errors.New("the runner needs a work directory")
	}
	abs, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, errors.Wrap(err, "work directory")
	}
	cfg.WorkDir = abs
	for _, d := range []string{"workspaces", "logs"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, errors.WithHint(errors.Wrapf(err, "creating %s", filepath.Join(abs, d)), "choose a writable --workdir")
		}
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.Now == nil {
		cfg.Now = cfg.Clock.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Runner{town: townID, cfg: cfg, log: cfg.Logger.With(keyTown, townID), runs: map[string]*run{}, reported: map[string]string{},
		starting: map[startKey]time.Time{}, agentMu: map[string]*sync.Mutex{}}, nil
}

// HandleDispatch answers …dispatch, one start at a time (the
// subscription's order). The run is listed as starting in heartbeats from
// its admission on, so a slow clone is not taken for a dead agent.
// (Starting different agents at once was tried, and made the conformance
// kit's git dispatches go unanswered in about half its runs under load,
// for a reason not found yet.)
func (r *Runner) HandleDispatch(m *nats.Msg) {
	var req schemas.StartAgent
	if err := schemas.Decode(m.Data, &req); err != nil {
		res := &schemas.StartAgentResult{AgentID: "invalid", RunID: "invalid", Code: schemas.CodeInvalidArgument, Error: "invalid start request: " + err.Error()}
		if id := req.AgentID; schemas.ValidateID("agentId", id) == nil {
			res.AgentID = id
		}
		if id := req.RunID; schemas.ValidateID("runId", id) == nil {
			res.RunID = id
		}
		_ = bus.RespondFailed(m, res, res.Err().(*schemas.Error))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r.answerStart(m, r.Start(ctx, req))
}

// answerStart answers a dispatch with res.
func (r *Runner) answerStart(m *nats.Msg, res schemas.StartAgentResult) {
	var err error
	if res.OK {
		err = bus.Respond(m, &res)
	} else {
		err = bus.RespondFailed(m, &res, res.Err().(*schemas.Error))
	}
	if err != nil {
		r.log.Warn("answering dispatch", keyErr, err)
	}
}

// HandleControl answers …control.>: control.stop is HandleStop, any other
// control subject is not defined and is answered not_found.
func (r *Runner) HandleControl(m *nats.Msg) {
	if strings.HasSuffix(m.Subject, ".control.stop") {
		r.HandleStop(m)
		return
	}
	_ = bus.RespondRefusal(m, schemas.NewError(schemas.CodeNotFound, "%s is not a control request this container knows; only control.stop is defined", m.Subject))
}

// HandleStop answers …control.stop.
func (r *Runner) HandleStop(m *nats.Msg) {
	var req schemas.StopAgent
	if err := schemas.Decode(m.Data, &req); err != nil {
		_ = bus.RespondRefusal(m, schemas.NewError(schemas.CodeInvalidArgument, "invalid stop request: %s", err.Error()))
		return
	}
	if err := r.Stop(context.Background(), req.AgentID, req.RunID, req.Reason); err != nil {
		var e *schemas.Error
		if !errors.As(err, &e) {
			e = schemas.NewError(schemas.CodeInternal, "stopping the agent failed")
		}
		_ = bus.RespondRefusal(m, e)
		return
	}
	_ = bus.Respond(m, &schemas.Ack{OK: true})
}

// Start starts a run, unless it is already running (idempotent by run id).
// A different run of the same agent is stopped first.
func (r *Runner) Start(ctx context.Context, req schemas.StartAgent) schemas.StartAgentResult {
	res := schemas.StartAgentResult{AgentID: req.AgentID, RunID: req.RunID}
	argv, err := r.admit(req)
	if err != nil {
		return r.refuse(res, err)
	}
	defer r.starts(req)()
	release, err := r.lockAgent(req.AgentID)
	if err != nil {
		return r.refuse(res, err)
	}
	defer release()
	if r.replace(req) {
		res.OK = true // already running: dispatch is idempotent
		return res
	}
	ru, err := r.spawn(ctx, req, argv)
	if err != nil {
		return r.refuse(res, err)
	}
	if err := r.track(ru); err != nil {
		return r.refuse(res, err)
	}
	r.log.Info("agent started", "agent", req.AgentID, "run", req.RunID, "role", req.Role, "pid", ru.cmd.Process.Pid)
	res.OK = true
	return res
}

// starts lists req's run as starting in heartbeats until the returned
// func is called (track moves it to the runs before that).
func (r *Runner) starts(req schemas.StartAgent) (done func()) {
	k := startKey{req.AgentID, req.RunID}
	r.mu.Lock()
	r.starting[k] = r.cfg.Now()
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.starting, k)
		r.mu.Unlock()
	}
}

// refuse is the result of a start refused with err (a *schemas.Error: its
// code and message), logged.
func (r *Runner) refuse(res schemas.StartAgentResult, err error) schemas.StartAgentResult {
	e, ok := err.(*schemas.Error)
	if !ok {
		e = schemas.NewError(schemas.CodeInternal, "%s", err.Error())
	}
	res.Code, res.Error = e.Code, e.Message
	r.log.Warn("agent not started", "agent", res.AgentID, "run", res.RunID, keyErr, res.Error)
	return res
}

// admit checks a start request against this container: valid, for its
// town, a role it has a command for, and no env it keeps to itself. It
// returns the role's command.
func (r *Runner) admit(req schemas.StartAgent) ([]string, error) {
	if err := req.Validate(); err != nil {
		return nil, schemas.NewError(schemas.CodeInvalidArgument, "invalid start request: %s", err.Error())
	}
	if req.TownID != r.town {
		return nil, schemas.NewError(schemas.CodePermissionDenied, "this container runs town %s, not %s", r.town, req.TownID)
	}
	argv := r.cfg.Commands[req.Role]
	if len(argv) == 0 {
		return nil, schemas.NewError(schemas.CodeNotFound, "no command is configured for role %s", req.Role)
	}
	for k := range req.Env {
		if strings.HasPrefix(k, EnvPrefix) || strings.Contains(strings.ToUpper(k), "TOKEN") {
			return nil, schemas.NewError(schemas.CodeInvalidArgument, "env %s is not allowed: GASTOWN_ variables and tokens are the container's to set", k)
		}
	}
	return argv, nil
}

// errStopping refuses a start while the container stops.
func errStopping() error {
	return schemas.NewError(schemas.CodeUnavailable, "the container is stopping")
}

// lockAgent makes this the one start of the agent in progress: a second
// dispatch waits, then finds the first running. Close waits for starts in
// progress. release ends it.
func (r *Runner) lockAgent(agentID string) (release func(), err error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errStopping()
	}
	r.wg.Add(1)
	am := r.agentMu[agentID]
	if am == nil {
		am = &sync.Mutex{}
		r.agentMu[agentID] = am
	}
	r.mu.Unlock()
	am.Lock()
	return func() { am.Unlock(); r.wg.Done() }, nil
}

// replace reports whether req's run is already the agent's running one;
// a different running run of the agent is stopped. Called with the
// agent's start lock held.
func (r *Runner) replace(req schemas.StartAgent) (running bool) {
	r.mu.Lock()
	old := r.runs[req.AgentID]
	oldRunning := old != nil && old.status != schemas.RunExited
	r.mu.Unlock()
	if !oldRunning {
		return false
	}
	if old.req.RunID == req.RunID {
		return true
	}
	r.terminate(old, "replaced by run "+req.RunID)
	return false
}

// spawn prepares the run's workspace and log file and starts its process
// (in a process group of its own, with the agent's environment), and the
// goroutine that waits for it.
func (r *Runner) spawn(ctx context.Context, req schemas.StartAgent, argv []string) (*run, error) {
	dir, err := r.workspace(ctx, req)
	if err != nil {
		return nil, schemas.NewError(schemas.CodeInternal, "preparing the workspace: %s", err.Error())
	}
	logPath := filepath.Join(r.cfg.WorkDir, "logs", req.AgentID+"-"+req.RunID+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, schemas.NewError(schemas.CodeInternal, "opening the log file: %s", err.Error())
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logf, logf
	cmd.Env = r.agentEnv(req)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, schemas.NewError(schemas.CodeInternal, "starting %s: %s", argv[0], err.Error())
	}
	ru := &run{req: req, cmd: cmd, logPath: logPath, started: r.cfg.Now(), exited: make(chan struct{}), status: schemas.RunRunning}
	r.wg.Go(func() { r.wait(ru, logf) })
	return ru, nil
}

// track makes ru the agent's current run, unless Close came while it
// started: then it is stopped, since it must not outlive the container.
func (r *Runner) track(ru *run) error {
	r.mu.Lock()
	closed := r.closed
	if !closed {
		r.runs[ru.req.AgentID] = ru
		delete(r.starting, startKey{ru.req.AgentID, ru.req.RunID})
	}
	r.mu.Unlock()
	if closed {
		r.terminate(ru, "container stopping")
		return errStopping()
	}
	return nil
}

// wait records the run's exit.
func (r *Runner) wait(ru *run, logf *os.File) {
	err := ru.cmd.Wait()
	_ = logf.Close()
	code := exitStatus(err)
	r.mu.Lock()
	ru.status, ru.code = schemas.RunExited, code
	r.exits = append(r.exits, schemas.AgentExit{AgentID: ru.req.AgentID, RunID: ru.req.RunID, ExitCode: code, EndedAt: r.cfg.Now().UTC()})
	r.mu.Unlock()
	close(ru.exited)
	r.log.Info("agent exited", "agent", ru.req.AgentID, "run", ru.req.RunID, "exitCode", code)
}

// agentEnv is the agent's environment (PROTOCOL.md, An agent's
// environment): see AgentEnv.
func (r *Runner) agentEnv(req schemas.StartAgent) []string {
	return withTLSEnv(AgentEnv(os.Getenv, r.cfg.PassEnv, req, r.cfg.NatsURL, r.cfg.TokenFile), r.cfg.TLS)
}

// Stop ends the agent's run if runID is its current run.
// Its refusals are not_found (no run of the agent) and conflict (another
// run is the current one: a stale stop never touches a newer run).
func (r *Runner) Stop(ctx context.Context, agentID, runID, reason string) error {
	r.mu.Lock()
	ru, gone := r.runs[agentID], r.reported[agentID]
	r.mu.Unlock()
	if ru == nil && gone == runID && runID != "" {
		return nil // it ended, and a heartbeat said so: stopped already
	}
	if ru == nil {
		return schemas.NewError(schemas.CodeNotFound, "agent %s has no run here", agentID)
	}
	if ru.req.RunID != runID {
		return schemas.NewError(schemas.CodeConflict, "run %s is not the current run of agent %s", runID, agentID)
	}
	code := r.terminate(ru, reason)
	r.log.Info("agent stopped", "agent", agentID, "run", runID, "reason", reason, "exitCode", code)
	return nil
}

// terminate sends SIGTERM to the run's process group, SIGKILL after the
// grace period, and waits for it; it returns the exit code.
func (r *Runner) terminate(ru *run, reason string) int {
	select {
	case <-ru.exited:
		r.mu.Lock()
		defer r.mu.Unlock()
		return ru.code
	default:
	}
	r.log.Info("stopping agent", "agent", ru.req.AgentID, "run", ru.req.RunID, "reason", reason)
	pgid := ru.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	grace := r.cfg.Clock.NewTimer(r.cfg.StopGrace)
	defer grace.Stop()
	select {
	case <-ru.exited:
	case <-grace.C():
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-ru.exited
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return ru.code
}

// Beat lists every agent run (those being started as starting) and drains
// the exits since the last call.
func (r *Runner) Beat() ([]schemas.AgentBeat, []schemas.AgentExit) {
	r.mu.Lock()
	defer r.mu.Unlock()
	agents := make([]schemas.AgentBeat, 0, len(r.runs)+len(r.starting))
	for k, since := range r.starting {
		if ru := r.runs[k.agent]; ru == nil || ru.req.RunID != k.run {
			agents = append(agents, schemas.AgentBeat{AgentID: k.agent, RunID: k.run, Status: schemas.RunStarting, LastActivityAt: since.UTC()})
		}
	}
	for _, ru := range r.runs {
		last := ru.started
		if fi, err := os.Stat(ru.logPath); err == nil && fi.ModTime().After(last) {
			last = fi.ModTime()
		}
		agents = append(agents, schemas.AgentBeat{AgentID: ru.req.AgentID, RunID: ru.req.RunID, Status: ru.status, LastActivityAt: last.UTC()})
		if ru.status == schemas.RunExited {
			delete(r.runs, ru.req.AgentID) // listed once as exited, then gone
			r.reported[ru.req.AgentID] = ru.req.RunID
		}
	}
	exits := r.exits
	r.exits = nil
	return agents, exits
}

// requeue puts exits back, for a heartbeat that was not sent.
func (r *Runner) requeue(exits []schemas.AgentExit) {
	r.mu.Lock()
	r.exits = append(exits, r.exits...)
	r.mu.Unlock()
}

// Close stops every agent and waits for them. Safe to call twice.
func (r *Runner) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	runs := make([]*run, 0, len(r.runs))
	for _, ru := range r.runs {
		runs = append(runs, ru)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, ru := range runs {
		wg.Go(func() { r.terminate(ru, "container stopping") })
	}
	wg.Wait()
	r.wg.Wait()
}
