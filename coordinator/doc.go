// Package coordinator is the Gastown daemon's logic: the token issuer and its
// key ring, connection authorization for the bus, token rotation and
// revocation, and the request handlers that answer containers and the
// administrator. State lives in JetStream KV; memory holds only caches that
// a KV watch keeps true.
//
// It never talks HTTP and never starts processes.
package coordinator
