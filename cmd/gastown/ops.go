package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/cluster"
	"github.com/gastown/gastown/schemas"
)

const opsUsage = `ops context [--name gastown-ops] [--server URL] [--nkey D/ops.nk] [--tls-ca F [--tls-cert F --tls-key F]] [--dir D]`

const opsDesc = `
context writes a nats CLI context for the read-only 'ops' identity, with
the password from GASTOWN_OPS_PASSWORD and the ops inbox prefix
(` + schemas.OpsInbox + `), the only inbox ops may hear. Then:

  nats --context gastown-ops sub 'gastown.town.*.events'
  nats --context gastown-ops kv ls gastown_agents
  nats --context gastown-ops stream view KV_gastown_beads

As ops you watch every town's heartbeats and events and read the state
buckets (read-only mirrors kept by the embedded server); you cannot write,
call a handler, or see a token. The file is written with mode 0600: it
holds the password.

On a cluster made by 'gastown cluster init', the coordinators check the ops
password (through the callout, throttled), so it works only while one runs.
--nkey D/ops.nk writes a context for the break-glass ops key instead (no
password; the context names the seed file by its absolute path), which the
nodes check themselves, with exactly ops's permissions:

  gastown ops context --nkey D/ops.nk --server nats://127.0.0.1:4222,nats://127.0.0.1:4223

For a bus that speaks TLS, give --server tls://host:port and the CA with
--tls-ca (or GASTOWN_NATS_CA), and a client certificate with --tls-cert and
--tls-key when the bus requires one: the context names them (absolute
paths) as the nats CLI's ca, cert and key.`

// contextName is a name the nats CLI accepts for a context.
var contextName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func runOps(_ context.Context, args []string, env Env) error {
	if done, err := subcommand(args, "context", newFlags("ops", opsUsage, opsDesc, env), env); done {
		return err
	}
	fs := newFlags("ops context", opsUsage, opsDesc, env)
	name := fs.String("name", "gastown-ops", "name of the nats CLI context")
	server := fs.String("server", "nats://127.0.0.1:4222", "NATS URL of the coordinator's bus")
	nkey := fs.String("nkey", "", "the break-glass ops key's seed file of a cluster (D/ops.nk), instead of the password")
	tlsf := addTLSFlags(fs)
	dir := fs.String("dir", "", "directory of the nats CLI's contexts (default: $XDG_CONFIG_HOME/nats/context, or ~/.config/nats/context)")
	if done, err := parse(fs, args[1:], env); done {
		return err
	}
	if !contextName.MatchString(*name) {
		return errors.Mark(errors.Newf("context name %q: use 1 to 64 letters, digits, - or _", *name), ErrUsage)
	}
	creds, err := opsContextCreds(*nkey, env)
	if err != nil {
		return err
	}
	tls, err := tlsf.resolve(env)
	if err != nil {
		return err
	}
	// The nats CLI runs from anywhere: the context names absolute paths.
	if tls, err = tls.Abs(); err != nil {
		return err
	}
	if *dir == "" {
		base := env.Getenv("XDG_CONFIG_HOME")
		if base == "" {
			home := env.Getenv("HOME")
			if home == "" {
				return errors.WithHint(errors.New("neither XDG_CONFIG_HOME nor HOME is set"), "give the directory with --dir")
			}
			base = filepath.Join(home, ".config")
		}
		*dir = filepath.Join(base, "nats", "context")
	}
	nctx := map[string]string{
		"description":  "Gastown operator (read-only)",
		"url":          *server,
		"inbox_prefix": schemas.OpsInbox,
	}
	maps.Copy(nctx, creds)
	for k, v := range map[string]string{"ca": tls.CAFile, "cert": tls.CertFile, "key": tls.KeyFile} {
		if v != "" {
			nctx[k] = v
		}
	}
	b, err := json.MarshalIndent(nctx, "", "  ")
	if err != nil {
		return errors.Wrap(err, "encoding the context")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return errors.WithHint(errors.Wrapf(err, "creating %s", *dir), "choose another directory with --dir")
	}
	path := filepath.Join(*dir, *name+".json")
	if err := agentclient.WriteSecretFile(path, b); err != nil {
		return err
	}
	_, err = fmt.Fprintf(env.Stdout, "wrote %s\nuse it with: nats --context %s kv ls\n", path, *name)
	return err
}

// opsContextCreds are the context's credentials: the break-glass key's
// seed file when nkey is given (checked to hold a user seed only its
// owner may read), else ops's password from GASTOWN_OPS_PASSWORD.
func opsContextCreds(nkey string, env Env) (map[string]string, error) {
	if nkey == "" {
		pw := env.Getenv("GASTOWN_OPS_PASSWORD")
		if pw == "" {
			return nil, errors.WithHint(errors.New("GASTOWN_OPS_PASSWORD is not set"),
				"set it to the ops password the coordinator was started with, or on a cluster give the break-glass key with --nkey D/"+cluster.OpsKeyFile)
		}
		return map[string]string{"user": bus.OpsUser, "password": pw}, nil
	}
	abs, err := filepath.Abs(nkey)
	if err != nil {
		return nil, errors.Wrapf(err, "resolving %s", nkey)
	}
	if _, err := cluster.LoadOpsKey(abs); err != nil {
		return nil, err
	}
	return map[string]string{"nkey": abs}, nil
}
