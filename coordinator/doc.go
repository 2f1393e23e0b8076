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
package coordinator
