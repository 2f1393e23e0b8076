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
	TownID        string       `json:"townId"`
	RevokedBefore time.Time    `json:"revokedBefore"`
	Rotation      RotateResult `json:"rotation"`
	// Disconnected counts connections closed because they used a revoked
	// token (only on the embedded server).
	Disconnected int `json:"disconnected"`
}
