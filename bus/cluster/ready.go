package cluster

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// readyPoll is how often WaitReady asks again.
const readyPoll = 100 * time.Millisecond

// Dial connects to urls as one of the coordinator's nkey users, with the
// coordinator's inbox prefix, reconnecting for ever.
func Dial(urls []string, kp nkeys.KeyPair, opts ...nats.Option) (*nats.Conn, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, errors.Wrap(err, "reading a public key")
	}
	all := append([]nats.Option{
		nats.Nkey(pub, kp.Sign),
		nats.CustomInboxPrefix(schemas.CoordinatorInbox),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
	}, opts...)
	nc, err := nats.Connect(strings.Join(urls, ","), all...)
	if err != nil {
		return nil, errors.Wrapf(err, "connecting to %s as %s", strings.Join(urls, ","), pub)
	}
	return nc, nil
}

// WaitReady waits until nodes servers answer the system account, all
// know the same JetStream meta leader, and the state account can use
// JetStream: then the cluster can keep state. It gives up when ctx ends,
// saying what it last saw.
func WaitReady(ctx context.Context, urls []string, creds *Creds, nodes int) error {
	var sys, state *nats.Conn
	defer func() {
		if sys != nil {
			sys.Close()
		}
		if state != nil {
			state.Close()
		}
	}()
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	var last error
	for {
		last = func() error {
			var err error
			if sys == nil {
				if sys, err = Dial(urls, creds.System); err != nil {
					return err
				}
			}
			if state == nil {
				if state, err = Dial(urls, creds.State); err != nil {
					return err
				}
			}
			return ready(ctx, sys, state, nodes)
		}()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Wrap(last, "the cluster is not ready")
		case <-tick.C:
		}
	}
}

func ready(ctx context.Context, sys, state *nats.Conn, nodes int) error {
	leaders, err := MetaLeaders(ctx, sys, nodes)
	if err != nil {
		return err
	}
	if len(leaders) < nodes {
		return errors.Newf("%d of %d nodes answered", len(leaders), nodes)
	}
	var leader string
	for srv, l := range leaders {
		if l == "" {
			return errors.Newf("%s knows no JetStream meta leader", srv)
		}
		if leader != "" && l != leader {
			return errors.Newf("the nodes disagree on the JetStream meta leader (%s, %s)", leader, l)
		}
		leader = l
	}
	js, err := jetstream.New(state)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(actx)
	return errors.Wrap(err, "JetStream in the state account")
}

// MetaLeaders asks every node, over a system account connection, which
// server it knows as the JetStream meta leader: server name → leader name
// ("" when it knows none). It collects answers until want have come or a
// second has passed.
func MetaLeaders(ctx context.Context, sys *nats.Conn, want int) (map[string]string, error) {
	inbox := sys.NewRespInbox()
	sub, err := sys.SubscribeSync(inbox)
	if err != nil {
		return nil, errors.Wrap(err, "subscribing to the answers of the servers")
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sys.PublishRequest("$SYS.REQ.SERVER.PING.JSZ", inbox, []byte(`{}`)); err != nil {
		return nil, errors.Wrap(err, "asking the servers")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	out := map[string]string{}
	for len(out) < want {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			break
		}
		var r struct {
			Server struct {
				Name string `json:"name"`
			} `json:"server"`
			Data struct {
				Meta *struct {
					Leader string `json:"leader"`
				} `json:"meta_cluster"`
			} `json:"data"`
		}
		if json.Unmarshal(m.Data, &r) != nil {
			continue
		}
		leader := ""
		if r.Data.Meta != nil {
			leader = r.Data.Meta.Leader
		}
		out[r.Server.Name] = leader
	}
	return out, nil
}
