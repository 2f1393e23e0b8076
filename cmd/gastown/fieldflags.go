package main

import (
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// fieldFlags maps the JSON fields that a request's validation names to the
// flags of the admin verb that set them.
func fieldFlags(body any) map[string]string {
	m := map[string]string{
		"townId": "--town", "userId": "--owner", "rigId": "--rig", "gitUrl": "--git",
		"defaultBranch": "--branch", "beadId": "--bead", "agentId": "--agent",
		"title": "--title", "beads": "--beads", "type": "--type", "body": "--body",
	}
	if _, ok := body.(schemas.BeadCreate); ok {
		m["beadId"] = "--id"
	}
	return m
}

// asFlagError rewrites a validation error that begins with a JSON field's
// name ("gitUrl is required") to name the flag instead ("--git is
// required"): on the command line the user knows the flags, not the wire.
func asFlagError(err error, fields map[string]string) error {
	msg := err.Error()
	for field, flag := range fields {
		if rest, ok := strings.CutPrefix(msg, field+" "); ok {
			return errors.Newf("%s %s", flag, rest)
		}
	}
	if strings.Contains(msg, "at least one bead") {
		return errors.Newf("%s (--beads)", msg)
	}
	return err
}
