// Package bus owns the NATS side of Gastown: the embedded server (JetStream
// on a file store, the listen address), connection authentication with
// per-town permissions, the in-process connection the coordinator uses,
// typed request/reply helpers, and the slog adapter for the server's log.
//
// It also keeps outsiders from wearing the server down (Limits): password
// guesses are throttled per source, what it refuses is counted and logged
// at a bounded rate (RateLog), each town's connections are capped, and
// nothing is kept for a connection once it has closed.
//
// It makes no domain decisions. It checks a container's token through the
// small TokenAuthorizer interface that the coordinator's issuer satisfies,
// so bus never imports coordinator.
package bus
