package main

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/schemas"
)

const toolDesc = `
Calls a coordinator tool as the agent this process is, and prints the result
as JSON. What an agent runs inside its container: the token is read from the
container's token file at each call (never from the environment), the
identity from GASTOWN_AGENT_ID and GASTOWN_RIG_ID, the bus from
GASTOWN_NATS_URL (and, for a tls:// bus, the CA from GASTOWN_NATS_CA and a
client certificate from GASTOWN_NATS_CERT and GASTOWN_NATS_KEY).

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
17 resource_exhausted (the town is over a rate or a cap), 1 anything else.`

// toolExitCodes gives each RPC error code its own exit status.
var toolExitCodes = map[schemas.Code]int{
	schemas.CodeUnauthenticated: 10, schemas.CodePermissionDenied: 11, schemas.CodeInvalidArgument: 12,
	schemas.CodeNotFound: 13, schemas.CodeConflict: 14, schemas.CodeUnavailable: 15, schemas.CodeInternal: 16,
	schemas.CodeResourceExhausted: 17,
}

func runTool(ctx context.Context, args []string, env Env) error {
	fs := newFlags("tool", "tool <method> [--json BODY | key=value ...]", toolDesc, env)
	jsonBody := fs.String("json", "", "the request body as a JSON object")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the answer")
	if len(args) == 0 {
		fs.Usage()
		return errors.Mark(errors.New("tool needs a method"), ErrUsage)
	}
	if args[0] == "-h" || args[0] == "--help" {
		_, err := parse(fs, args, env)
		return err
	}
	method, rest := args[0], args[1:]
	var flagArgs, kv []string
	for i := 0; i < len(rest); i++ {
		switch a := rest[i]; {
		case strings.HasPrefix(a, "-"):
			flagArgs = append(flagArgs, a)
			if !strings.Contains(a, "=") && i+1 < len(rest) && a != "-h" && a != "--help" {
				flagArgs = append(flagArgs, rest[i+1])
				i++
			}
		default:
			kv = append(kv, a)
		}
	}
	if done, err := parse(fs, flagArgs, env); done {
		return err
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
	sess, err := agentclient.OpenFileSession(ctx, url, tokenFile, *timeout, tls.Option())
	if err != nil {
		return err
	}
	defer sess.Close()
	client := agentclient.NewClient(sess, getenv(agentclient.EnvAgentID), getenv(agentclient.EnvRigID))
	var out json.RawMessage
	if err := client.Call(ctx, method, body, &out); err != nil {
		return err
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
