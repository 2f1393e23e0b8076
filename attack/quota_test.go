package attack_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// Hoarding: a town stores as much as it can (the seed kept 250 mails of
// 900 KiB in 2.6 s). A town at a cap gets resource_exhausted, without a
// retry hint since waiting does not help; nothing of the refused write is
// stored; other towns notice nothing.

// quotaLimits are small caps, so the tests reach them quickly.
var quotaLimits = coordinator.Limits{MaxBeads: 5, MaxStoredBytes: 4096, MaxBeadBytes: 1024}

// atCap checks err is a cap's refusal.
func atCap(t *testing.T, err error, what string) {
	t.Helper()
	require.ErrorIs(t, err, schemas.ErrResourceExhausted, what)
	require.Zero(t, schemas.RetryAfterOf(err), "%s: no retry hint for a cap", what)
}

// TestHoardingOneBigBody: a bead, mail, bead update or checkpoint note
// over the town's MaxBeadBytes (well under the bus's 1 MiB) is refused and
// nothing is stored.
func TestHoardingOneBigBody(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{Limits: quotaLimits})
	adm := adminConn(t, h)
	makeTowns(t, adm, "alpha")
	nc, tok := townConn(t, h, "alpha")
	big := strings.Repeat("x", quotaLimits.MaxBeadBytes+1)

	atCap(t, adminCall(adm, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "alpha", BeadID: "big", Title: "big", Body: big}, nil), "admin bead")
	atCap(t, tool(t, nc, "alpha", tok, schemas.ToolMailSend, schemas.MailSend{To: coordinator.MayorID, Subject: "big", Body: big}, nil), "mail")
	atCap(t, tool(t, nc, "alpha", tok, schemas.ToolEscalate, schemas.Escalate{Title: "big", Body: big}, nil), "escalation")
	atCap(t, tool(t, nc, "alpha", tok, schemas.ToolCheckpoint, schemas.Checkpoint{Note: big}, nil), "checkpoint note")
	require.Empty(t, status(t, adm, "alpha").Beads, "nothing of a refused bead is stored")
	require.Empty(t, agentCheckpoint(t, adm, "alpha"), "nor of a refused note")

	// A bead that fits cannot be grown past it either.
	require.NoError(t, adminCall(adm, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "alpha", BeadID: "b", Title: "small", Body: "small"}, nil))
	atCap(t, tool(t, nc, "alpha", tok, schemas.ToolBeadUpdate, schemas.BeadUpdate{BeadID: "b", Body: big}, nil), "bead update")
	beads := status(t, adm, "alpha").Beads
	require.Len(t, beads, 1)
	require.Equal(t, "small", beads[0].Body, "the refused update changed nothing")

	// Just under the cap is fine; over the bus's 1 MiB is still
	// invalid_argument, the wire's limit.
	fits := strings.Repeat("y", quotaLimits.MaxBeadBytes-len("fits"))
	require.NoError(t, tool(t, nc, "alpha", tok, schemas.ToolMailSend, schemas.MailSend{To: coordinator.MayorID, Subject: "fits", Body: fits}, nil))
	require.ErrorIs(t, tool(t, nc, "alpha", tok, schemas.ToolCheckpoint, schemas.Checkpoint{Note: strings.Repeat("z", schemas.MaxBodySize)}, nil), schemas.ErrInvalidArgument)
}

// TestHoardingManyBeads: a town reaches its bead count; the next bead, by
// the admin or a tool, concurrent or not, is refused; the count holds
// across a restart; another town creates its own beads meanwhile.
func TestHoardingManyBeads(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{Limits: quotaLimits})
	adm := adminConn(t, h)
	makeTowns(t, adm, "alpha", "beta")
	nc, tok := townConn(t, h, "alpha")

	// Many at once: exactly the cap's worth are stored.
	var mu sync.Mutex
	var ok, refused int
	var wg sync.WaitGroup
	for i := range 4 * quotaLimits.MaxBeads {
		wg.Go(func() {
			err := adminCall(adm, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "alpha", BeadID: fmt.Sprintf("a%d", i), Title: "t"}, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case schemas.CodeOf(err) == schemas.CodeResourceExhausted:
				refused++
			default:
				t.Errorf("bead a%d: %v", i, err)
			}
		})
	}
	wg.Wait()
	require.Equal(t, quotaLimits.MaxBeads, ok, "exactly the cap is stored")
	require.Equal(t, 3*quotaLimits.MaxBeads, refused)
	kept := status(t, adm, "alpha").Beads
	require.Len(t, kept, quotaLimits.MaxBeads)

	atCap(t, tool(t, nc, "alpha", tok, schemas.ToolMailSend, schemas.MailSend{To: coordinator.MayorID, Subject: "one more"}, nil), "mail at the cap")
	one := kept[0].BeadID // whichever of the concurrent creates got in
	atCap(t, tool(t, nc, "alpha", tok, schemas.ToolConvoyCreate, schemas.ConvoyCreate{Title: "c", Beads: []string{one}}, nil), "convoy at the cap")
	for _, b := range status(t, adm, "alpha").Beads {
		require.Empty(t, b.ConvoyID, "a refused convoy joins no bead")
	}

	// Another town is not affected.
	for i := range quotaLimits.MaxBeads {
		require.NoError(t, adminCall(adm, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "beta", BeadID: fmt.Sprintf("b%d", i), Title: "t"}, nil))
	}

	// The count is the stored state's, not this process's memory.
	h.Restart(nil)
	adm = adminConn(t, h)
	atCap(t, adminCall(adm, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "alpha", BeadID: "after-restart", Title: "t"}, nil), "after a restart")
	require.Len(t, status(t, adm, "alpha").Beads, quotaLimits.MaxBeads)
}

// TestHoardingManyBytes: a town's beads together reach MaxStoredBytes; the
// next mail is refused, another town's is not.
func TestHoardingManyBytes(t *testing.T) {
	limits := quotaLimits
	limits.MaxBeads = 100
	h := coordinatortest.Start(t, coordinator.Config{Limits: limits})
	adm := adminConn(t, h)
	makeTowns(t, adm, "alpha", "beta")
	alpha, alphaTok := townConn(t, h, "alpha")
	beta, betaTok := townConn(t, h, "beta")
	body := strings.Repeat("m", 1000)
	mail := func(i int) schemas.MailSend {
		return schemas.MailSend{To: coordinator.MayorID, Subject: fmt.Sprintf("m%d", i), Body: body}
	}
	stored := 0
	for i := 0; ; i++ {
		err := tool(t, alpha, "alpha", alphaTok, schemas.ToolMailSend, mail(i), nil)
		if err != nil {
			atCap(t, err, "mail over the byte cap")
			break
		}
		stored++
		require.Less(t, stored, 100, "the byte cap never refused")
	}
	require.Equal(t, int(limits.MaxStoredBytes)/1002, stored, "as many 1,002-byte mails as fit in the cap")
	require.Len(t, status(t, adm, "alpha").Beads, stored)
	// Reading mail closes it, but it stays stored: still at the cap.
	require.NoError(t, tool(t, alpha, "alpha", alphaTok, schemas.ToolMailCheck, nil, nil))
	atCap(t, tool(t, alpha, "alpha", alphaTok, schemas.ToolMailSend, mail(99), nil), "read mail still counts")
	require.NoError(t, tool(t, beta, "beta", betaTok, schemas.ToolMailSend, mail(0), nil), "another town is not affected")
}
