package schemas_test

import (
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

func TestAdminVerbBodies(t *testing.T) {
	for name, tc := range map[string]struct {
		body interface{ Validate() error }
		ok   bool
	}{
		"town list":             {schemas.TownList{}, true},
		"town delete":           {schemas.TownDelete{TownID: "T", Force: true}, true},
		"town delete, bad town": {schemas.TownDelete{TownID: "a.b"}, false},
		"rig remove":            {schemas.RigRemove{TownID: "T", RigID: "r"}, true},
		"rig remove, no rig":    {schemas.RigRemove{TownID: "T"}, false},
		"bead list":             {schemas.BeadList{TownID: "T", Status: "open", Type: "issue", RigID: "r"}, true},
		"bead list, bad status": {schemas.BeadList{TownID: "T", Status: "done"}, false},
		"bead list, bad type":   {schemas.BeadList{TownID: "T", Type: "task"}, false},
		"bead list, bad rig":    {schemas.BeadList{TownID: "T", RigID: "r*"}, false},
		"bead show":             {schemas.TownBeadRef{TownID: "T", BeadID: "b"}, true},
		"bead show, no bead":    {schemas.TownBeadRef{TownID: "T"}, false},
		"convoy show":           {schemas.ConvoyRef{TownID: "T", ConvoyID: "c"}, true},
		"convoy show, no town":  {schemas.ConvoyRef{ConvoyID: "c"}, false},
	} {
		t.Run(name, func(t *testing.T) {
			if err := tc.body.Validate(); tc.ok {
				require.NoError(t, err)
			} else {
				require.True(t, errors.Is(err, schemas.ErrInvalidMessage), "%v", err)
			}
		})
	}
}
