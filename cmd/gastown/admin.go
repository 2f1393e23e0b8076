package main

import (
	"context"
	"encoding/json"
	"flag"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// adminFlags are the flags every admin verb has.
type adminFlags struct {
	server  *string
	timeout *time.Duration
	tls     tlsFlags
}

func addAdminFlags(fs interface {
	String(name, value, usage string) *string
	Duration(name string, value time.Duration, usage string) *time.Duration
}) adminFlags {
	return adminFlags{
		server:  fs.String("server", "nats://127.0.0.1:4222", "NATS URL of the coordinator's bus"),
		timeout: fs.Duration("timeout", 30*time.Second, "how long to wait for the coordinator"),
		tls:     addTLSFlags(fs),
	}
}

// runAdmin connects as admin, calls method with body, and prints the result.
func runAdmin(ctx context.Context, env Env, af adminFlags, method string, body interface{ Validate() error }) error {
	var out json.RawMessage
	if err := adminDo(ctx, env, af, method, body, &out); err != nil {
		return err
	}
	return printJSON(env, out)
}

// adminDo connects as admin, calls method with body and decodes the
// result into out.
func adminDo(ctx context.Context, env Env, af adminFlags, method string, body interface{ Validate() error }, out any) error {
	if err := body.Validate(); err != nil {
		return errors.Mark(asFlagError(err, fieldFlags(body)), ErrUsage)
	}
	tls, err := af.tls.resolve(env)
	if err != nil {
		return err
	}
	nc, err := adminConnect(*af.server, env, tls.Option())
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, *af.timeout)
	defer cancel()
	return adminCall(ctx, nc, method, body, out)
}

const adminNote = "Connects as the 'admin' user with GASTOWN_ADMIN_PASSWORD and prints the result as JSON."

func runTown(ctx context.Context, args []string, env Env) error {
	return runSubs(ctx, "town", args, env, []sub{
		{"create", "create a town", runTownCreate},
		{"list", "list every town", runTownList},
		{"show", "show a town: owner, container, counts, rigs", runTownShow},
		{"delete", "delete a town and every record of it, revoking its tokens", runTownDelete},
	})
}

func runTownCreate(ctx context.Context, args []string, env Env) error {
	fs := newFlags("town create", "town create --town T [--owner U]", "Creates a town owned by a user. "+adminNote, env)
	town := fs.String("town", "", "town id (required)")
	owner := fs.String("owner", "", "owner's user id (default: the town id)")
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	return runAdmin(ctx, env, af, schemas.AdminTownCreate, schemas.TownCreate{TownID: *town, UserID: *owner})
}

func runRig(ctx context.Context, args []string, env Env) error {
	return runSubs(ctx, "rig", args, env, []sub{
		{"add", "add a git repository to a town", runRigAdd},
		{"list", "list a town's rigs", runRigList},
		{"remove", "remove a rig and its agents", runRigRemove},
	})
}

func runRigAdd(ctx context.Context, args []string, env Env) error {
	fs := newFlags("rig add", "rig add --town T --rig R --git URL [--branch main]", "Adds a git repository to a town as a rig. "+adminNote, env)
	town := fs.String("town", "", "town id (required)")
	rig := fs.String("rig", "", "rig id (required)")
	git := fs.String("git", "", "git URL of the repository, any URL git clones, including a local path (required)")
	branch := fs.String("branch", "main", "the repository's default branch")
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	return runAdmin(ctx, env, af, schemas.AdminRigAdd, schemas.RigAdd{TownID: *town, RigID: *rig, GitURL: *git, DefaultBranch: *branch})
}

func runBead(ctx context.Context, args []string, env Env) error {
	return runSubs(ctx, "bead", args, env, []sub{
		{"create", "create a bead: a unit of work", runBeadCreate},
		{"list", "list a town's beads", runBeadList},
		{"show", "show one bead", runBeadShow},
	})
}

func runBeadCreate(ctx context.Context, args []string, env Env) error {
	fs := newFlags("bead create", "bead create --town T --title TEXT [--rig R] [--body TEXT] [--id B] [--type issue]", "Creates a bead: a unit of work. "+adminNote, env)
	town := fs.String("town", "", "town id (required)")
	title := fs.String("title", "", "what is to be done (required)")
	rig := fs.String("rig", "", "the rig it is done in")
	body := fs.String("body", "", "details")
	id := fs.String("id", "", "bead id (default: made up)")
	typ := fs.String("type", "issue", "bead type: issue, message, merge_request, convoy, escalation")
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	return runAdmin(ctx, env, af, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: *town, BeadID: *id, Type: *typ, RigID: *rig, Title: *title, Body: *body})
}

func runConvoy(ctx context.Context, args []string, env Env) error {
	return runSubs(ctx, "convoy", args, env, []sub{
		{"create", "create a convoy tracking beads", runConvoyCreate},
		{"list", "list a town's convoys with their progress", runConvoyList},
		{"show", "show one convoy's progress", runConvoyShow},
	})
}

func runConvoyCreate(ctx context.Context, args []string, env Env) error {
	fs := newFlags("convoy create", "convoy create --town T --title TEXT --beads B1,B2,...",
		"Creates a convoy tracking beads; it lands when all of them are closed. "+adminNote, env)
	town := fs.String("town", "", "town id (required)")
	title := fs.String("title", "", "what the convoy delivers (required)")
	beads := fs.String("beads", "", "comma-separated bead ids (required)")
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	var ids []string
	for _, b := range strings.Split(*beads, ",") {
		if b = strings.TrimSpace(b); b != "" {
			ids = append(ids, b)
		}
	}
	return runAdmin(ctx, env, af, schemas.AdminConvoy, schemas.AdminConvoyCreate{TownID: *town, ConvoyCreate: schemas.ConvoyCreate{Title: *title, Beads: ids}})
}

func runSling(ctx context.Context, args []string, env Env) error {
	fs := newFlags("sling", "sling --town T --bead B [--rig R] [--agent A]",
		"Hooks a bead to a polecat (an idle one, or a new one) and dispatches it. "+adminNote, env)
	town := fs.String("town", "", "town id (required)")
	bead := fs.String("bead", "", "bead id (required)")
	rig := fs.String("rig", "", "rig (default: the bead's)")
	agent := fs.String("agent", "", "polecat to use (default: an idle one, or a new one)")
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	var res schemas.SlingResult
	if err := adminDo(ctx, env, af, schemas.AdminSling, schemas.Sling{TownID: *town, BeadID: *bead, RigID: *rig, AgentID: *agent}, &res); err != nil {
		return err
	}
	if err := printJSON(env, res); err != nil {
		return err
	}
	return slingNotDispatched(res)
}

// subcommand checks that args start with the verb's one subcommand; bare
// --help prints the verb's usage.
func subcommand(args []string, sub string, fs *flag.FlagSet, env Env) (done bool, err error) {
	switch {
	case len(args) > 0 && args[0] == sub:
		return false, nil
	case len(args) > 0 && (args[0] == "-h" || args[0] == "--help"):
		helpTo(env, fs)
		return true, nil
	}
	return true, errors.Mark(errors.Newf("%s needs a subcommand: %s", fs.Name(), sub), ErrUsage)
}
