// Package conformance is the conformance kit: it proves a container, in
// any language, against the contract of docs/PROTOCOL.md. Run starts a
// coordinator of its own (embedded NATS, a temporary store, short token
// lifetimes and intervals), runs the container under test with the
// settings of "Running a container" (its agents are the kit's own, through
// GASTOWN_AGENT_COMMAND), drives it through the contract's duties and
// prints a line per check. RunAgent is that agent: it reports what its
// container handed it to a directory the kit names in the dispatch's env.
package conformance
