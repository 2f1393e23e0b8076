package conformance

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// Variables of a dispatch's env that steer the kit's agent (the dispatch's
// env is the one way a container passes the kit anything).
const (
	// EnvReportDir is where the agent writes what it saw.
	EnvReportDir = "CONFORMANCE_DIR"
	// EnvMode is what the agent does: ModeReport (the default), ModeExit,
	// ModeStubborn or ModeCalls.
	EnvMode = "CONFORMANCE_MODE"
	// EnvExitCode is the status ModeExit exits with.
	EnvExitCode = "CONFORMANCE_EXIT"
)

// Modes of the kit's agent.
const (
	// ModeReport reports, then runs until a signal ends it.
	ModeReport = "report"
	// ModeExit reports, then exits with CONFORMANCE_EXIT.
	ModeExit = "exit"
	// ModeStubborn reports, then ignores SIGTERM: only SIGKILL ends it.
	ModeStubborn = "stubborn"
	// ModeCalls reports, then calls the ping tool again and again, reading
	// the token file before each call, counting failures, until a signal
	// ends it.
	ModeCalls = "calls"
	// ModeExitLater reports, then exits with CONFORMANCE_EXIT once the
	// file <CONFORMANCE_DIR>/<runId>.exit exists.
	ModeExitLater = "exit-later"
)

// agentConnName names the kit agent's connections, so the kit can tell
// them from the container's.
const agentConnName = "gastown-conformance-agent"

// Report is what the kit's agent saw when it started: its environment,
// its working directory and what was in it, the token file's claims (never
// the token), and how its tool call went. It is written to
// <CONFORMANCE_DIR>/<runId>.json.
type Report struct {
	PID     int               `json:"pid"`
	Env     map[string]string `json:"env"`
	Cwd     string            `json:"cwd"`
	Entries []string          `json:"entries"`
	Branch  string            `json:"branch,omitempty"`
	// Head is the commit checked out (git rev-parse HEAD) in a git
	// workspace.
	Head string `json:"head,omitempty"`
	// TokenTown is the townId claim of the token in GASTOWN_TOKEN_FILE;
	// TokenErr why it could not be read, or its bytes are not a bare JWT.
	TokenTown string `json:"tokenTown,omitempty"`
	TokenErr  string `json:"tokenErr,omitempty"`
	// PingErr is how the ping tool call with that token failed ("" when
	// it did not); PingSubject is the subject that answered it: the lease
	// holder's, or the queue group's after no responder there.
	PingErr     string `json:"pingErr,omitempty"`
	PingSubject string `json:"pingSubject,omitempty"`
}

// Calls is what an agent in ModeCalls has done so far, rewritten after
// every call to <CONFORMANCE_DIR>/<runId>.calls.json.
type Calls struct {
	Calls    int    `json:"calls"`
	Failures int    `json:"failures"`
	LastErr  string `json:"lastErr,omitempty"`
}

