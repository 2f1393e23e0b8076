// Package schemas is the wire contract of the Gastown bus (PROTOCOL.md):
// identifiers and their one validator, subject builders, message types with
// their `type` strings, token claims, RPC error codes and the Reply envelope.
//
// It does no I/O, never touches NATS and never reads a clock: everything here
// is a pure function of its arguments, so both ends of the bus can share it.
package schemas
