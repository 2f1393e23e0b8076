// Command gastown is the one Gastown binary: the coordinator daemon, the
// container, the tools agents call, and the administrator's verbs.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := Run(ctx, os.Args[1:], Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr})
	code := exitCode(err)
	if err != nil && code != 0 {
		printError(os.Stderr, err)
	}
	stop()
	os.Exit(code)
}
