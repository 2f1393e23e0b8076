package agentclient_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestHeartbeatIntervalIsTheCoordinators: a container told nothing beats
// at its own interval; once a TokenRotation carries heartbeatIntervalMs it
// beats at that one.
func TestHeartbeatIntervalIsTheCoordinators(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: 40 * time.Millisecond})
	const town = "HB"
	src := startContainer(t, h, town, time.Hour)
	require.Equal(t, 40*time.Millisecond, src.HeartbeatInterval(), "token.get's answer carries the interval")
	r, err := agentclient.NewRunner(town, agentclient.RunnerConfig{WorkDir: t.TempDir()})
	require.NoError(t, err)
	defer r.Close()
	got := make(chan *nats.Msg, 64)
	sub, err := h.Conn().ChanSubscribe("gastown.town."+town+".heartbeat", got)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		agentclient.RunHeartbeats(ctx, src, r, "c-"+town, time.Hour, nil) // its own: an hour
	}()
	defer func() { cancel(); <-stopped }()
	for beats := 0; beats < 4; beats++ {
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d heartbeats: the coordinator's 40ms interval was not used", beats)
		}
	}
	var res schemas.RotateResult
	adminCall(t, h, schemas.AdminTokenRotate, town, &res)
	require.True(t, res.Acknowledged)
	require.Equal(t, 40*time.Millisecond, src.HeartbeatInterval(), "a pushed rotation carries it too")
}

// TestContainerRefusalsCarryCodes: the container's refusals of dispatch,
// control.stop and control.<other> are not ok with a code and the
// Gastown-Error header.
func TestContainerRefusalsCarryCodes(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: 50 * time.Millisecond})
	const town = "RC"
	runContainer(t, h, town, time.Second)
	t0, err := schemas.ForTown(town)
	require.NoError(t, err)
	request := func(subject string, msg schemas.Message) *nats.Msg {
		data := []byte("not json")
		if msg != nil {
			data, err = schemas.Encode(msg)
			require.NoError(t, err)
		}
		m, err := h.Conn().Request(subject, data, 10*time.Second)
		require.NoError(t, err)
		return m
	}
	start := func(town string) schemas.Message {
		return &schemas.StartAgent{TownID: town, RigID: "r", AgentID: "m", RunID: "r1", Role: schemas.RoleMayor,
			Workspace: schemas.Workspace{Kind: schemas.WorkspaceEmpty}}
	}
	for _, tc := range []struct {
		name    string
		subject string
		msg     schemas.Message
		result  bool // a StartAgentResult, else an Ack
		code    schemas.Code
	}{
		{"a malformed dispatch", t0.Dispatch(), nil, true, schemas.CodeInvalidArgument},
		{"a dispatch for another town", t0.Dispatch(), start("other"), true, schemas.CodePermissionDenied},
		{"a malformed stop", t0.ControlStop(), nil, false, schemas.CodeInvalidArgument},
		{"a stop of an agent with no run", t0.ControlStop(), &schemas.StopAgent{AgentID: "nobody", RunID: "r1"}, false, schemas.CodeNotFound},
		{"an undefined control request", "gastown.town." + town + ".control.pause", &schemas.StopAgent{AgentID: "m", RunID: "r1"}, false, schemas.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := request(tc.subject, tc.msg)
			require.Equal(t, string(tc.code), m.Header.Get(schemas.ErrorHeader))
			if tc.result {
				var res schemas.StartAgentResult
				require.NoError(t, schemas.Decode(m.Data, &res))
				require.False(t, res.OK)
				require.Equal(t, tc.code, res.Code)
				require.NotEmpty(t, res.Error)
				return
			}
			var ack schemas.Ack
			require.NoError(t, schemas.Decode(m.Data, &ack))
			require.False(t, ack.OK)
			require.Equal(t, tc.code, ack.Code)
			require.NotEmpty(t, ack.Error)
		})
	}
}

