package schemas

// State buckets (JetStream KV). Operators may read them with the nats CLI;
// no token is ever written to any of them.
const (
	// BucketTokens holds each town's token schedule and revocation time.
	BucketTokens = "gastown_tokens"
)

// StateBuckets lists every state bucket, so that permissions name them all.
var StateBuckets = []string{BucketTokens}
