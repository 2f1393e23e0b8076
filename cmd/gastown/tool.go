package main

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

const toolDesc = `
Calls a coordinator tool as the agent this process is, and prints the result
as JSON. What an agent runs inside its container: the token is read from the
container's token file at each call (never from the environment), the
identity from GASTOWN_AGENT_ID and GASTOWN_RIG_ID, the bus from
GASTOWN_NATS_URL (and, for a tls:// bus, the CA from GASTOWN_NATS_CA and a
client certificate from GASTOWN_NATS_CERT and GASTOWN_NATS_KEY).

'gastown tool prime --format markdown' prints the role's briefing (what
'gastown mcp' gives a model as prime) instead of prime's JSON.

The body is --json '{...}', or key=value arguments (values that parse as
JSON are taken as JSON, others as strings), e.g.
  gastown tool bead.get beadId=b-1
  gastown tool done branch=polecat/toast/b-1 summary="fixed it"

Methods: ping, prime, bead.get, bead.close, done, mail.send, mail.check,
escalate, checkpoint; mayor: rigs.list, beads.list, agents.list, sling,
bead.update, convoy.create, convoy.status; refinery: review.complete;
triage: triage.resolve.

Exit status: 0 ok, 2 usage, 10 unauthenticated, 11 permission_denied,
12 invalid_argument, 13 not_found, 14 conflict, 15 unavailable, 16 internal,
17 resource_exhausted (the town is over a rate or a cap), 1 anything else.
With the bus unreachable the call fails at once with 15, and is not made:
retry it later.`

// toolExitCodes gives each RPC error code its own exit status.
var toolExitCodes = map[schemas.Code]int{
	schemas.CodeUnauthenticated: 10, schemas.CodePermissionDenied: 11, schemas.CodeInvalidArgument: 12,
	schemas.CodeNotFound: 13, schemas.CodeConflict: 14, schemas.CodeUnavailable: 15, schemas.CodeInternal: 16,
	schemas.CodeResourceExhausted: 17,
}

func runTool(ctx context.Context, args []string, env Env) error {
	fs := newFlags("tool", "tool [--timeout D] <method> [--json BODY | key=value ...]", toolDesc, env)
	jsonBody := fs.String("json", "", "the request body as a JSON object")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the answer")
	format := fs.String("format", "json", "output: json, or markdown (prime only: the role's briefing)")
	// Flags may come before the method and after it, between key=value
	// arguments: every argument starting with '-' is a flag (with its
	// value as the next argument unless it has '='), the first other one
	// the method, the rest key=value.
	var method string
	var flagArgs, kv []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case strings.HasPrefix(a, "-"):
			flagArgs = append(flagArgs, a)
			if !strings.Contains(a, "=") && i+1 < len(args) && a != "-h" && a != "--help" && a != "-help" {
				flagArgs = append(flagArgs, args[i+1])
				i++
			}
		case method == "":
			method = a
		default:
			kv = append(kv, a)
		}
	}
	if done, err := parse(fs, flagArgs, env); done {
		return err
	}
	if method == "" {
		return errors.Mark(errors.WithHint(errors.New("tool needs a method"),
			"e.g. gastown tool ping; see gastown tool --help"), ErrUsage)
	}
	if err := checkToolFormat(*format, method); err != nil {
		return errors.Mark(err, ErrUsage)
	}
	body, err := toolBody(*jsonBody, kv)
	if err != nil {
		return errors.Mark(err, ErrUsage)
	}
	getenv := env.Getenv
	tokenFile := getenv(agentclient.EnvTokenFile)
	if tokenFile == "" {
		return errors.WithHint(errors.Mark(errors.Newf("%s is not set", agentclient.EnvTokenFile), ErrUsage),
			"gastown tool runs inside a container, whose agents get GASTOWN_TOKEN_FILE")
	}
	url := getenv(agentclient.EnvNatsURL)
	if url == "" {
		url = agentclient.DefaultURL
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	tls := agentclient.TLSFromEnv(getenv)
	if err := tls.Validate(); err != nil {
		return errors.Mark(err, ErrUsage)
	}
	// One call: with the bus unreachable, fail at once (exit status 15)
	// rather than wait out the timeout; the caller retries.
	sess, err := agentclient.OpenFileSession(ctx, url, tokenFile, *timeout, tls.Option(), nats.RetryOnFailedConnect(false))
	if errors.Is(err, nats.ErrNoServers) {
		return errors.WithHint(schemas.NewError(schemas.CodeUnavailable, "the bus at %s is not reachable", url),
			"is the coordinator running, and GASTOWN_NATS_URL its address? the call was not made: retry once it is up (exit status 15 means exactly this)")
	}
	if err != nil {
		return err
	}
	defer sess.Close()
	client := agentclient.NewClient(sess, getenv(agentclient.EnvAgentID), getenv(agentclient.EnvRigID))
	var out json.RawMessage
	if err := client.Call(ctx, method, body, &out); err != nil {
		return err
	}
	if *format == formatMarkdown {
		return printBriefing(env, sess.Town().ID(), out)
	}
	return printJSON(env, out)
}

// toolBody builds the request body from --json or key=value arguments.
func toolBody(raw string, kv []string) (json.RawMessage, error) {
	if raw != "" && len(kv) > 0 {
		return nil, errors.New("give the body as --json or as key=value arguments, not both")
	}
	if raw != "" {
		var obj map[string]any
		if err := json.Unmarshal([]byte(raw), &obj); err != nil {
			return nil, errors.New("--json must be a JSON object")
		}
		return json.RawMessage(raw), nil
	}
	obj := map[string]any{}
	for _, p := range kv {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, errors.Newf("argument %q is not key=value", p)
		}
		var j any
		if err := json.Unmarshal([]byte(v), &j); err == nil {
			obj[k] = j
		} else {
			obj[k] = v
		}
	}
	b, err := json.Marshal(obj)
	return b, err
}
