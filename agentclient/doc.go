// Package agentclient is what runs inside a town's container, and what its
// agents use to call tools:
//
//   - the token source (tokensource.go): it always holds the newest
//     container token (rotation acks, the token file agents read), keeps a
//     connection moved make-before-break, and says what is wrong with the
//     bus (bushealth.go);
//   - the tool client (client.go) whose every call carries the newest
//     token, and an agent's session over the token file (filesession.go);
//   - the runner (agents.go) that starts and stops agent processes, each in
//     its workspace (workspace.go), with its environment (agentenv.go), and
//     the heartbeats that report them (heartbeats.go); RunContainer ties
//     them together (containerrun.go);
//   - every environment variable name a container reads or an agent gets
//     (env.go), and the one retry backoff (backoff.go).
//
// Its waits run on Config.Clock and RunnerConfig.Clock (package clock): the
// token source's loop (a connection's switch time, its retries), the
// runner's stop grace and the heartbeats; tests advance a clock.Manual.
// What the network bounds (a request, draining a connection, the NATS
// client's reconnects) stays on the wall clock.
//
// It never signs tokens: it reads a token's town and expiry from its claims
// without the secret (schemas.PeekContainerClaims). The simulated agent is
// agentclient/sim, which the container does not link.
package agentclient
