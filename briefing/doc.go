// Package briefing renders the markdown briefing an agent reads when it
// starts (prime's result, as `gastown tool prime --format markdown` and the
// MCP prime tool give it): who it is, its town and rig, the bead on its
// hook, the branch to work on, its tools and the one that ends its work,
// how to ask for help and what it must never do. The text lives in
// templates embedded in the binary, one per role. It never sees a token.
package briefing
