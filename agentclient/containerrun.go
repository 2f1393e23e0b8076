package agentclient

import (
	"context"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// ContainerConfig is everything `gastown container` needs.
type ContainerConfig struct {
	Source            Config
	Runner            RunnerConfig
	HeartbeatInterval time.Duration
}

// RunContainer runs a town's container until ctx is done: the token source
// (and its token file), the runner answering dispatches and stops, and the
// heartbeats. Then it stops the agents, then the source.
func RunContainer(ctx context.Context, cfg ContainerConfig) error {
	claims, err := schemas.PeekContainerClaims(cfg.Source.Token)
	if err != nil {
		return errors.WithHint(errors.Wrap(err, EnvContainerToken),
			"it must be a container token, as printed by `gastown token mint --town <town>`")
	}
	town, err := schemas.ForTown(claims.TownID)
	if err != nil {
		return err
	}
	if cfg.Source.TokenFile == "" {
		cfg.Source.TokenFile = filepath.Join(cfg.Runner.WorkDir, "token")
	}
	if abs, err := filepath.Abs(cfg.Source.TokenFile); err == nil {
		cfg.Source.TokenFile = abs
	}
	cfg.Runner.TokenFile = cfg.Source.TokenFile
	// Agents run in their own workspaces: give them absolute paths.
	if cfg.Source.TLS, err = cfg.Source.TLS.Abs(); err != nil {
		return err
	}
	if !cfg.Runner.TLS.Enabled() {
		cfg.Runner.TLS = cfg.Source.TLS
	}
	if cfg.Runner.NatsURL == "" {
		cfg.Runner.NatsURL = cfg.Source.URL
	}
	if cfg.Runner.Logger == nil {
		cfg.Runner.Logger = cfg.Source.Logger
	}
	runner, err := NewRunner(town.ID(), cfg.Runner)
	if err != nil {
		return err
	}
	defer runner.Close()
	src, err := Start(ctx, cfg.Source,
		Handler{Subject: town.Dispatch(), Queue: schemas.ContainerQueue, Handle: runner.HandleDispatch},
		Handler{Subject: town.Control(), Queue: schemas.ContainerQueue, Handle: runner.HandleControl},
	)
	if err != nil {
		return err
	}
	defer src.Close()
	src.log.Info("container running", "container", src.ContainerID(), "tokenFile", cfg.Source.TokenFile)
	// The container also stops when its source gives up: the bus kept
	// refusing its token, which no retry can fix (see Config.RefusedExitAfter).
	runCtx, cancel := context.WithCancel(ctx)
	var watch sync.WaitGroup
	watch.Go(func() {
		select {
		case <-src.Done():
			cancel()
		case <-runCtx.Done():
		}
	})
	RunHeartbeats(runCtx, src, runner, src.ContainerID(), cfg.HeartbeatInterval, cfg.Runner.Now)
	cancel()
	watch.Wait()
	src.log.Info("container stopping")
	// Stop the agents while still connected, then report their exits.
	runner.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sendHeartbeat(sctx, src, runner, src.ContainerID(), time.Now)
	return src.Err()
}