// RunAgent is the kit's agent: `gastown conformance agent`, started by the
// container under test. getenv is its environment.
func RunAgent(ctx context.Context, getenv func(string) string) error {
	dir := getenv(EnvReportDir)
	run := getenv(agentclient.EnvRunID)
	if dir == "" || schemas.ValidateID("runId", run) != nil {
		return errors.WithHint(errors.Newf("%s or %s is not set", EnvReportDir, agentclient.EnvRunID),
			"this is the conformance kit's own agent; `gastown conformance container` runs it through the container under test")
	}
	mode := getenv(EnvMode)
	if mode == ModeStubborn {
		signal.Ignore(syscall.SIGTERM)
	} else {
		// Die of SIGTERM, as a plain process does: the container reports
		// 128 + 15.
		signal.Reset(syscall.SIGTERM)
	}
	appendLine(filepath.Join(dir, run+".starts"), strconv.Itoa(os.Getpid()))
	rep := Report{PID: os.Getpid(), Env: map[string]string{}}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		rep.Env[k] = v
	}
	rep.Cwd, _ = os.Getwd()
	if ents, err := os.ReadDir("."); err == nil {
		for _, e := range ents {
			rep.Entries = append(rep.Entries, e.Name())
		}
	}
	if _, err := os.Stat(".git"); err == nil {
		if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--abbrev-ref", "HEAD").Output(); err == nil {
			rep.Branch = strings.TrimSpace(string(out))
		}
		if out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output(); err == nil {
			rep.Head = strings.TrimSpace(string(out))
		}
	}
	url, file := getenv(agentclient.EnvNatsURL), getenv(agentclient.EnvTokenFile)
	if tok, err := readBareToken(file); err != nil {
		rep.TokenErr = err.Error()
	} else if c, err := schemas.PeekContainerClaims(tok); err != nil {
		rep.TokenErr = err.Error()
	} else {
		rep.TokenTown = c.TownID
	}
	subject, err := ping(ctx, url, file)
	if rep.PingSubject = subject; err != nil {
		rep.PingErr = err.Error()
	}
	if err := writeJSON(filepath.Join(dir, run+".json"), rep); err != nil {
		return err
	}
	switch mode {
	case ModeExit:
		code, _ := strconv.Atoi(getenv(EnvExitCode))
		os.Exit(code)
	case ModeExitLater:
		code, _ := strconv.Atoi(getenv(EnvExitCode))
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if _, err := os.Stat(filepath.Join(dir, run+".exit")); err == nil {
				os.Exit(code)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	case ModeCalls:
		var c Calls
		for ctx.Err() == nil {
			c.Calls++
			if _, err := ping(ctx, url, file); err != nil && ctx.Err() == nil {
				c.Failures++
				c.LastErr = err.Error()
			}
			if err := writeJSON(filepath.Join(dir, run+".calls.json"), c); err != nil {
				return err
			}
		}
		return nil
	}
	<-ctx.Done() // a signal, or (stubborn) only SIGKILL
	return nil
}

// readBareToken reads the token file and checks it holds the bare JWT:
// no whitespace around it (PROTOCOL.md, Token file).
func readBareToken(path string) (string, error) {
	tok, err := agentclient.ReadTokenFile(path)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err == nil && string(b) != tok {
		return tok, errors.New("the token file holds whitespace around the JWT; it must hold the bare JWT")
	}
	return tok, nil
}

// ping calls the ping tool as the container itself (no agent identity)
// with the token the token file holds now, on a connection of its own
// opened with that token, as `gastown tool` does: on the town's lease
// holder's subject, and on the queue group's when no one listens there
// (PROTOCOL.md, RPC). It returns the subject that answered.
func ping(ctx context.Context, url, file string) (string, error) {
	tok, err := agentclient.ReadTokenFile(file)
	if err != nil {
		return "", err
	}
	claims, err := schemas.PeekContainerClaims(tok)
	if err != nil {
		return "", errors.Wrap(err, "token file")
	}
	town, err := schemas.ForTown(claims.TownID)
	if err != nil {
		return "", err
	}
	nc, err := nats.Connect(url, nats.Name(agentConnName), nats.Token(tok), nats.CustomInboxPrefix(town.Inbox()),
		nats.Timeout(5*time.Second))
	if err != nil {
		return "", errors.Wrap(err, "connecting with the token file's token")
	}
	defer nc.Close()
	holder, err := town.HolderRPC(schemas.ToolPing)
	if err != nil {
		return "", err
	}
	queue, err := town.RPC(schemas.ToolPing)
	if err != nil {
		return "", err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, subject := range []string{holder, queue} {
		m := nats.NewMsg(subject)
		m.Data = []byte("{}")
		m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+tok)
		if err = bus.Call(cctx, nc, m, nil); !errors.Is(err, nats.ErrNoResponders) {
			return subject, err
		}
	}
	return queue, err
}

// writeJSON replaces path with v, atomically.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return errors.Wrap(err, "encoding the report")
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return errors.Wrapf(err, "writing %s", tmp)
	}
	return errors.Wrapf(os.Rename(tmp, path), "writing %s", path)
}

// appendLine appends one line to path, best effort.
func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	_, _ = f.WriteString(line + "\n")
	_ = f.Close()
}
