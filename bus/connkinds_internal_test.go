package bus

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Every identity Check registers maps to its kind; the process's own are
// internal.
func TestConnKind(t *testing.T) {
	for user, want := range map[string]string{
		"town:T1": ConnContainer, "recovery:T1": ConnRecovery, OpsUser: ConnOps, AdminUser: ConnAdmin,
		coordinatorUser: ConnInternal, stateUser: ConnInternal, opsCopyUser: ConnInternal, internalUser: ConnInternal, "": ConnInternal,
	} {
		require.Equal(t, want, connKind(user), user)
	}
}
