// Package cluster owns what Gastown needs to run on a real NATS cluster
// instead of its embedded server: the coordinator's credentials (nkey
// seeds and the callout's xkey, creds.go), the plan of a cluster and the
// nats-server configuration of each of its nodes (config.go), rendered
// from the permissions of the isolation model in package bus so that they
// cannot drift, and the check of a hand-edited set (check.go).
//
// Every node is configured so that it cannot grant a container token
// without the auth callout: the control account GASTOWN has exactly one
// configured user, the coordinator's control nkey; containers and the
// administrator get there only through the callout, answered by the
// coordinators. Package clustertest starts such clusters in tests.
//
// bus never imports this package.
package cluster
