// Package kvstore is the coordinator's generic store: a JetStream KV bucket
// of JSON values with an in-memory view that a KV watch keeps true
// (Bucket, Open), every write a compare-and-set or a create, a write whose
// answer was lost read back before it is retried; and the watch loop
// (Watch) and bucket creation (OpenKV) that the leases use on a bucket of
// their own. Its errors (errors.go) say what happened to a key.
//
// It knows nothing of towns, agents or beads: the coordinator's domain
// types are only the T of its buckets.
package kvstore
