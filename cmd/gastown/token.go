package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

const tokenUsage = `token <mint|rotate|revoke> [flags]`

const tokenDesc = `
mint    prints a container token for a town on stdout, signed with
        GASTOWN_JWT_SECRET (offline; how an operator bootstraps a container).
        With --agent and --rig it mints a legacy per-agent token instead.
rotate  asks the coordinator to refresh the town's token now (admin).
revoke  makes every token of the town issued up to now stop working and
        closes every connection that used one, before it answers (admin).
        Nothing is pushed after it: restart the town's container with a
        freshly minted bootstrap token (gastown token mint --town T).

rotate and revoke connect as the 'admin' user with GASTOWN_ADMIN_PASSWORD.`

// tokenAdminDesc is the help of each admin verb of token: its own only.
var tokenAdminDesc = map[string]string{
	"rotate": `
Asks the coordinator to refresh the town's container token now, and prints
whether a connected container acknowledged it (idle: no container is
connected, nothing was sent). Connects as the 'admin' user with
GASTOWN_ADMIN_PASSWORD.`,
	"revoke": `
Makes every token of the town issued up to now stop working and closes every
connection that used one, before it answers. Nothing is pushed after it:
restart the town's container with a freshly minted bootstrap token
(gastown token mint --town T). Connects as the 'admin' user with
GASTOWN_ADMIN_PASSWORD.`,
}

func runToken(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 {
		newFlags("token", tokenUsage, tokenDesc, env).Usage()
		return errors.Mark(errors.New("token needs a subcommand: mint, rotate or revoke"), ErrUsage)
	}
	switch args[0] {
	case "mint":
		return runTokenMint(args[1:], env)
	case "rotate", "revoke":
		return runTokenAdmin(ctx, args[0], args[1:], env)
	case "-h", "--help", "help":
		fs := newFlags("token", tokenUsage, tokenDesc, env)
		fs.SetOutput(env.Stdout)
		fs.Usage()
		return nil
	}
	return errors.Mark(errors.Newf("unknown token subcommand %q: use mint, rotate or revoke", args[0]), ErrUsage)
}

func runTokenMint(args []string, env Env) error {
	fs := newFlags("token mint", "token mint --town T [--user U] [--ttl 8h] [--agent A --rig R]",
		"Prints a token signed with GASTOWN_JWT_SECRET on stdout. Never log or commit it.", env)
	town := fs.String("town", "", "town id (required)")
	user := fs.String("user", "", "town owner's user id (default: the town id)")
	ttl := fs.Duration("ttl", coordinator.DefaultTokenTTL, "token lifetime")
	agent := fs.String("agent", "", "mint a legacy per-agent token for this agent id (needs --rig)")
	rig := fs.String("rig", "", "the legacy agent's rig id")
	if done, err := parse(fs, args, env); done {
		return err
	}
	if err := schemas.ValidateID("--town", *town); err != nil {
		return errors.Mark(err, ErrUsage)
	}
	if *ttl <= 0 {
		return errors.Mark(errors.New("--ttl must be positive"), ErrUsage)
	}
	if (*agent == "") != (*rig == "") {
		return errors.Mark(errors.New("--agent and --rig go together"), ErrUsage)
	}
	ring, err := token.KeyRingFromEnv(env.Getenv)
	if err != nil {
		return err
	}
	issuer := token.NewIssuer(ring, time.Now)
	var tok string
	if *agent != "" {
		for _, p := range [][2]string{{"--agent", *agent}, {"--rig", *rig}} {
			if err := schemas.ValidateID(p[0], p[1]); err != nil {
				return errors.Mark(err, ErrUsage)
			}
		}
		tok, _, err = issuer.MintAgent(*town, *rig, *agent, *user, *ttl)
	} else {
		tok, _, err = issuer.MintContainer(*town, *user, *ttl)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(env.Stdout, tok)
	return err
}

func runTokenAdmin(ctx context.Context, sub string, args []string, env Env) error {
	fs := newFlags("token "+sub, "token "+sub+" --town T [--server URL]", tokenAdminDesc[sub], env)
	town := fs.String("town", "", "town id (required)")
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	if sub == "revoke" {
		if err := runAdmin(ctx, env, af, schemas.AdminTokenRevoke, schemas.TownRequest{TownID: *town}); err != nil {
			return err
		}
		_, err := fmt.Fprintf(env.Stderr, "revoked: every token of town %s issued until now is refused, and the connections that used one are closed.\n"+
			"next: restart the town's container with a fresh bootstrap token: gastown token mint --town %s\n", *town, *town)
		return err
	}
	return runAdmin(ctx, env, af, schemas.AdminTokenRotate, schemas.TownRequest{TownID: *town})
}

// adminConnect connects as the admin identity; opts are added (TLS).
func adminConnect(server string, env Env, opts ...nats.Option) (*nats.Conn, error) {
	pw := env.Getenv("GASTOWN_ADMIN_PASSWORD")
	if pw == "" {
		return nil, errors.WithHint(errors.New("GASTOWN_ADMIN_PASSWORD is not set"),
			"set it to the admin password the coordinator was started with")
	}
	nc, err := nats.Connect(server, append([]nats.Option{nats.Name("gastown-admin"), nats.UserInfo(bus.AdminUser, pw),
		nats.CustomInboxPrefix(schemas.AdminInbox), nats.MaxReconnects(0)}, opts...)...)
	if errors.Is(err, nats.ErrAuthorization) {
		// The server refuses a wrong password and a disabled admin alike:
		// the client cannot tell them apart.
		return nil, errors.WithHint(errors.Wrapf(err, "connecting to %s as admin", server),
			"the coordinator refused the admin password: it is wrong, or the coordinator was started without GASTOWN_ADMIN_PASSWORD (admin disabled)")
	}
	if err != nil {
		return nil, errors.WithHint(errors.Wrapf(err, "connecting to %s as admin", server),
			"is the coordinator running there (give its address with --server, or GASTOWN_SERVER), and (for a tls:// bus) is --tls-ca its CA?")
	}
	return nc, nil
}

// adminCall calls gastown.admin.<method> with body and decodes the result.
func adminCall(ctx context.Context, nc *nats.Conn, method string, body, out any) error {
	subject, err := schemas.Admin(method)
	if err != nil {
		return err
	}
	b, err := json.Marshal(body)
	if err != nil {
		return errors.Wrap(err, "encoding request")
	}
	err = bus.Call(ctx, nc, &nats.Msg{Subject: subject, Data: b}, out)
	if errors.Is(err, schemas.ErrUnavailable) && errors.Is(err, nats.ErrNoResponders) {
		return errors.WithHint(err, "no coordinator answered: is it running on this bus?")
	}
	if errors.Is(err, schemas.ErrNotFound) {
		return errors.WithHint(err, "see what exists: gastown town list, or gastown rig|bead|convoy list --town T")
	}
	return err
}

func printJSON(env Env, v any) error { return printJSONTo(env.Stdout, v) }

func printJSONTo(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return errors.Wrap(err, "encoding output")
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}
