package schemas

import (
	"encoding/json"
	"time"

	"github.com/cockroachdb/errors"
)

// MaxBodySize is the largest body accepted on the bus (1 MiB).
const MaxBodySize = 1 << 20

// Type strings of every message (the `type` field of each body).
const (
	TypeAck              = "gastown.v1.ack"
	TypeTokenRequest     = "gastown.v1.token_request"
	TypeTokenRotation    = "gastown.v1.token_rotation"
	TypeStartAgent       = "gastown.v1.start_agent"
	TypeStartAgentResult = "gastown.v1.start_agent_result"
	TypeStopAgent        = "gastown.v1.stop_agent"
	TypeHeartbeat        = "gastown.v1.heartbeat"
	TypeTownEvent        = "gastown.v1.town_event"
)

// Message is a body that travels on the bus.
type Message interface {
	// MessageType is the body's `type` string.
	MessageType() string
	// Validate reports a missing required field or a bad identifier.
	Validate() error
	setType()
}

// ErrInvalidMessage marks every error of Decode and Validate.
var ErrInvalidMessage = errors.New("invalid message")

// Encode validates msg, stamps its `type` field and marshals it.
func Encode(msg Message) ([]byte, error) {
	msg.setType()
	if err := msg.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, errors.Wrapf(err, "encoding %s", msg.MessageType())
	}
	if len(b) > MaxBodySize {
		return nil, invalidf("%s body is %d bytes; at most %d are allowed", msg.MessageType(), len(b), MaxBodySize)
	}
	return b, nil
}

// Decode parses data into msg and validates it: the body must be at most
// MaxBodySize, JSON, carry msg's `type`, and have every required field.
// Unknown fields are ignored. On error msg may be partly filled; callers must
// not use it.
func Decode(data []byte, msg Message) error {
	if len(data) > MaxBodySize {
		return invalidf("body is %d bytes; at most %d are allowed", len(data), MaxBodySize)
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return errors.Mark(errors.Wrapf(err, "decoding %s", msg.MessageType()), ErrInvalidMessage)
	}
	if head.Type != msg.MessageType() {
		return invalidf("body type is %q; expected %q", head.Type, msg.MessageType())
	}
	if err := json.Unmarshal(data, msg); err != nil {
		return errors.Mark(errors.Wrapf(err, "decoding %s", msg.MessageType()), ErrInvalidMessage)
	}
	return msg.Validate()
}

func invalidf(format string, args ...any) error {
	return errors.Mark(errors.Newf(format, args...), ErrInvalidMessage)
}

func required(field, value string) error {
	if value == "" {
		return invalidf("%s is required", field)
	}
	return nil
}

func requiredTime(field string, t time.Time) error {
	if t.IsZero() {
		return invalidf("%s is required", field)
	}
	return nil
}

// optionalIDs is validIDs for identifiers that may be left out.
func optionalIDs(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			if err := validIDs(pairs[i], pairs[i+1]); err != nil {
				return err
			}
		}
	}
	return nil
}

// validIDs checks identifiers given as field name / value pairs.
func validIDs(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := ValidateID(pairs[i], pairs[i+1]); err != nil {
			return errors.Mark(err, ErrInvalidMessage)
		}
	}
	return nil
}

