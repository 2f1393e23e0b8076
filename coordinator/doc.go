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
package coordinator
