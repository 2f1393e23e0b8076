package bus

import (
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
)

// ContainerPermissions are what a town's container (and every agent in it)
// may do: publish heartbeats, RPC requests, token requests and replies;
// subscribe to its token pushes, dispatches, control requests and its own
// inbox. Everything for its own town only.
func ContainerPermissions(t schemas.Town) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{
			Allow: []string{t.Heartbeat(), t.RPCAll(), t.TokenGet()},
		},
		Subscribe: &server.SubjectPermission{
			Allow: []string{t.Token(), t.Dispatch(), t.Control(), t.Inbox() + ".>"},
		},
		// Replies to the requests it receives (token acks, dispatch results).
		Response: &server.ResponsePermission{MaxMsgs: 1},
	}
}

// RecoveryPermissions are what a container whose token expired within the
// recovery window may do: ask for a fresh token, and hear the answer.
func RecoveryPermissions(t schemas.Town) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{t.TokenGet()}},
		Subscribe: &server.SubjectPermission{Allow: []string{t.Inbox() + ".>"}},
	}
}

// privateInboxes are the inboxes that can carry a token or an admin reply;
// operators never see them even though they may subscribe to _INBOX.>.
var privateInboxes = []string{
	schemas.InboxRoot + ".>",
	schemas.AdminInbox + ".>",
	schemas.CoordinatorInbox + ".>",
}

// OpsPermissions let an operator watch every town's heartbeats and events
// and read the state buckets with the nats CLI, and nothing that can carry a
// token: not …token, not …rpc.>, not …dispatch, not a container's inbox.
func OpsPermissions() *server.Permissions {
	pub := []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.NAMES",
		"$JS.API.STREAM.LIST",
	}
	for _, b := range schemas.StateBuckets {
		stream := "KV_" + b
		pub = append(pub,
			"$JS.API.STREAM.INFO."+stream,
			"$JS.API.STREAM.MSG.GET."+stream,
			"$JS.API.DIRECT.GET."+stream,
			"$JS.API.DIRECT.GET."+stream+".>",
			"$JS.API.CONSUMER.CREATE."+stream,
			"$JS.API.CONSUMER.CREATE."+stream+".>",
			"$JS.API.CONSUMER.INFO."+stream+".>",
			"$JS.API.CONSUMER.MSG.NEXT."+stream+".>",
			"$JS.FC."+stream+".>",
			"$JS.ACK."+stream+".>",
		)
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{
			Allow: []string{
				schemas.AllTowns.Heartbeat(),
				schemas.AllTowns.Events(),
				"_INBOX.>",
			},
			Deny: privateInboxes,
		},
	}
}

// AdminPermissions let the administrator call gastown.admin.> and hear the
// replies on its own inbox, and nothing else.
func AdminPermissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{schemas.AdminAll}},
		Subscribe: &server.SubjectPermission{Allow: []string{schemas.AdminInbox + ".>"}},
	}
}
