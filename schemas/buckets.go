package schemas

// State buckets (JetStream KV). Operators may read them with the nats CLI;
// no token is ever written to any of them. Keys are the town id, or
// "<townId>.<id>" for what belongs to a town (ids never contain a dot).
const (
	// BucketTokens holds each town's token schedule and revocation time.
	BucketTokens = "gastown_tokens"
	// BucketTowns holds each town: owner and creation time.
	BucketTowns = "gastown_towns"
	// BucketRigs holds each rig: its git repository and default branch.
	BucketRigs = "gastown_rigs"
	// BucketAgents holds each agent: role, status, run id, hook, attempts.
	BucketAgents = "gastown_agents"
	// BucketBeads holds each bead: the units of work, mail, reviews, convoys.
	BucketBeads = "gastown_beads"
	// BucketHeartbeats holds each town's last heartbeat, as received.
	BucketHeartbeats = "gastown_heartbeats"
	// BucketLeases holds which coordinator runs each town's loops.
	BucketLeases = "gastown_leases"
)

// StateBuckets lists every state bucket, so that permissions name them all.
var StateBuckets = []string{BucketTokens, BucketTowns, BucketRigs, BucketAgents, BucketBeads, BucketHeartbeats, BucketLeases}

// Key of something that belongs to a town in a state bucket.
func Key(townID, id string) string { return townID + "." + id }
