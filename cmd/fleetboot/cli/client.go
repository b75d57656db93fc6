package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
)

// client talks to the coordinator's API over NATS request-reply.
type client struct {
	nc      *nats.Conn
	url     string
	timeout time.Duration
}

// natsOptions are the connection options every NATS client of ours uses.
func (a *app) natsOptions(name string) []nats.Option {
	opts := []nats.Option{nats.Name(name), nats.Timeout(3 * time.Second)}
	if a.creds != "" {
		opts = append(opts, nats.UserCredentials(a.creds))
		// Replies come to the credential's private inbox prefix (its
		// permissions name it); a bad file fails in UserCredentials.
		if p, err := auth.InboxPrefix(a.creds); err == nil && p != "" {
			opts = append(opts, nats.CustomInboxPrefix(p))
		}
	}
	if a.tlsCA != "" {
		opts = append(opts, nats.RootCAs(a.tlsCA))
	}
	return opts
}

func (a *app) connect() (*client, error) {
	timeout, err := time.ParseDuration(a.timeout)
	if err != nil || timeout <= 0 {
		return nil, fmt.Errorf("invalid --timeout %q: want a duration such as 10s", a.timeout)
	}
	nc, err := nats.Connect(a.natsURL, a.natsOptions("fleetboot-cli")...)
	if err != nil {
		return nil, exitError{code: 3, err: fmt.Errorf("cannot reach the coordinator's NATS at %s: %v", proto.RedactURL(a.natsURL), proto.RedactErr(err))}
	}
	// url is only ever shown: without the URL's credentials.
	return &client{nc: nc, url: proto.RedactURL(a.natsURL), timeout: timeout}, nil
}

func (c *client) Close() { c.nc.Close() }

// call sends req to an API endpoint and decodes the reply's data into out.
func (c *client) call(ctx context.Context, endpoint string, req, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	timeout := c.timeout
	if proto.BulkEndpoint(endpoint) {
		timeout = max(timeout, proto.BulkRequestTimeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg, err := c.nc.RequestWithContext(ctx, proto.APISubject(endpoint), body)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return exitError{code: 3, err: fmt.Errorf("no coordinator is answering on %s (is `fleetboot coordinator` running?)", c.url)}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return exitError{code: 3, err: fmt.Errorf("the coordinator at %s did not answer within %s", c.url, timeout)}
	case err != nil:
		return exitError{code: 3, err: fmt.Errorf("request to the coordinator at %s: %v", c.url, proto.RedactErr(err))}
	}
	var rep proto.Reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return fmt.Errorf("malformed reply from the coordinator: %v", err)
	}
	if rep.Error != "" {
		return errors.New(rep.Error)
	}
	if out != nil && len(rep.Data) > 0 {
		if err := json.Unmarshal(rep.Data, out); err != nil {
			return fmt.Errorf("malformed reply from the coordinator: %v", err)
		}
	}
	return nil
}

// request makes one API call on a connection of its own and decodes the
// reply's data into a T: what most commands do, once.
func request[T any](ctx context.Context, a *app, endpoint string, req any) (T, error) {
	var v T
	c, err := a.connect()
	if err != nil {
		return v, err
	}
	defer c.Close()
	err = c.call(ctx, endpoint, req, &v)
	return v, err
}
