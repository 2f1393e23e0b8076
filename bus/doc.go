// Package bus owns the NATS side of Gastown: the embedded server (JetStream
// on a file store, the listen address), connection authentication with
// per-town permissions, the in-process connection the coordinator uses,
// typed request/reply helpers, and the slog adapter for the server's log.
//
// It makes no domain decisions. It checks a container's token through the
// small TokenAuthorizer interface that the coordinator's issuer satisfies,
// so bus never imports coordinator.
package bus
