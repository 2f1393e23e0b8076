// Package coordinator is the Gastown daemon's logic: the token issuer and its
// key ring, connection authorization for the bus, token rotation and
// revocation, and the request handlers that answer containers and the
// administrator. State lives in JetStream KV; memory holds only caches that
// a KV watch keeps true.
//
// Its only HTTP is the daemon's optional metrics and health listener
// (httpserver.go: /metrics, /healthz, /readyz; the instruments are in
// metrics.go); no request or reply travels over HTTP. It never starts
// processes.
//
// What each file owns:
//
//   - The domain's lifecycles, one file each, the only places their state
//     changes: agent.go (an agent's status and runs: newAgent, startRun,
//     endRun(reason) with the one rule for what ending a run does, stall,
//     release), bead.go (a bead's status: the legal moves, Bead.move
//     refusing an illegal one with conflict), hook.go (tying a bead to its
//     agent: hook, assign, unhook, with the one failure rule). model.go
//     holds the records and their typed statuses (wire strings unchanged).
//   - The flow built on them: town.go (towns, rigs, beads created, sling),
//     dispatch.go (starting a run in the container, a failed dispatch),
//     flow.go (done, the review queue, review.complete, convoys),
//     heartbeat.go (heartbeats and exits), patrol.go (the patrol loop,
//     liveness verdicts), triage.go (crash loops and triage), repair.go
//     (the numbered rules that finish a step a crash left half done; each
//     multi-write step names them at its writes), awaitcontainer.go and
//     dispatchlog.go (towns waiting for their container).
//   - Handlers: rpc.go (the tool middleware), tools.go (the tools),
//     admin.go and adminverbs.go (admin methods), replyrule.go (the reply
//     rule), fairness.go, limits.go and quota.go (per-town load and caps).
//   - Tokens: issuer.go, keyring.go, verifycache.go, connauth.go,
//     tokenget.go, tokenstate.go, rotation.go, revoke.go.
//   - State and running: bucket.go and bucketdelete.go (a KV bucket with
//     its watched cache), state.go (the buckets and the liveness view),
//     lease.go and loops.go (per-town leases and the loops they gate),
//     coordinator.go (New, the handler pool, Close: cancel, then wait),
//     daemon.go (the daemon: server, connections, coordinator),
//     config.go, log.go, metrics.go, metrics_state.go, httpserver.go.
//
// Time comes from one clock, c.now (Config.Now in UTC).
package coordinator
