// Package token owns Gastown's tokens: the key ring of signing secrets
// (KeyRingFromEnv), the issuer that mints and verifies container and
// legacy agent tokens (Issuer), the cache that spares a request a
// signature check (VerifyCache), and the connection authorizer the bus
// asks when a container connects (ConnAuthorizer, a bus.TokenAuthorizer).
//
// It holds no state of its own beyond the keys: which tokens are revoked
// is the coordinator's stored state, asked through RevocationChecker. It
// imports only schemas (the claims), bus (the grant it answers with), jwt,
// cockroachdb/errors and the standard library, never the coordinator. No
// token or secret is ever in an error, a log line or a printed value.
package token
