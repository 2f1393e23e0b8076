package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
)

// slingNotDispatched is the error of a sling whose bead was hooked but not
// dispatched: the command did not do all it says, so it exits non-zero,
// and says what happens to the bead now.
func slingNotDispatched(res schemas.SlingResult) error {
	if res.Dispatched {
		return nil
	}
	err := schemas.NewError(schemas.CodeUnavailable, "bead %s is hooked to polecat %s but was not dispatched: %s",
		res.BeadID, res.AgentID, strings.TrimPrefix(res.Error, string(schemas.CodeUnavailable)+": "))
	if strings.Contains(res.Error, "no container of the town is connected") {
		return errors.WithHint(err, "the bead stays hooked: it is dispatched as soon as the town's container connects (gastown container, see README)")
	}
	return errors.WithHint(err, "the bead stays hooked: the coordinator tries again after the dispatch cooldown; gastown status --town "+res.TownID+" shows it")
}

// newTable writes aligned columns to w.
func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// row writes one tab-separated row; empty cells show as "-".
func row(tw io.Writer, cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

// when formats a time for a table: UTC, to the second; "-" when unset.
func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

// beadCounts formats a count per bead status in the statuses' order.
func beadCounts(counts map[string]int) string {
	var parts []string
	for _, s := range schemas.BeadStatuses {
		if n := counts[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, n))
		}
	}
	return strings.Join(parts, ", ")
}

func connectedWord(ok bool) string {
	if ok {
		return "connected"
	}
	return "not connected"
}

// tableOrJSON adds --json to a listing verb.
func jsonFlag(fs interface {
	Bool(name string, value bool, usage string) *bool
}) *bool {
	return fs.Bool("json", false, "print JSON (for scripts) instead of a table")
}

const listNote = "Connects as the 'admin' user with GASTOWN_ADMIN_PASSWORD and prints a table (--json for JSON)."

func runTownList(ctx context.Context, args []string, env Env) error {
	fs := newFlags("town list", "town list [--json]", "Lists every town: owner, container, rigs, agents, beads by status. "+listNote, env)
	asJSON := jsonFlag(fs)
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	var towns []schemas.TownSummary
	if err := adminDo(ctx, env, af, schemas.AdminTownList, schemas.TownList{}, &towns); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, towns)
	}
	return writeTowns(env.Stdout, towns)
}

func writeTowns(w io.Writer, towns []schemas.TownSummary) error {
	if len(towns) == 0 {
		_, err := fmt.Fprintln(w, "no towns yet: gastown town create --town T")
		return err
	}
	tw := newTable(w)
	row(tw, "TOWN", "OWNER", "CONTAINER", "RIGS", "AGENTS", "WORKING", "BEADS", "CREATED")
	for _, t := range towns {
		row(tw, t.TownID, t.UserID, connectedWord(t.ContainerConnected), fmt.Sprint(t.Rigs), fmt.Sprint(t.Agents),
			fmt.Sprint(t.WorkingAgents), beadCounts(t.Beads), when(t.CreatedAt))
	}
	return tw.Flush()
}

func runTownShow(ctx context.Context, args []string, env Env) error {
	fs := newFlags("town show", "town show --town T", "Shows a town: owner, container, counts and rigs. "+adminNote, env)
	town := fs.String("town", "", "town id (required)")
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	return runAdmin(ctx, env, af, schemas.AdminTownShow, schemas.TownRequest{TownID: *town})
}

const townDeleteDesc = `Deletes a town and every record of it: its rigs, agents, beads, convoys,
last heartbeat, lease and token schedule. Its tokens are revoked first (every
connection using one is closed); the revocation itself is kept, so the old
tokens stay refused even if a town of that name is created again.

Refused while the town's container is connected (a heartbeat within three
intervals) or an agent is working, unless --force: then the runs are asked
to stop and the container is shut out. ` + adminNote

func runTownDelete(ctx context.Context, args []string, env Env) error {
	fs := newFlags("town delete", "town delete --town T [--force]", townDeleteDesc, env)
	town := fs.String("town", "", "town id (required)")
	force := fs.Bool("force", false, "delete even while the container is connected or agents are working")
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	return runAdmin(ctx, env, af, schemas.AdminTownDelete, schemas.TownDelete{TownID: *town, Force: *force})
}

