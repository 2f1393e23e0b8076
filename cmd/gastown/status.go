package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
)

// DefaultWatchInterval is how often `status --watch` redraws when no
// interval is given.
const DefaultWatchInterval = 2 * time.Second

const statusDesc = `Shows a town as tables: the town (owner, container), its agents with their
status and hook, its beads by status, and its convoys with their progress.
Without --town it lists every town. --json prints the coordinator's answer
as JSON for scripts. --watch redraws every interval (default 2s; e.g.
--watch 5s) until Ctrl-C. ` + "Connects as the 'admin' user with GASTOWN_ADMIN_PASSWORD."

// watchFlag is --watch with an optional interval: a bare --watch means
// DefaultWatchInterval.
type watchFlag struct {
	on    bool
	every time.Duration
}

func (w *watchFlag) String() string {
	if w == nil || !w.on {
		return ""
	}
	return w.every.String()
}

func (w *watchFlag) Set(v string) error {
	w.on = true
	if v == "true" || v == "" {
		w.every = DefaultWatchInterval
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return errors.Newf("--watch takes a positive interval such as 5s, not %q", v)
	}
	w.every = d
	return nil
}

func (w *watchFlag) IsBoolFlag() bool { return true }

func runStatus(ctx context.Context, args []string, env Env) error {
	fs := newFlags("status", "status [--town T] [--json] [--watch [interval]]", statusDesc, env)
	town := fs.String("town", "", "town id (default: list every town)")
	asJSON := jsonFlag(fs)
	var watch watchFlag
	fs.Var(&watch, "watch", "redraw every interval until Ctrl-C (default interval 2s)")
	af := addAdminFlags(fs)
	// `--watch 5s`: a bool-like flag cannot take a separate value, so an
	// interval right after a bare --watch is taken here.
	for i := 0; i+1 < len(args); i++ {
		if (args[i] == "--watch" || args[i] == "-watch") && !strings.HasPrefix(args[i+1], "-") {
			if _, err := time.ParseDuration(args[i+1]); err == nil {
				args = append(append(append([]string{}, args[:i]...), args[i]+"="+args[i+1]), args[i+2:]...)
			}
		}
	}
	if done, err := parse(fs, args, env); done {
		return err
	}
	if *town != "" {
		if err := schemas.ValidateID("--town", *town); err != nil {
			return errors.Mark(err, ErrUsage)
		}
	}
	draw := func(w io.Writer) error { return drawStatus(ctx, env, af, *town, *asJSON, w) }
	if !watch.on {
		return draw(env.Stdout)
	}
	return watchStatus(ctx, env, watch.every, draw)
}

// drawStatus fetches and writes one status frame.
func drawStatus(ctx context.Context, env Env, af adminFlags, town string, asJSON bool, w io.Writer) error {
	if town == "" {
		var towns []schemas.TownSummary
		if err := adminDo(ctx, env, af, schemas.AdminTownList, schemas.TownList{}, &towns); err != nil {
			return err
		}
		if asJSON {
			return printJSONTo(w, towns)
		}
		return writeTowns(w, towns)
	}
	var st coordinator.TownStatus
	if err := adminDo(ctx, env, af, schemas.AdminStatus, schemas.TownRequest{TownID: town}, &st); err != nil {
		return err
	}
	if asJSON {
		return printJSONTo(w, st)
	}
	return writeTownStatus(w, st)
}

// clearScreen moves the cursor home and clears the terminal.
const clearScreen = "\x1b[H\x1b[2J"

// watchStatus redraws every interval until ctx ends (Ctrl-C). The first
// frame's error ends it (a wrong password, no such town); later errors are
// shown in the frame and the next one tries again.
func watchStatus(ctx context.Context, env Env, every time.Duration, draw func(io.Writer) error) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for frame := 0; ; frame++ {
		var b strings.Builder
		err := draw(&b)
		if err != nil && frame == 0 {
			return err
		}
		out := clearScreen + fmt.Sprintf("every %s, %s (Ctrl-C to stop)\n\n", every, time.Now().UTC().Format("15:04:05"))
		if err != nil {
			out += "gastown: " + err.Error() + "\n"
		} else {
			out += b.String()
		}
		if _, werr := io.WriteString(env.Stdout, out); werr != nil {
			return werr
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		if ctx.Err() != nil {
			return nil // Ctrl-C
		}
	}
}

// writeTownStatus writes a town's status as tables.
func writeTownStatus(w io.Writer, st coordinator.TownStatus) error {
	s := st.Summary
	tw := newTable(w)
	row(tw, "TOWN", "OWNER", "CONTAINER", "LAST HEARTBEAT", "RIGS", "CREATED")
	row(tw, st.Town.TownID, st.Town.UserID, connectedWord(s.ContainerConnected), when(s.LastHeartbeatAt), fmt.Sprint(len(st.Rigs)), when(st.Town.CreatedAt))
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nAGENTS (%d, %d working)\n", len(st.Agents), s.WorkingAgents)
	tw = newTable(w)
	row(tw, "AGENT", "ROLE", "RIG", "STATUS", "HOOK", "RUN", "LAST ERROR")
	for _, a := range st.Agents {
		row(tw, a.AgentID, a.Role, a.RigID, a.Status.String(), a.Hook, a.RunID, a.LastError)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	work := make([]coordinator.Bead, 0, len(st.Beads))
	counts := map[string]int{}
	for _, b := range st.Beads {
		if b.Type == coordinator.BeadConvoy {
			continue // in the convoys table
		}
		work = append(work, b)
		counts[b.Status.String()]++
	}
	fmt.Fprintf(w, "\nBEADS (%d: %s)\n", len(work), beadCounts(counts))
	// By status, in the statuses' order, oldest first within each.
	byStatus := make([]coordinator.Bead, 0, len(work))
	for _, status := range schemas.BeadStatuses {
		for _, b := range work {
			if b.Status.String() == status {
				byStatus = append(byStatus, b)
			}
		}
	}
	if err := writeBeads(w, byStatus); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nCONVOYS (%d)\n", len(st.Convoys))
	return writeConvoys(w, st.Convoys)
}
