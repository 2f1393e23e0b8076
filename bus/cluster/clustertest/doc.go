// Package clustertest starts Gastown NATS clusters for tests: the configs
// 'gastown cluster init' writes (package cluster), in a t.TempDir, run as
// real nats-server processes (Start: they can be killed, stopped,
// restarted and partitioned off through loopback route proxies) or as
// in-process servers (StartInProcess). Everything stops at t.Cleanup.
package clustertest
