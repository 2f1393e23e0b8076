package main

import (
	"encoding/json"
	"fmt"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/briefing"
	"github.com/gastown/gastown/schemas"
)

const formatMarkdown = "markdown"

// checkToolFormat checks gastown tool's --format for method.
func checkToolFormat(format, method string) error {
	switch format {
	case "json":
		return nil
	case formatMarkdown:
		if method != schemas.ToolPrime {
			return errors.Newf("--format markdown is for prime only (its briefing), not %s", method)
		}
		return nil
	}
	return errors.Newf("--format %q is not json or markdown", format)
}

// printBriefing prints prime's result as the role's markdown briefing.
func printBriefing(env Env, townID string, raw json.RawMessage) error {
	var p briefing.Prime
	if err := json.Unmarshal(raw, &p); err != nil {
		return errors.Wrap(err, "decoding prime's result")
	}
	md, err := briefing.Render(townID, p)
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(env.Stdout, md)
	return err
}
