package bus

import (
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
)

// queueOnly is a subscribe permission for subject in the container queue
// group only: the server refuses a plain subscription, so a second
// subscriber cannot hear every message the container is sent.
func queueOnly(subject string) string { return subject + " " + schemas.ContainerQueue }

// ContainerPermissions are what a town's container (and every agent in it)
// may do: publish heartbeats, RPC requests (to the queue group's subjects
// and to the lease holder's), token requests and replies;
// subscribe, in the container queue group, to its token pushes, dispatches
// and control requests, and to its own inbox. Everything for its own town
// only.
func ContainerPermissions(t schemas.Town) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{
			Allow: []string{t.Heartbeat(), t.RPCAll(), t.HolderRPCAll(), t.TokenGet()},
		},
		Subscribe: &server.SubjectPermission{
			Allow: []string{queueOnly(t.Token()), queueOnly(t.Dispatch()), queueOnly(t.Control()), t.Inbox() + ".>"},
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

// CoordinatorPermissions are the coordinator's own control connection's:
// it answers the requests of containers and the administrator (on their
// inboxes only, on the queue group's RPC subjects and on the lease
// holder's), pushes tokens, dispatches, stops agents, publishes events,
// and hears replies on its own inbox. It cannot publish on an RPC, admin or
// heartbeat subject, nor anywhere in the state account, so not even a bug
// can make it write state for someone else.
func CoordinatorPermissions() *server.Permissions {
	all := schemas.AllTowns
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			all.Token(), all.Dispatch(), all.Control(), all.Events(),
			schemas.InboxRoot + ".>", schemas.AdminInbox + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			all.TokenGet(), all.RPCAll(), all.HolderRPCAll(), all.Heartbeat(), schemas.AdminAll,
			schemas.CoordinatorInbox + ".>",
		}},
	}
}

// StatePermissions are the coordinator's state connection's, in the state
// account: the JetStream API, KV writes, acknowledgements and flow
// control, and its own inbox.
func StatePermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{"$JS.API.>", "$KV.>", "$JS.ACK.>", "$JS.FC.>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			schemas.CoordinatorInbox + ".>",
		}},
	}
}

// OpsPermissions let an operator watch every town's heartbeats and events
// and read the state buckets with the nats CLI, in the ops account, where
// the buckets are the server's copies (opsview.go) and nothing listens but
// the operator: JetStream can publish only there for it, on whatever
// subject it names. It may not create, change or delete a stream, and it
// hears only its own inbox, _INBOX.gastown_ops.>.
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
			"$JS.API.CONSUMER.INFO."+stream+".*",
			// Only operators' own consumers are there: `nats consumer
			// ls` works.
			"$JS.API.CONSUMER.DELETE."+stream+".*",
			"$JS.API.CONSUMER.LIST."+stream,
			"$JS.API.CONSUMER.NAMES."+stream,
			"$JS.API.CONSUMER.MSG.NEXT."+stream+".*",
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
				schemas.OpsInbox + ".>",
			},
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
