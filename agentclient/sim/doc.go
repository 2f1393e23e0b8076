// Package sim is the built-in simulated agent (`gastown agent sim`): an
// agent without an LLM that primes, works for a while, and reports through
// the same tools a real agent uses — a polecat commits and pushes its
// branch and calls done, a refinery merges and calls review.complete, a
// triage agent restarts the agent it triages, a mayor waits to be stopped.
//
// It owns the sim's git identity ("Gastown Sim") and its commits and
// merges. It is an agent, so it talks to the coordinator only through
// agentclient's tool client; agentclient, which the container links, never
// imports it.
package sim
