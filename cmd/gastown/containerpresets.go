package main

import (
	"os"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentpreset"
)

// applyPresets sets the commands of the agent presets: all, for every
// role, then the per-role ones over it. The command names this binary.
func applyPresets(commands map[string][]string, all string, perRole map[string]*string) error {
	given := all != ""
	for _, p := range perRole {
		given = given || *p != ""
	}
	if !given {
		return nil
	}
	bin, err := os.Executable()
	if err != nil {
		return errors.Wrap(err, "finding this binary for the agent presets")
	}
	return presetCommands(commands, bin, all, perRole)
}

// presetCommands is applyPresets with the gastown binary given.
func presetCommands(commands map[string][]string, bin, all string, perRole map[string]*string) error {
	for role, p := range perRole {
		name, flag := all, "--agent"
		if *p != "" {
			name, flag = *p, "--"+role+"-agent"
		}
		if name == "" {
			continue
		}
		argv, err := agentpreset.Command(name, bin)
		if err != nil {
			return errors.Wrap(err, flag)
		}
		commands[role] = argv
	}
	return nil
}
