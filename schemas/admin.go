package schemas

import "time"

// Administration methods (gastown.admin.<method>). Bodies are JSON; replies
// are the Reply envelope, like RPC.
const (
	AdminTokenRotate = "token.rotate"
	AdminTokenRevoke = "token.revoke"
)

// TownRequest names the town an admin method acts on.
type TownRequest struct {
	TownID string `json:"townId"`
}

// Validate checks the town id.
func (r TownRequest) Validate() error { return validIDs("townId", r.TownID) }

// RotateResult says what a forced rotation did. It never holds the token.
type RotateResult struct {
	TownID string `json:"townId"`
	// Acknowledged: a container received and stored the new token.
	Acknowledged bool `json:"acknowledged"`
	// Idle: no container of the town is connected; nothing was sent.
	Idle      bool      `json:"idle"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// Error says why a connected container did not acknowledge.
	Error string `json:"error,omitempty"`
}

// RevokeResult says what a revocation did.
type RevokeResult struct {
	TownID        string    `json:"townId"`
	RevokedBefore time.Time `json:"revokedBefore"`
	// Closed is how many connections using a revoked token were closed
	// before the answer; -1 where the coordinator cannot close them (an
	// existing cluster).
	Closed int `json:"closed"`
	// Next says what to do now: no token is pushed after a revocation, so
	// the container is restarted with a freshly minted bootstrap token.
	Next string `json:"next"`
}

// More administration methods.
const (
	AdminTownCreate = "town.create"
	AdminRigAdd     = "rig.add"
	AdminBeadCreate = "bead.create"
	AdminSling      = "sling"
	AdminStatus     = "status"
	AdminConvoy     = "convoy.create"
)

// AdminMethods lists every administration method: the coordinator answers
// exactly these on gastown.admin.<method>.
var AdminMethods = []string{
	AdminTokenRotate, AdminTokenRevoke, AdminTownCreate, AdminRigAdd, AdminBeadCreate,
	AdminSling, AdminStatus, AdminConvoy,
	AdminTownList, AdminTownShow, AdminTownDelete, AdminRigList, AdminRigRemove,
	AdminBeadList, AdminBeadShow, AdminConvoyList, AdminConvoyShow,
}

// AdminConvoyCreate creates a convoy in a town (the mayor's convoy.create,
// for the administrator).
type AdminConvoyCreate struct {
	TownID string `json:"townId"`
	ConvoyCreate
}

// Validate checks the town and the convoy.
func (r AdminConvoyCreate) Validate() error {
	if err := validIDs("townId", r.TownID); err != nil {
		return err
	}
	return r.ConvoyCreate.Validate()
}

// TownCreate creates a town with its owner (the town id when empty).
type TownCreate struct {
	TownID string `json:"townId"`
	UserID string `json:"userId,omitempty"`
}

// Validate checks the ids.
func (r TownCreate) Validate() error {
	if err := validIDs("townId", r.TownID); err != nil {
		return err
	}
	if r.UserID != "" {
		return validIDs("userId", r.UserID)
	}
	return nil
}

// RigAdd adds a git repository to a town.
type RigAdd struct {
	TownID        string `json:"townId"`
	RigID         string `json:"rigId"`
	GitURL        string `json:"gitUrl"`
	DefaultBranch string `json:"defaultBranch,omitempty"`
}

// Validate checks the ids and the URL.
func (r RigAdd) Validate() error {
	if err := validIDs("townId", r.TownID, "rigId", r.RigID); err != nil {
		return err
	}
	return required("gitUrl", r.GitURL)
}

// BeadCreate creates a bead; its id is made when empty.
type BeadCreate struct {
	TownID string `json:"townId"`
	BeadID string `json:"beadId,omitempty"`
	Type   string `json:"type,omitempty"`
	RigID  string `json:"rigId,omitempty"`
	Title  string `json:"title"`
	Body   string `json:"body,omitempty"`
}

// Validate checks the ids and that the bead has a title.
func (r BeadCreate) Validate() error {
	if err := validIDs("townId", r.TownID); err != nil {
		return err
	}
	for _, p := range [][2]string{{"beadId", r.BeadID}, {"rigId", r.RigID}} {
		if p[1] != "" {
			if err := validIDs(p[0], p[1]); err != nil {
				return err
			}
		}
	}
	return required("title", r.Title)
}

// Sling hooks a bead to a polecat of a rig (an idle one, or a new one from
// the name pool) and dispatches it. AgentID picks the polecat.
type Sling struct {
	TownID  string `json:"townId"`
	BeadID  string `json:"beadId"`
	RigID   string `json:"rigId,omitempty"`
	AgentID string `json:"agentId,omitempty"`
}

// Validate checks the ids.
func (r Sling) Validate() error {
	if err := validIDs("townId", r.TownID, "beadId", r.BeadID); err != nil {
		return err
	}
	for _, p := range [][2]string{{"rigId", r.RigID}, {"agentId", r.AgentID}} {
		if p[1] != "" {
			if err := validIDs(p[0], p[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

// SlingResult names the polecat the bead was hooked to.
type SlingResult struct {
	TownID     string `json:"townId"`
	BeadID     string `json:"beadId"`
	AgentID    string `json:"agentId"`
	Dispatched bool   `json:"dispatched"`
	// Error says why the dispatch did not happen yet (patrol retries it).
	Error string `json:"error,omitempty"`
}
