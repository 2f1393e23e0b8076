// Package coordinator is the Gastown daemon's logic: the domain (towns,
// rigs, agents, beads, convoys and the review queue; model.go) and the
// loops that drive it. It owns token rotation and revocation (rotation.go,
// revoke.go, tokenget.go) over each town's token schedule, owner and
// revocation time (tokenstore.go), dispatch, liveness and patrol with
// triage, the RPC middleware and tool handlers that answer containers and
// the administrator, the per-town limits, the town leases that say which
// coordinator runs a town's loops (lease.go), and the daemon that wires
// them to the bus, embedded or on a cluster (daemon.go, cluster.go).
//
// Two packages below it hold what is not the domain's: coordinator/token
// mints and verifies tokens and authorizes connections (the coordinator
// hands it its token store as the revocation checker), and
// coordinator/internal/kvstore is the generic JetStream KV bucket the state
// lives in. State lives in JetStream KV; memory holds only caches that a KV
// watch keeps true.
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
//   - Tokens (minting and verifying them is coordinator/token's):
//     tokenstore.go (each town's token schedule, owner and revocation
//     time), rotation.go, revoke.go, tokenget.go.
//   - State and running: state.go (the buckets, kvstore.Bucket each, and
//     the liveness view),
//     lease.go and loops.go (per-town leases and the loops they gate),
//     coordinator.go (New, Close: cancel, then wait), pool.go (the handler
//     pool: at most Limits.Handlers handlers at once, each one tracked so
//     that Close waits for it),
//     daemon.go (the daemon: server, connections, coordinator),
//     config.go, log.go, metrics.go, metrics_state.go, httpserver.go.
//
// Time comes from one clock: c.now reads it (Config.Now, in UTC), and
// Config.Clock (package clock) makes the tickers of the rotation and patrol
// loops, so a test that hands it a clock.Manual runs them by advancing it.
// The leases stay on the wall clock: the store expires them by its own.
package coordinator