// Ack answers a request that has no richer reply. One that is not ok says
// why in Error and, from v1.1, names the refusal's Code (PROTOCOL.md,
// codes in acks); older senders may leave Code out.
type Ack struct {
	Type  string `json:"type"`
	OK    bool   `json:"ok"`
	Code  Code   `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

func (*Ack) MessageType() string { return TypeAck }
func (m *Ack) setType()          { m.Type = TypeAck }

// Validate checks that a refusal says why.
func (m *Ack) Validate() error {
	return validOutcome("ack", m.OK, m.Code, m.Error)
}

// Err is the refusal an Ack that is not ok carries, as a *Error (code
// internal when the sender named none), or nil for an ok Ack.
func (m *Ack) Err() error {
	return outcomeErr(m.OK, m.Code, m.Error)
}

// TokenRequest asks the coordinator for a fresh container token.
type TokenRequest struct {
	Type        string `json:"type"`
	TownID      string `json:"townId"`
	ContainerID string `json:"containerId"`
}

func (*TokenRequest) MessageType() string { return TypeTokenRequest }
func (m *TokenRequest) setType()          { m.Type = TypeTokenRequest }

// Validate checks the town id and that the container names itself.
func (m *TokenRequest) Validate() error {
	if err := validIDs("townId", m.TownID); err != nil {
		return err
	}
	return required("containerId", m.ContainerID)
}

// TokenRotation carries a container token. It is the only body that ever
// holds a token; its String method never prints it.
type TokenRotation struct {
	Type      string    `json:"type"`
	TownID    string    `json:"townId"`
	Token     string    `json:"token"`
	IssuedAt  time.Time `json:"issuedAt"`
	ExpiresAt time.Time `json:"expiresAt"`
	// RevokedBefore, when set, says tokens of the town issued before it are
	// revoked: a container whose connection still uses one moves to a new
	// connection at once, instead of at half its connection's life.
	RevokedBefore time.Time `json:"revokedBefore,omitzero"`
	// HeartbeatIntervalMs is the coordinator's heartbeat interval: a
	// container uses the newest one it received (v1.1). Zero means not said.
	HeartbeatIntervalMs int64 `json:"heartbeatIntervalMs,omitempty"`
}

// HeartbeatInterval is HeartbeatIntervalMs as a duration (zero when not said).
func (m *TokenRotation) HeartbeatInterval() time.Duration {
	return time.Duration(m.HeartbeatIntervalMs) * time.Millisecond
}

func (*TokenRotation) MessageType() string { return TypeTokenRotation }
func (m *TokenRotation) setType()          { m.Type = TypeTokenRotation }

// Validate checks every field is present and the times are ordered.
func (m *TokenRotation) Validate() error {
	if err := validIDs("townId", m.TownID); err != nil {
		return err
	}
	if err := required("token", m.Token); err != nil {
		return err
	}
	if err := requiredTime("issuedAt", m.IssuedAt); err != nil {
		return err
	}
	if err := requiredTime("expiresAt", m.ExpiresAt); err != nil {
		return err
	}
	if !m.ExpiresAt.After(m.IssuedAt) {
		return invalidf("expiresAt must be after issuedAt")
	}
	if m.HeartbeatIntervalMs < 0 {
		return invalidf("heartbeatIntervalMs must not be negative")
	}
	return nil
}

// String describes the rotation without its token.
func (m TokenRotation) String() string {
	return "token rotation for town " + m.TownID + " expiring " + m.ExpiresAt.UTC().Format(time.RFC3339)
}

// Roles of agents.
const (
	RoleMayor    = "mayor"
	RolePolecat  = "polecat"
	RoleRefinery = "refinery"
	RoleTriage   = "triage"
)

// ValidateRole checks an agent role.
func ValidateRole(role string) error {
	switch role {
	case RoleMayor, RolePolecat, RoleRefinery, RoleTriage:
		return nil
	}
	return invalidf("role %q is not one of mayor, polecat, refinery, triage", role)
}

// Workspace kinds.
const (
	WorkspaceGit   = "git"
	WorkspaceEmpty = "empty"
)

// Workspace says where an agent works.
type Workspace struct {
	Kind          string `json:"kind"`
	GitURL        string `json:"gitUrl,omitempty"`
	Branch        string `json:"branch,omitempty"`
	DefaultBranch string `json:"defaultBranch,omitempty"`
}

// Validate checks the kind and that a git workspace names its repository.
func (w Workspace) Validate() error {
	switch w.Kind {
	case WorkspaceEmpty:
		return nil
	case WorkspaceGit:
		return required("workspace.gitUrl", w.GitURL)
	}
	return invalidf("workspace.kind %q is not git or empty", w.Kind)
}

// StartAgent asks a container to start an agent run.
type StartAgent struct {
	Type      string            `json:"type"`
	TownID    string            `json:"townId"`
	RigID     string            `json:"rigId"`
	AgentID   string            `json:"agentId"`
	RunID     string            `json:"runId"`
	Role      string            `json:"role"`
	BeadID    string            `json:"beadId"`
	Prompt    string            `json:"prompt"`
	Workspace Workspace         `json:"workspace"`
	Env       map[string]string `json:"env,omitempty"`
}

func (*StartAgent) MessageType() string { return TypeStartAgent }
func (m *StartAgent) setType()          { m.Type = TypeStartAgent }

// Validate checks identifiers, role and workspace.
func (m *StartAgent) Validate() error {
	if err := validIDs("townId", m.TownID, "rigId", m.RigID, "agentId", m.AgentID, "runId", m.RunID); err != nil {
		return err
	}
	if m.BeadID != "" {
		if err := validIDs("beadId", m.BeadID); err != nil {
			return err
		}
	}
	if err := ValidateRole(m.Role); err != nil {
		return err
	}
	return m.Workspace.Validate()
}

// StartAgentResult answers a StartAgent.
type StartAgentResult struct {
	Type    string `json:"type"`
	OK      bool   `json:"ok"`
	AgentID string `json:"agentId"`
	RunID   string `json:"runId"`
	// Code names the refusal of a failed start (v1.1, as in an Ack).
	Code  Code   `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

func (*StartAgentResult) MessageType() string { return TypeStartAgentResult }
func (m *StartAgentResult) setType()          { m.Type = TypeStartAgentResult }

// Validate checks the ids and that a failure says why.
func (m *StartAgentResult) Validate() error {
	if err := validIDs("agentId", m.AgentID, "runId", m.RunID); err != nil {
		return err
	}
	return validOutcome("start result", m.OK, m.Code, m.Error)
}

// Err is the refusal a failed StartAgentResult carries, as a *Error (code
// internal when the sender named none), or nil when it started.
func (m *StartAgentResult) Err() error {
	return outcomeErr(m.OK, m.Code, m.Error)
}

// StopAgent asks a container to stop an agent run.
type StopAgent struct {
	Type    string `json:"type"`
	AgentID string `json:"agentId"`
	RunID   string `json:"runId"`
	Reason  string `json:"reason"`
}

func (*StopAgent) MessageType() string { return TypeStopAgent }
func (m *StopAgent) setType()          { m.Type = TypeStopAgent }

// Validate checks the ids.
func (m *StopAgent) Validate() error { return validIDs("agentId", m.AgentID, "runId", m.RunID) }

// Agent run statuses in a heartbeat.
const (
	RunStarting = "starting"
	RunRunning  = "running"
	RunExited   = "exited"
)

// AgentBeat is one agent's line in a heartbeat.
type AgentBeat struct {
	AgentID        string    `json:"agentId"`
	RunID          string    `json:"runId"`
	Status         string    `json:"status"`
	LastActivityAt time.Time `json:"lastActivityAt"`
}

// AgentExit reports an agent run that ended.
type AgentExit struct {
	AgentID  string    `json:"agentId"`
	RunID    string    `json:"runId"`
	ExitCode int       `json:"exitCode"`
	EndedAt  time.Time `json:"endedAt"`
}

// Heartbeat is the container's periodic report of every agent it runs.
type Heartbeat struct {
	Type        string      `json:"type"`
	TownID      string      `json:"townId"`
	ContainerID string      `json:"containerId"`
	SentAt      time.Time   `json:"sentAt"`
	Agents      []AgentBeat `json:"agents"`
	Exits       []AgentExit `json:"exits,omitempty"`
}

func (*Heartbeat) MessageType() string { return TypeHeartbeat }
func (m *Heartbeat) setType()          { m.Type = TypeHeartbeat }

// Validate checks the town, the sender and every agent line.
func (m *Heartbeat) Validate() error {
	if err := validIDs("townId", m.TownID); err != nil {
		return err
	}
	if err := required("containerId", m.ContainerID); err != nil {
		return err
	}
	if err := requiredTime("sentAt", m.SentAt); err != nil {
		return err
	}
	for _, a := range m.Agents {
		if err := validIDs("agents.agentId", a.AgentID, "agents.runId", a.RunID); err != nil {
			return err
		}
		switch a.Status {
		case RunStarting, RunRunning, RunExited:
		default:
			return invalidf("agent %s status %q is not starting, running or exited", a.AgentID, a.Status)
		}
	}
	for _, e := range m.Exits {
		if err := validIDs("exits.agentId", e.AgentID, "exits.runId", e.RunID); err != nil {
			return err
		}
	}
	return nil
}

// Event kinds published on …events.
const (
	EventAgentDead     = "agent.dead"
	EventBeadClosed    = "bead.closed"
	EventConvoyLanded  = "convoy.landed"
	EventTokenRotated  = "token.rotated"
	EventTokenRevoked  = "token.revoked"
	EventRotationError = "token.rotation_failed"
)

// TownEvent tells observers what happened in a town.
type TownEvent struct {
	Type    string         `json:"type"`
	TownID  string         `json:"townId"`
	Kind    string         `json:"kind"`
	At      time.Time      `json:"at"`
	Subject string         `json:"subject"`
	Detail  map[string]any `json:"detail,omitempty"`
}

func (*TownEvent) MessageType() string { return TypeTownEvent }
func (m *TownEvent) setType()          { m.Type = TypeTownEvent }

// Validate checks the town, kind and time.
func (m *TownEvent) Validate() error {
	if err := validIDs("townId", m.TownID); err != nil {
		return err
	}
	if err := required("kind", m.Kind); err != nil {
		return err
	}
	return requiredTime("at", m.At)
}

// validOutcome checks the outcome fields an Ack and a StartAgentResult
// share: a failure says why, a code is a protocol code, and only a
// failure carries one. what names the message in the error.
func validOutcome(what string, ok bool, code Code, msg string) error {
	switch {
	case !ok && msg == "":
		return invalidf("a failed %s must say why in error", what)
	case code != "" && !code.Known():
		return invalidf("%s code %q is not a protocol code", what, code)
	case ok && code != "":
		return invalidf("an ok %s carries no code", what)
	}
	return nil
}

// outcomeErr is the refusal such an outcome carries, as a *Error (code
// internal when the sender named none), or nil when ok.
func outcomeErr(ok bool, code Code, msg string) error {
	if ok {
		return nil
	}
	if code == "" {
		code = CodeInternal
	}
	return &Error{Code: code, Message: msg}
}
