// Package connect turns a connection of the config into a destination
// ready for one batch: the adapter its kind names (shared/kinds), its API
// key from the secret source, a client of its own (so its request counts
// are its own) and the budget's limiter, which outlives the client. Local
// mode and the Lambda functions use the same Connector; they differ only
// in how the budget is shared and where keys come from.
package connect

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/kinds"
	"github.com/segpilot/segpilot/shared/pace"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/secrets"
)

// Connector implements run.Connector.
type Connector struct {
	Secrets secrets.Source
	// SecretPrefix, when set, refuses a connection whose apiKeySecret is
	// not named under it (Lambda: the functions may read segpilot/*
	// secrets only, so another name could only fail later, less clearly).
	SecretPrefix string
	// BaseURLs, when set, replace the baseURL of every connection of a
	// kind (kind -> URL: the simulators, or AUTOPILOT_BASE_URL and
	// ORTTO_BASE_URL); each must pass the config's check. Like a baseURL,
	// each may end with the kind's API path (/v1) or not.
	BaseURLs   map[string]string
	HTTPClient *http.Client
	Log        *slog.Logger
	Timeout    time.Duration // per request; 0: the client's default
	// Shared paces every worker of a connection in this process with one
	// limiter at the connection's whole budget (local mode). Otherwise the
	// process paces its own share, the workerRPS a batch is given (a Lambda
	// container), starting each group of the Map's first wave at
	// StartPhase's delay (see limiter).
	Shared     bool
	StartPhase func(interval time.Duration) time.Duration

	mu       sync.Mutex
	limiters map[string]*pace.Limiter // by connection name
}

var _ run.Connector = (*Connector)(nil).Connect

// Connect returns a destination for one batch of conn, paced at share.
func (c *Connector) Connect(ctx context.Context, conn config.Connection, share run.Share) (dest.Destination, error) {
	kind, ok := kinds.Lookup(conn.Kind)
	if !ok {
		return nil, fmt.Errorf("connection %s: kind %q is not one of %s", conn.Name, conn.Kind, strings.Join(kinds.Names(), ", "))
	}
	base := conn.BaseURL
	if u := c.BaseURLs[conn.Kind]; u != "" {
		base = u
	}
	// Before the key goes anywhere: an override skipped the config's check.
	if err := config.CheckBaseURL(base); err != nil {
		return nil, err
	}
	if c.SecretPrefix != "" && !strings.HasPrefix(secretName(conn.APIKeySecret), c.SecretPrefix) {
		return nil, fmt.Errorf("connection %s: apiKeySecret %q is not named %s…: the functions may read only those secrets; "+
			"store the key as e.g. %s%s and name that secret in the connection", conn.Name, conn.APIKeySecret, c.SecretPrefix, c.SecretPrefix, conn.Kind)
	}
	key, err := c.Secrets.Secret(ctx, conn.APIKeySecret)
	if err != nil {
		return nil, fmt.Errorf("reading the API key for connection %s: %w", conn.Name, err)
	}
	return kind.New(dest.Connection{BaseURL: kind.Endpoint(base), APIKey: key, HTTPClient: c.HTTPClient,
		Limiter: c.limiter(conn, share, kind.Capabilities), Logger: c.Log, Timeout: c.Timeout})
}

// refusedShare is the part of a destination's malformed-request limit a
// limiter keeps to: all of it in one process; a share (a Lambda container)
// one request per as many windows as shares split the limit, so that the
// shares together average under it. (They cannot see each other's
// refusals at once: shares refused in the same instant can pass it.)
func refusedShare(caps dest.Capabilities, budget, whole float64, isShare bool) (int, time.Duration) {
	if !isShare || budget <= 0 || whole <= budget {
		return caps.MaxRefused, caps.RefusedPer
	}
	shares := whole / budget
	return 1, time.Duration(float64(caps.RefusedPer) * max(shares/float64(caps.MaxRefused), 1))
}

// secretName is a secret id's name: an ARN's part after "secret:".
func secretName(id string) string {
	if _, name, ok := strings.Cut(id, ":secret:"); ok && strings.HasPrefix(id, "arn:") {
		return name
	}
	return id
}

// limiter is conn's limiter in this process, made anew when its budget
// changed (a new config, or another run's share). A share follows its
// run's signal and starts each group at a phase of its interval: a
// relay an interval after its predecessor's last request (TakeOver, see
// run.Share), a group of the Map's first wave at StartPhase's, so that
// containers started together do not send their first requests together.
func (c *Connector) limiter(conn config.Connection, share run.Share, caps dest.Capabilities) *pace.Limiter {
	budget, isShare := conn.RequestsPerSecond, !c.Shared && share.RPS > 0
	if isShare {
		budget = share.RPS
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.limiters[conn.Name]
	if !ok || l.Budget() != budget {
		if isShare {
			l = pace.NewShare(budget, conn.RequestsPerSecond, 1)
		} else {
			l = pace.New(budget, 1)
		}
		if caps.MaxRefused > 0 {
			l.LimitRefused(refusedShare(caps, budget, conn.RequestsPerSecond, isShare))
		}
		if c.limiters == nil {
			c.limiters = map[string]*pace.Limiter{}
		}
		c.limiters[conn.Name] = l
	}
	if !isShare {
		return l
	}
	l.Spread(share.Workers, share.Groups)
	l.Follow(share.Signal)
	switch {
	case share.Relay:
		l.TakeOver(share.Began)
	case c.StartPhase != nil:
		l.StartAfter(c.StartPhase(time.Duration(float64(time.Second) / budget)))
	}
	return l
}
