// Package autopilot is the Autopilot REST API v1 adapter of the
// destination port (shared/dest): bulk contact upserts with bad-record
// isolation, list handling and removals. Pacing, retries, error classes
// and request counts are shared/httpx's; this package maps requests,
// answers and error bodies.
package autopilot

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/httpx"
	"github.com/segpilot/segpilot/shared/pace"
)

const apiKeyHeader = "autopilotapikey"

// Options configures a Client. Zero values take the documented defaults.
type Options struct {
	BaseURL           string        // e.g. "https://api2.autopilothq.com/v1" (dest.Kind's Endpoint adds the /v1); a trailing slash is fine
	APIKey            string        // sent as the autopilotapikey header, never logged
	HTTPClient        *http.Client  // copied, never mutated; default: a client with transport timeouts
	RequestsPerSecond float64       // budget shared by all goroutines using the Client; default 5
	Burst             int           // default 1
	Timeout           time.Duration // per attempt; default 30s
	MaxAttempts       int           // per request including the first; default 6
	BaseBackoff       time.Duration // default 500ms; exponential with full jitter
	MaxBackoff        time.Duration // default 30s
	MaxRetryAfter     time.Duration // cap on an honoured Retry-After; default 60s
	Logger            *slog.Logger  // optional; debug line per retry
	// Limiter, when set, paces this Client instead of RequestsPerSecond and
	// Burst, so several Clients (one per batch, each with its own Stats) can
	// share one connection's budget.
	Limiter *pace.Limiter

	// sleep and now are replaceable so tests can observe backoff waits
	// without waiting.
	sleep func(ctx context.Context, d time.Duration) error
	now   func() time.Time
}

// Client talks to one Autopilot account. It is safe for concurrent use; all
// goroutines share one request budget and one "key refused" flag.
type Client struct {
	hc *httpx.Client
}

// Stats counts what the Client has sent since it was created.
type Stats = dest.Stats

// New validates opts and returns a Client.
func New(opts Options) (*Client, error) {
	hc, err := httpx.New(httpx.Options{
		API: "autopilot", BaseURL: opts.BaseURL, KeyHeader: apiKeyHeader, Key: opts.APIKey,
		HTTPClient: opts.HTTPClient, RequestsPerSecond: opts.RequestsPerSecond, Burst: opts.Burst, Limiter: opts.Limiter,
		Timeout: opts.Timeout, MaxAttempts: opts.MaxAttempts, BaseBackoff: opts.BaseBackoff, MaxBackoff: opts.MaxBackoff,
		MaxRetryAfter: opts.MaxRetryAfter, Logger: opts.Logger,
		// Autopilot may send Retry-After with a 429; its error bodies are
		// {"error": "<short>", "message": "<detail>"}.
		RetryHint: httpx.RetryAfter, Message: httpx.Message,
		Sleep: opts.sleep, Now: opts.now,
	})
	if err != nil {
		return nil, err
	}
	return &Client{hc: hc}, nil
}

// Stats returns a snapshot of the counters.
func (c *Client) Stats() Stats { return c.hc.Stats() }

// do sends r through the client chain and decodes a 2xx answer into out.
func (c *Client) do(ctx context.Context, r httpx.Request, out any) error {
	return c.hc.Do(ctx, r, out)
}
