package schemas

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The repository's copy of the contract, docs/PROTOCOL.md, is the one the
// code is held to: every subject, message type, error code, header,
// method, event kind and bucket it names exists here, and the other way
// round.

func protocolDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../docs/PROTOCOL.md")
	require.NoError(t, err)
	return string(b)
}

// section is the text of the doc from heading up to the next "## ".
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	i := strings.Index(doc, "\n## "+heading+"\n")
	require.GreaterOrEqual(t, i, 0, "docs/PROTOCOL.md has no section %q", heading)
	rest := doc[i+len(heading)+5:]
	if j := strings.Index(rest, "\n## "); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// firstColumn is the backquoted first cell of every table row of text.
func firstColumn(text string) []string {
	var out []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\|").FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

// table is the rows of the table that follows marker in text.
func table(t *testing.T, text, marker string) []string {
	t.Helper()
	i := strings.Index(text, marker)
	require.GreaterOrEqual(t, i, 0, "no %q", marker)
	rest := text[i:]
	start := strings.Index(rest, "\n|")
	require.GreaterOrEqual(t, start, 0, "no table after %q", marker)
	rest = rest[start+1:]
	if end := strings.Index(rest, "\n\n"); end >= 0 {
		rest = rest[:end]
	}
	return firstColumn(rest)
}

func TestProtocolMessageTypes(t *testing.T) {
	doc := section(t, protocolDoc(t), "Messages")
	var code []string
	for _, m := range []Message{&Ack{}, &TokenRequest{}, &TokenRotation{}, &StartAgent{}, &StartAgentResult{}, &StopAgent{}, &Heartbeat{}, &TownEvent{}} {
		code = append(code, m.MessageType())
	}
	require.ElementsMatch(t, code, firstColumn(doc))
}

func TestProtocolErrorCodes(t *testing.T) {
	rows := table(t, section(t, protocolDoc(t), "RPC"), "| code | meaning | HTTP twin |")
	var known []string
	for c := range codes {
		known = append(known, string(c))
	}
	require.ElementsMatch(t, known, rows)
}

func TestProtocolHeaders(t *testing.T) {
	doc := protocolDoc(t)
	for _, h := range []string{AuthorizationHeader, AgentIDHeader, RigIDHeader, ErrorHeader, RetryAfterHeader} {
		require.Contains(t, doc, "`"+h, "docs/PROTOCOL.md does not name the header %s", h)
	}
}

func TestProtocolSubjects(t *testing.T) {
	doc := section(t, protocolDoc(t), "Subjects")
	tw, err := ForTown("T")
	require.NoError(t, err)
	rpc, err := tw.RPC("m")
	require.NoError(t, err)
	holder, err := tw.HolderRPC("m")
	require.NoError(t, err)
	var code []string
	for _, s := range []string{tw.Token(), tw.TokenGet(), tw.Dispatch(), tw.ControlStop(), tw.Heartbeat(), rpc, holder, tw.Events()} {
		leaf := strings.TrimPrefix(s, "gastown.town.T.")
		leaf = strings.Replace(leaf, "rpc.m", "rpc.<method>", 1)
		code = append(code, "…"+leaf)
	}
	require.ElementsMatch(t, code, table(t, doc, "| subject | from → to | kind | body → reply |"))
	for _, prefix := range []string{TownRoot, AdminRoot, InboxRoot, AdminInbox, OpsInbox} {
		require.Contains(t, protocolDoc(t), prefix, "docs/PROTOCOL.md does not name %s", prefix)
	}
}

func TestProtocolMethods(t *testing.T) {
	doc := section(t, protocolDoc(t), "Methods")
	require.ElementsMatch(t, Tools, table(t, doc, "**Tools**"))
	require.ElementsMatch(t, AdminMethods, table(t, doc, "**Administration**"))
}

func TestProtocolEventsAndBuckets(t *testing.T) {
	doc := section(t, protocolDoc(t), "Methods")
	quoted := func(marker string) []string {
		i := strings.Index(doc, marker)
		require.GreaterOrEqual(t, i, 0, "no %q", marker)
		para := doc[i:]
		if j := strings.Index(para, "\n\n"); j >= 0 {
			para = para[:j]
		}
		var out []string
		for _, m := range regexp.MustCompile("`([a-z_.]+)`").FindAllStringSubmatch(para, -1) {
			if !strings.HasPrefix(m[1], "gastown.v1.") {
				out = append(out, m[1])
			}
		}
		return out
	}
	events := []string{EventAgentDead, EventBeadClosed, EventConvoyLanded, EventTokenRotated, EventTokenRevoked, EventRotationError}
	require.ElementsMatch(t, events, quoted("**Event kinds**"))
	require.ElementsMatch(t, StateBuckets, quoted("**State buckets**"))
}
