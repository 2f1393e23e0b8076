package schemas

import (
	"slices"
	"strings"
	"time"
)

// Administration methods that list, show and remove what the create/add
// methods make.
const (
	AdminTownList   = "town.list"
	AdminTownShow   = "town.show"
	AdminTownDelete = "town.delete"
	AdminRigList    = "rig.list"
	AdminRigRemove  = "rig.remove"
	AdminBeadList   = "bead.list"
	AdminBeadShow   = "bead.show"
	AdminConvoyList = "convoy.list"
	AdminConvoyShow = "convoy.show"
)

// BeadStatuses are the statuses a bead can have; closed and failed are final.
var BeadStatuses = []string{"open", "in_progress", "in_review", "closed", "failed"}

// BeadTypes are the types a bead can have.
var BeadTypes = []string{"issue", "message", "merge_request", "convoy", "escalation"}

// TownList lists every town; it takes no fields.
type TownList struct{}

// Validate accepts the empty body.
func (TownList) Validate() error { return nil }

// TownSummary is one town in town.list and town.show.
type TownSummary struct {
	TownID    string    `json:"townId"`
	UserID    string    `json:"userId"`
	CreatedAt time.Time `json:"createdAt"`
	// ContainerConnected: a heartbeat of the town's container was received
	// within the last three heartbeat intervals.
	ContainerConnected bool      `json:"containerConnected"`
	LastHeartbeatAt    time.Time `json:"lastHeartbeatAt,omitzero"`
	Rigs               int       `json:"rigs"`
	Agents             int       `json:"agents"`
	WorkingAgents      int       `json:"workingAgents"`
	// Beads counts the town's beads by status.
	Beads map[string]int `json:"beads"`
}

// TownDelete deletes a town and every record of it. Without Force it is
// refused while the town's container is connected or an agent is working.
type TownDelete struct {
	TownID string `json:"townId"`
	Force  bool   `json:"force,omitempty"`
}

// Validate checks the town id.
func (r TownDelete) Validate() error { return validIDs("townId", r.TownID) }

// TownDeleteResult says what town.delete removed.
type TownDeleteResult struct {
	TownID string `json:"townId"`
	// RevokedBefore: every token of the town issued before it is refused;
	// the revocation is kept after the town is gone.
	RevokedBefore time.Time `json:"revokedBefore"`
	// Closed is how many connections were closed (-1 on an existing cluster).
	Closed int `json:"closed"`
	// Deleted counts the records removed, by bucket.
	Deleted map[string]int `json:"deleted"`
}

// RigRef names a rig of a town.
type RigRef struct {
	TownID string `json:"townId"`
	RigID  string `json:"rigId"`
}

// Validate checks the ids.
func (r RigRef) Validate() error { return validIDs("townId", r.TownID, "rigId", r.RigID) }

// RigRemove removes a rig and its agents. Without Force it is refused while
// an agent of the rig is working or a bead of the rig is not final.
type RigRemove struct {
	TownID string `json:"townId"`
	RigID  string `json:"rigId"`
	Force  bool   `json:"force,omitempty"`
}

// Validate checks the ids.
func (r RigRemove) Validate() error { return validIDs("townId", r.TownID, "rigId", r.RigID) }

// RigRemoveResult says what rig.remove removed.
type RigRemoveResult struct {
	TownID string `json:"townId"`
	RigID  string `json:"rigId"`
	// Agents are the agents of the rig that were removed.
	Agents []string `json:"agents"`
	// FailedBeads are the beads of the rig that were not final and were
	// failed (only with force).
	FailedBeads []string `json:"failedBeads,omitempty"`
}

// BeadList lists a town's beads, optionally only those of a status, type
// or rig.
type BeadList struct {
	TownID string `json:"townId"`
	Status string `json:"status,omitempty"`
	Type   string `json:"type,omitempty"`
	RigID  string `json:"rigId,omitempty"`
}

// Validate checks the ids and that the filters name a known status and type.
func (r BeadList) Validate() error {
	if err := validIDs("townId", r.TownID); err != nil {
		return err
	}
	if err := optionalIDs("rigId", r.RigID); err != nil {
		return err
	}
	if r.Status != "" && !slices.Contains(BeadStatuses, r.Status) {
		return invalidf("status %q is not one of %s", r.Status, strings.Join(BeadStatuses, ", "))
	}
	if r.Type != "" && !slices.Contains(BeadTypes, r.Type) {
		return invalidf("type %q is not one of %s", r.Type, strings.Join(BeadTypes, ", "))
	}
	return nil
}

// TownBeadRef names a bead of a town (bead.show).
type TownBeadRef struct {
	TownID string `json:"townId"`
	BeadID string `json:"beadId"`
}

// Validate checks the ids.
func (r TownBeadRef) Validate() error { return validIDs("townId", r.TownID, "beadId", r.BeadID) }

// ConvoyRef names a convoy of a town (convoy.show).
type ConvoyRef struct {
	TownID   string `json:"townId"`
	ConvoyID string `json:"convoyId"`
}

// Validate checks the ids.
func (r ConvoyRef) Validate() error { return validIDs("townId", r.TownID, "convoyId", r.ConvoyID) }