// TestPushedTokenRefusals: a rotation for another town, a token of
// another town, an expired token or no container token at all is refused
// with a code, and the token file keeps the token it held.
func TestPushedTokenRefusals(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	const town = "PT"
	file := t.TempDir() + "/token"
	src := startContainer(t, h, town, time.Hour, func(c *agentclient.Config) { c.TokenFile = file })
	held, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, src.Token(), string(held))
	mint := func(town string, ttl time.Duration) (string, schemas.ContainerClaims) {
		tok, claims, err := h.Issuer.MintContainer(town, "", ttl)
		require.NoError(t, err)
		return tok, claims
	}
	other, oc := mint("elsewhere", time.Hour)
	expired, ec := mint(town, time.Millisecond)
	require.Eventually(t, func() bool { return time.Now().After(ec.Expires()) }, 5*time.Second, time.Millisecond)
	for _, tc := range []struct {
		name string
		rot  schemas.TokenRotation
		code schemas.Code
	}{
		{"a rotation for another town", schemas.TokenRotation{TownID: "elsewhere", Token: other, IssuedAt: oc.Issued(), ExpiresAt: oc.Expires()}, schemas.CodePermissionDenied},
		{"another town's token", schemas.TokenRotation{TownID: town, Token: other, IssuedAt: oc.Issued(), ExpiresAt: oc.Expires()}, schemas.CodePermissionDenied},
		{"an expired token", schemas.TokenRotation{TownID: town, Token: expired, IssuedAt: ec.Issued(), ExpiresAt: ec.Expires()}, schemas.CodeUnauthenticated},
		{"not a token", schemas.TokenRotation{TownID: town, Token: "x.y.z", IssuedAt: ec.Issued(), ExpiresAt: ec.Expires()}, schemas.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := schemas.Encode(&tc.rot)
			require.NoError(t, err)
			m, err := h.Conn().Request("gastown.town."+town+".token", data, 10*time.Second)
			require.NoError(t, err)
			require.Equal(t, string(tc.code), m.Header.Get(schemas.ErrorHeader))
			var ack schemas.Ack
			require.NoError(t, schemas.Decode(m.Data, &ack))
			require.False(t, ack.OK)
			require.Equal(t, tc.code, ack.Code)
			now, err := os.ReadFile(file)
			require.NoError(t, err)
			require.Equal(t, string(held), string(now), "nothing written to the token file")
			require.Equal(t, string(held), src.Token())
		})
	}
}

// TestAgentEnvIsAnAllowList: an agent gets the run's variables, PATH,
// HOME, LANG, TZ, the dispatch's env and what the operator passes (never a
// GASTOWN_ variable), and nothing else of the container's environment.
func TestAgentEnvIsAnAllowList(t *testing.T) {
	container := map[string]string{
		"PATH": "/bin", "HOME": "/home/c", "LANG": "C.UTF-8", "TZ": "UTC", "EDITOR": "vi", "PASSED": "yes",
		"GASTOWN_CONTAINER_TOKEN": "secret-token", "GASTOWN_JWT_SECRET": "s", "GASTOWN_AGENT_COMMAND": "x",
		"AWS_SECRET_ACCESS_KEY": "k", "GITHUB_TOKEN": "t",
	}
	req := schemas.StartAgent{TownID: "T", RigID: "r", AgentID: "a", RunID: "r1", Role: schemas.RolePolecat,
		Prompt: "do it", Env: map[string]string{"EXTRA": "1"}}
	env := agentclient.AgentEnv(func(k string) string { return container[k] },
		[]string{"PASSED", "GITHUB_TOKEN", "GASTOWN_JWT_SECRET"}, req, "nats://bus:4222", "/w/token")
	slices.Sort(env)
	require.Equal(t, []string{
		"EXTRA=1", "GASTOWN_AGENT_ID=a", "GASTOWN_AGENT_ROLE=polecat", "GASTOWN_BEAD_ID=", "GASTOWN_NATS_URL=nats://bus:4222",
		"GASTOWN_PROMPT=do it", "GASTOWN_RIG_ID=r", "GASTOWN_RUN_ID=r1", "GASTOWN_TOKEN_FILE=/w/token", "GASTOWN_TOWN_ID=T",
		"GITHUB_TOKEN=t", "HOME=/home/c", "LANG=C.UTF-8", "PASSED=yes", "PATH=/bin", "TZ=UTC",
	}, env)
	for _, bad := range [][]string{{"GASTOWN_CONTAINER_TOKEN"}, {"GASTOWN_JWT_SECRET"}, {"A=B"}, {""}} {
		err := agentclient.ValidatePassEnv(bad)
		require.Error(t, err, "%q", bad)
		require.False(t, strings.Contains(err.Error(), "secret-token"))
	}
	require.NoError(t, agentclient.ValidatePassEnv([]string{"EDITOR", "GITHUB_TOKEN"}), "the operator's own choice")
}