func runRigList(ctx context.Context, args []string, env Env) error {
	fs := newFlags("rig list", "rig list --town T [--json]", "Lists a town's rigs. "+listNote, env)
	town := fs.String("town", "", "town id (required)")
	asJSON := jsonFlag(fs)
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	var rigs []coordinator.Rig
	if err := adminDo(ctx, env, af, schemas.AdminRigList, schemas.TownRequest{TownID: *town}, &rigs); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, rigs)
	}
	tw := newTable(env.Stdout)
	row(tw, "RIG", "GIT", "BRANCH", "CREATED")
	for _, r := range rigs {
		row(tw, r.RigID, r.GitURL, r.DefaultBranch, when(r.CreatedAt))
	}
	return tw.Flush()
}

func runRigRemove(ctx context.Context, args []string, env Env) error {
	fs := newFlags("rig remove", "rig remove --town T --rig R [--force]",
		"Removes a rig and its agents. Refused while an agent of the rig is working or a bead of the rig is not closed or failed, "+
			"unless --force: then the runs are asked to stop and those beads fail. "+adminNote, env)
	town := fs.String("town", "", "town id (required)")
	rig := fs.String("rig", "", "rig id (required)")
	force := fs.Bool("force", false, "remove even with working agents or unfinished beads (they fail)")
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	return runAdmin(ctx, env, af, schemas.AdminRigRemove, schemas.RigRemove{TownID: *town, RigID: *rig, Force: *force})
}

func runBeadList(ctx context.Context, args []string, env Env) error {
	fs := newFlags("bead list", "bead list --town T [--status S] [--type T] [--rig R] [--json]", "Lists a town's beads, oldest first. "+listNote, env)
	town := fs.String("town", "", "town id (required)")
	status := fs.String("status", "", "only beads of this status: "+strings.Join(schemas.BeadStatuses, ", "))
	typ := fs.String("type", "", "only beads of this type: "+strings.Join(schemas.BeadTypes, ", "))
	rig := fs.String("rig", "", "only beads of this rig")
	asJSON := jsonFlag(fs)
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	var beads []coordinator.Bead
	if err := adminDo(ctx, env, af, schemas.AdminBeadList, schemas.BeadList{TownID: *town, Status: *status, Type: *typ, RigID: *rig}, &beads); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, beads)
	}
	return writeBeads(env.Stdout, beads)
}

func writeBeads(w io.Writer, beads []coordinator.Bead) error {
	tw := newTable(w)
	row(tw, "BEAD", "TYPE", "STATUS", "RIG", "ASSIGNEE", "CONVOY", "TITLE")
	for _, b := range beads {
		row(tw, b.BeadID, b.Type, b.Status.String(), b.RigID, b.Assignee, b.ConvoyID, b.Title)
	}
	return tw.Flush()
}

func runBeadShow(ctx context.Context, args []string, env Env) error {
	fs := newFlags("bead show", "bead show --town T --bead B", "Shows one bead. "+adminNote, env)
	town := fs.String("town", "", "town id (required)")
	bead := fs.String("bead", "", "bead id (required)")
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	return runAdmin(ctx, env, af, schemas.AdminBeadShow, schemas.TownBeadRef{TownID: *town, BeadID: *bead})
}

func runConvoyList(ctx context.Context, args []string, env Env) error {
	fs := newFlags("convoy list", "convoy list --town T [--json]", "Lists a town's convoys with their progress. "+listNote, env)
	town := fs.String("town", "", "town id (required)")
	asJSON := jsonFlag(fs)
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	var convoys []schemas.ConvoyStatus
	if err := adminDo(ctx, env, af, schemas.AdminConvoyList, schemas.TownRequest{TownID: *town}, &convoys); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, convoys)
	}
	return writeConvoys(env.Stdout, convoys)
}

func writeConvoys(w io.Writer, convoys []schemas.ConvoyStatus) error {
	tw := newTable(w)
	row(tw, "CONVOY", "TITLE", "PROGRESS", "LANDED", "OPEN")
	for _, c := range convoys {
		landed := "no"
		if c.Landed {
			landed = "yes"
		}
		row(tw, c.ConvoyID, c.Title, fmt.Sprintf("%d/%d", c.Closed, c.Tracked), landed, strings.Join(c.Open, ","))
	}
	return tw.Flush()
}

func runConvoyShow(ctx context.Context, args []string, env Env) error {
	fs := newFlags("convoy show", "convoy show --town T --convoy C", "Shows one convoy's progress. "+adminNote, env)
	town := fs.String("town", "", "town id (required)")
	convoy := fs.String("convoy", "", "convoy id (required)")
	af := addAdminFlags(fs)
	if done, err := parse(fs, args, env); done {
		return err
	}
	return runAdmin(ctx, env, af, schemas.AdminConvoyShow, schemas.ConvoyRef{TownID: *town, ConvoyID: *convoy})
}
