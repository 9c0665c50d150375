// Package connect turns a connection of the config into a destination
// ready for one batch: its API key from the secret source, a client of its
// own (so its request counts are its own) and the budget's limiter, which
// outlives the client. Local mode and the Lambda functions use the same
// Connector; they differ only in how the budget is shared.
package connect

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/segpilot/segpilot/shared/autopilot"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/pace"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/secrets"
)

// Connector implements run.Connector.
type Connector struct {
	Secrets secrets.Source
	// SecretID, when set, is read instead of a connection's apiKeySecret
	// (Lambda: the deployed secret, so the function's IAM scope holds).
	SecretID string
	// BaseURL, when set, replaces every connection's baseURL (the
	// simulator, or AUTOPILOT_BASE_URL); it must pass the config's check.
	BaseURL    string
	HTTPClient *http.Client
	Log        *slog.Logger
	Timeout    time.Duration // per request; 0: the client's default
	// Shared paces every worker of a connection in this process with one
	// limiter at the connection's whole budget (local mode). Otherwise the
	// process paces its own share, the workerRPS a batch is given (a Lambda
	// container), starting at StartPhase's delay so that containers
	// started together do not send their first requests together.
	Shared     bool
	StartPhase func(interval time.Duration) time.Duration

	mu       sync.Mutex
	limiters map[string]*pace.Limiter // by connection name
}

var _ run.Connector = (*Connector)(nil).Connect

// Connect returns a destination for one batch of conn, whose worker's
// share of the budget is workerRPS.
func (c *Connector) Connect(ctx context.Context, conn config.Connection, workerRPS float64) (run.Destination, error) {
	base := conn.BaseURL
	if c.BaseURL != "" {
		base = c.BaseURL
	}
	// Before the key goes anywhere: an override skipped the config's check.
	if err := config.CheckBaseURL(base); err != nil {
		return nil, err
	}
	id := conn.APIKeySecret
	if c.SecretID != "" && !strings.EqualFold(id, c.SecretID) {
		id = c.SecretID
	}
	key, err := c.Secrets.Secret(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("reading the API key for connection %s: %w", conn.Name, err)
	}
	return autopilot.New(autopilot.Options{BaseURL: base, APIKey: key, HTTPClient: c.HTTPClient,
		Limiter: c.limiter(conn, workerRPS), Logger: c.Log, Timeout: c.Timeout})
}

// limiter is conn's limiter in this process, made anew when its budget
// changed (a new config, or another run's share).
func (c *Connector) limiter(conn config.Connection, workerRPS float64) *pace.Limiter {
	budget := conn.RequestsPerSecond
	if !c.Shared && workerRPS > 0 {
		budget = workerRPS
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.limiters[conn.Name]; ok && l.Budget() == budget {
		return l
	}
	if c.limiters == nil {
		c.limiters = map[string]*pace.Limiter{}
	}
	l := pace.New(budget, 1)
	if !c.Shared && c.StartPhase != nil && budget > 0 {
		l.StartAfter(c.StartPhase(time.Duration(float64(time.Second) / budget)))
	}
	c.limiters[conn.Name] = l
	return l
}
