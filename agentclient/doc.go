// Package agentclient is what runs inside a town's container: the token
// source that always holds the newest container token (rotation acks, the
// token file agents read, connections switched make-before-break), and the
// tool client whose every call carries the newest token.
//
// It never signs tokens: it reads a token's town and expiry from its claims
// without the secret (schemas.PeekContainerClaims).
package agentclient
