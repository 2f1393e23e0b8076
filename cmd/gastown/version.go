package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set by `make build` with -ldflags "-X main.version=… -X main.commit=…
// -X main.commitTime=…", since builds may carry -buildvcs=false (no VCS
// stamp).
var (
	version    string
	commit     string
	commitTime string
)

const versionDesc = `
Prints the module version, the VCS commit and its time when known, and the Go
version the binary was built with. 'gastown --version' prints the same.`

// buildInfo is what the binary knows of its build.
type buildInfo struct {
	Version   string
	Commit    string
	Modified  bool
	CommitAt  string
	GoVersion string
}

// readBuildInfo combines the -ldflags values with what the Go toolchain
// stamped (runtime/debug.ReadBuildInfo); -ldflags win when set.
func readBuildInfo() buildInfo {
	bi := buildInfo{Version: version, Commit: commit, CommitAt: commitTime, GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		if bi.Version == "" && info.Main.Version != "" {
			bi.Version = info.Main.Version
		}
		if info.GoVersion != "" {
			bi.GoVersion = info.GoVersion
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if bi.Commit == "" {
					bi.Commit = s.Value
				}
			case "vcs.time":
				if bi.CommitAt == "" {
					bi.CommitAt = s.Value
				}
			case "vcs.modified":
				bi.Modified = bi.Modified || s.Value == "true"
			}
		}
	}
	if bi.Version == "" {
		bi.Version = "(devel)"
	}
	return bi
}

func (bi buildInfo) write(w io.Writer) {
	fmt.Fprintf(w, "gastown %s\n", bi.Version)
	commit := bi.Commit
	switch {
	case commit == "":
		commit = "unknown (built without VCS information; make build stamps it)"
	case bi.Modified:
		commit += " (modified)"
	}
	fmt.Fprintf(w, "commit  %s\n", commit)
	if bi.CommitAt != "" {
		fmt.Fprintf(w, "time    %s\n", bi.CommitAt)
	}
	fmt.Fprintf(w, "go      %s\n", bi.GoVersion)
}

func runVersion(_ context.Context, args []string, env Env) error {
	fs := newFlags("version", "version", versionDesc, env)
	if done, err := parse(fs, args, env); done {
		return err
	}
	readBuildInfo().write(env.Stdout)
	return nil
}
