package briefing

import (
	"bytes"
	"embed"
	"strings"
	"text/template"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

//go:embed templates/*.md.tmpl
var files embed.FS

var templates = template.Must(template.New("briefing").Funcs(template.FuncMap{
	"quote": quoteBlock,
}).ParseFS(files, "templates/*.md.tmpl"))

// Bead is what a briefing shows of a bead: the fields of prime's hook.
type Bead struct {
	BeadID     string `json:"beadId"`
	Type       string `json:"type"`
	Status     string `json:"status"`
	RigID      string `json:"rigId,omitempty"`
	Title      string `json:"title"`
	Body       string `json:"body,omitempty"`
	ConvoyID   string `json:"convoyId,omitempty"`
	SourceBead string `json:"sourceBead,omitempty"`
	Polecat    string `json:"polecat,omitempty"`
	Branch     string `json:"branch,omitempty"`
	PRURL      string `json:"prUrl,omitempty"`
	Summary    string `json:"summary,omitempty"`
	TriageFor  string `json:"triageFor,omitempty"`
}

// Prime is prime's result, as the wire carries it (PROTOCOL.md, RPC).
type Prime struct {
	AgentID      string `json:"agentId"`
	RigID        string `json:"rigId"`
	Role         string `json:"role"`
	RunID        string `json:"runId,omitempty"`
	Hook         *Bead  `json:"hook,omitempty"`
	Instructions string `json:"instructions"`
}

// data is what the templates read.
type data struct {
	Prime
	TownID string
	// Branch is the branch to work on: a polecat's own branch for its
	// bead, the branch a refinery merges; empty for the others.
	Branch string
	// Tools are the methods the role may call; Finish the one that ends
	// its work (none for the mayor).
	Tools  []string
	Finish string
}

// Render is the briefing of the agent prime describes, in town townID.
func Render(townID string, p Prime) (string, error) {
	if err := schemas.ValidateRole(p.Role); err != nil {
		return "", errors.Wrap(err, "prime's role")
	}
	d := data{Prime: p, TownID: townID, Tools: schemas.AgentTools(p.Role), Finish: schemas.FinishingTool(p.Role)}
	if p.Hook != nil {
		switch p.Role {
		case schemas.RolePolecat:
			d.Branch = schemas.PolecatBranch(p.AgentID, p.Hook.BeadID)
		case schemas.RoleRefinery:
			d.Branch = p.Hook.Branch
		}
	}
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, p.Role+".md.tmpl", d); err != nil {
		return "", errors.Wrapf(err, "rendering the %s briefing", p.Role)
	}
	return b.String(), nil
}

// quoteBlock turns text into a markdown block quote, so a bead's body
// reads as the bead's, never as the briefing's own headings.
func quoteBlock(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "> (no description)"
	}
	return "> " + strings.ReplaceAll(s, "\n", "\n> ")
}
