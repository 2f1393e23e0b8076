package schemas

// PingResult is ping's result: whom the middleware took the caller for.
type PingResult struct {
	AgentID string `json:"agentId"`
	TownID  string `json:"townId"`
}

// Tool methods agents call on gastown.town.<T>.rpc.<method>.
const (
	ToolPing           = "ping"
	ToolPrime          = "prime"
	ToolBeadGet        = "bead.get"
	ToolBeadClose      = "bead.close"
	ToolDone           = "done"
	ToolMailSend       = "mail.send"
	ToolMailCheck      = "mail.check"
	ToolEscalate       = "escalate"
	ToolCheckpoint     = "checkpoint"
	ToolRigsList       = "rigs.list"
	ToolBeadsList      = "beads.list"
	ToolAgentsList     = "agents.list"
	ToolSling          = "sling"
	ToolBeadUpdate     = "bead.update"
	ToolConvoyCreate   = "convoy.create"
	ToolConvoyStatus   = "convoy.status"
	ToolReviewComplete = "review.complete"
	ToolTriageResolve  = "triage.resolve"
)

// Tools lists every tool method: the coordinator answers exactly these on
// …rpc.<method>.
var Tools = []string{
	ToolPing, ToolPrime, ToolBeadGet, ToolBeadClose, ToolDone, ToolMailSend, ToolMailCheck,
	ToolEscalate, ToolCheckpoint, ToolRigsList, ToolBeadsList, ToolAgentsList, ToolSling,
	ToolBeadUpdate, ToolConvoyCreate, ToolConvoyStatus, ToolReviewComplete, ToolTriageResolve,
}

// BeadRef names a bead (bead.get, bead.close).
type BeadRef struct {
	BeadID string `json:"beadId"`
}

// Validate checks the id.
func (r BeadRef) Validate() error { return validIDs("beadId", r.BeadID) }

// DoneRequest ends a polecat's work on its hooked bead.
type DoneRequest struct {
	// AgentID, when given, must be the caller.
	AgentID string `json:"agentId,omitempty"`
	Branch  string `json:"branch"`
	Summary string `json:"summary"`
	PRURL   string `json:"prUrl,omitempty"`
	// RunID, when given, must be the agent's current run: a run the
	// coordinator gave up on (its container died) cannot finish the work
	// of the run that replaced it.
	RunID string `json:"runId,omitempty"`
}

// Validate checks the branch is named.
func (r DoneRequest) Validate() error {
	if err := required("branch", r.Branch); err != nil {
		return err
	}
	return optionalIDs("runId", r.RunID)
}

// MailSend sends a message bead to an agent of the town.
type MailSend struct {
	From    string `json:"from,omitempty"` // must be the caller when given
	To      string `json:"to"`
	Subject string `json:"subject"`
	Body    string `json:"body,omitempty"`
}

// Validate checks the recipient and subject.
func (r MailSend) Validate() error {
	if err := validIDs("to", r.To); err != nil {
		return err
	}
	return required("subject", r.Subject)
}

// Escalate raises an escalation bead for the mayor.
type Escalate struct {
	Title  string `json:"title"`
	Body   string `json:"body,omitempty"`
	BeadID string `json:"beadId,omitempty"`
}

// Validate checks the title.
func (r Escalate) Validate() error { return required("title", r.Title) }

// Checkpoint records an agent's progress note.
type Checkpoint struct {
	AgentID string `json:"agentId,omitempty"` // must be the caller when given
	Note    string `json:"note"`
}

// Validate checks the note.
func (r Checkpoint) Validate() error { return required("note", r.Note) }

// BeadsList filters beads.list.
type BeadsList struct {
	Status string `json:"status,omitempty"`
	Type   string `json:"type,omitempty"`
}

// Validate accepts every filter.
func (BeadsList) Validate() error { return nil }

// BeadUpdate changes a bead's text or status (mayor).
type BeadUpdate struct {
	BeadID string `json:"beadId"`
	Title  string `json:"title,omitempty"`
	Body   string `json:"body,omitempty"`
	Status string `json:"status,omitempty"`
}

// Validate checks the id.
func (r BeadUpdate) Validate() error { return validIDs("beadId", r.BeadID) }

// ConvoyCreate creates a convoy tracking beads.
type ConvoyCreate struct {
	Title string   `json:"title"`
	Beads []string `json:"beads"`
}

// Validate checks the title and every id.
func (r ConvoyCreate) Validate() error {
	if err := required("title", r.Title); err != nil {
		return err
	}
	if len(r.Beads) == 0 {
		return invalidf("a convoy tracks at least one bead")
	}
	for _, b := range r.Beads {
		if err := validIDs("beads", b); err != nil {
			return err
		}
	}
	return nil
}

// ConvoyStatus is a convoy's progress.
type ConvoyStatus struct {
	ConvoyID string   `json:"convoyId"`
	Title    string   `json:"title"`
	Tracked  int      `json:"tracked"`
	Closed   int      `json:"closed"`
	Landed   bool     `json:"landed"`
	Open     []string `json:"open,omitempty"`
}

// Review outcomes.
const (
	ReviewMerged   = "merged"
	ReviewFailed   = "failed"
	ReviewConflict = "conflict"
)

// ReviewComplete is the refinery's verdict on a merge request.
type ReviewComplete struct {
	BeadID  string `json:"beadId"` // the merge request
	Outcome string `json:"outcome"`
	Note    string `json:"note,omitempty"`
	// RunID, when given, must be the refinery's current run.
	RunID string `json:"runId,omitempty"`
}

// Validate checks the id and outcome.
func (r ReviewComplete) Validate() error {
	if err := validIDs("beadId", r.BeadID); err != nil {
		return err
	}
	if err := optionalIDs("runId", r.RunID); err != nil {
		return err
	}
	switch r.Outcome {
	case ReviewMerged, ReviewFailed, ReviewConflict:
		return nil
	}
	return invalidf("outcome %q is not merged, failed or conflict", r.Outcome)
}

// Triage actions.
const (
	TriageRestart = "restart" // clear the failures; the agent is dispatched again
	TriageFail    = "fail"    // fail the agent's bead and unhook it
)

// TriageResolve is a triage agent's verdict on a crash-looping agent.
type TriageResolve struct {
	Action string `json:"action"`
	Note   string `json:"note,omitempty"`
}

// Validate checks the action.
func (r TriageResolve) Validate() error {
	if r.Action != TriageRestart && r.Action != TriageFail {
		return invalidf("action %q is not restart or fail", r.Action)
	}
	return nil
}
