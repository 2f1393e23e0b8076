package coordinator

import (
	"time"

	"github.com/gastown/gastown/schemas"
)

// AgentStatus is where an agent is in its lifecycle (agent.go owns the
// moves between them). Its values are wire strings (docs/PROTOCOL.md):
// an agent's "status" in every reply and in the agents bucket.
type AgentStatus string

// Agent statuses.
const (
	AgentIdle    AgentStatus = "idle"
	AgentWorking AgentStatus = "working"
	AgentStalled AgentStatus = "stalled"
	AgentDead    AgentStatus = "dead"
)

func (s AgentStatus) String() string { return string(s) }

// Bead types.
const (
	BeadIssue        = "issue"
	BeadMessage      = "message"
	BeadMergeRequest = "merge_request"
	BeadConvoy       = "convoy"
	BeadEscalation   = "escalation"
)

// BeadStatus is where a bead is in its lifecycle (bead.go owns the moves
// between them). Its values are the wire strings of schemas.BeadStatuses
// (docs/PROTOCOL.md).
type BeadStatus string

// Bead statuses; closed and failed are final.
const (
	BeadOpen       BeadStatus = "open"
	BeadInProgress BeadStatus = "in_progress"
	BeadInReview   BeadStatus = "in_review"
	BeadClosed     BeadStatus = "closed"
	BeadFailed     BeadStatus = "failed"
)

func (s BeadStatus) String() string { return string(s) }

// Final reports whether a bead in status s can no longer change status.
func (s BeadStatus) Final() bool { return s == BeadClosed || s == BeadFailed }

// Town is a town: its owner and one container.
type Town struct {
	TownID    string    `json:"townId"`
	UserID    string    `json:"userId"`
	CreatedAt time.Time `json:"createdAt"`
}

// Rig is one git repository of a town.
type Rig struct {
	TownID        string    `json:"townId"`
	RigID         string    `json:"rigId"`
	GitURL        string    `json:"gitUrl"`
	DefaultBranch string    `json:"defaultBranch"`
	CreatedAt     time.Time `json:"createdAt"`
}

// Agent is one agent of a town and the state of its current run.
type Agent struct {
	TownID  string      `json:"townId"`
	AgentID string      `json:"agentId"`
	RigID   string      `json:"rigId"`
	Role    string      `json:"role"`
	Status  AgentStatus `json:"status"`
	// RunID is the current run; every message about the agent must name it.
	RunID string `json:"runId,omitempty"`
	// Hook is the bead the agent works on, if any.
	Hook string `json:"hook,omitempty"`
	// Attempts counts failed dispatches of the hooked bead.
	Attempts int `json:"attempts"`
	// NextAttemptAt is the earliest time of the next dispatch.
	NextAttemptAt time.Time `json:"nextAttemptAt,omitzero"`
	// DispatchedAt is when the current run was dispatched.
	DispatchedAt time.Time `json:"dispatchedAt,omitzero"`
	// LastError says why the last dispatch or run failed.
	LastError string `json:"lastError,omitempty"`
	// AwaitsContainer: the last dispatch failed only because no container
	// of the town was connected. It did not count as an attempt, and the
	// town's container connecting ends the cooldown (awaitcontainer.go).
	AwaitsContainer bool `json:"awaitsContainer,omitempty"`
	// Failures are the times of recent failed runs (crash-loop detection).
	Failures []time.Time `json:"failures,omitempty"`
	// Checkpoint is the agent's last progress note.
	Checkpoint string    `json:"checkpoint,omitempty"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

// Bead is a unit of work (or mail, a review, a convoy, an escalation).
type Bead struct {
	TownID   string     `json:"townId"`
	BeadID   string     `json:"beadId"`
	Type     string     `json:"type"`
	Status   BeadStatus `json:"status"`
	RigID    string     `json:"rigId,omitempty"`
	Title    string     `json:"title"`
	Body     string     `json:"body,omitempty"`
	Assignee string     `json:"assignee,omitempty"`
	// From is the sender of a message bead.
	From string `json:"from,omitempty"`
	// ConvoyID is the convoy tracking this bead.
	ConvoyID string `json:"convoyId,omitempty"`
	// Tracks are the beads a convoy tracks.
	Tracks []string `json:"tracks,omitempty"`
	// Landed: every bead the convoy tracks is closed.
	Landed bool `json:"landed,omitempty"`
	// SourceBead is the bead a merge request or escalation is about.
	SourceBead string `json:"sourceBead,omitempty"`
	// Polecat is the agent whose work a merge request carries.
	Polecat string `json:"polecat,omitempty"`
	Branch  string `json:"branch,omitempty"`
	PRURL   string `json:"prUrl,omitempty"`
	Summary string `json:"summary,omitempty"`
	// TriageFor names the crash-looping agent a patrol triage bead is about.
	TriageFor string `json:"triageFor,omitempty"`
	// CreatedBy is "patrol" for beads patrol made, else the creator.
	CreatedBy string    `json:"createdBy,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Final reports whether the bead can no longer change status.
func (b Bead) Final() bool { return b.Status.Final() }

// heartbeatRecord is a town's last heartbeat as received, fenced: only the
// lines naming each agent's current run are kept.
type heartbeatRecord struct {
	TownID      string              `json:"townId"`
	ContainerID string              `json:"containerId"`
	ReceivedAt  time.Time           `json:"receivedAt"`
	Agents      []schemas.AgentBeat `json:"agents"`
}
