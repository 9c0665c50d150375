// Package lambdaapp wires segpilot's core to AWS for the Lambda functions:
// environment -> SDK clients -> adapters -> run.Service. Each function's
// main.go calls it once at cold start and keeps the result.
package lambdaapp

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"golang.org/x/time/rate"

	"github.com/segpilot/segpilot/shared/autopilot"
	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
	"github.com/segpilot/segpilot/shared/awsx/sfnstarter"
	"github.com/segpilot/segpilot/shared/awsx/smsecrets"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/runpage"
	"github.com/segpilot/segpilot/shared/secrets"
)

// SecretTTL is how long a container keeps the API key before reading it
// again, so a rotated secret takes effect without a redeploy.
const SecretTTL = 5 * time.Minute

// Needs says which adapters a function uses, so each builds only those.
type Needs struct {
	Starter   bool // ingest, refresh, finalize (it starts the next queued run)
	Connector bool // syncbatch; ingest, refresh and finalize resolve the list
}

// Logger is the JSON slog logger Lambda's JSON log format expects, with the
// request id added and the level taken from the function's LoggingConfig.
func Logger() *slog.Logger { return lambdacontext.NewLogger() }

// NewService builds the service from the function's environment.
func NewService(ctx context.Context, needs Needs) (*run.Service, error) {
	bucket := os.Getenv("BUCKET")
	if bucket == "" {
		return nil, fmt.Errorf("environment variable BUCKET is not set")
	}
	cfg, err := awsx.LoadConfig(ctx)
	if err != nil {
		return nil, err
	}
	svc := &run.Service{
		Store:   s3store.New(awsx.NewS3Client(cfg, os.Getenv(awsx.EnvS3Endpoint)), bucket),
		Log:     Logger(),
		TempDir: os.TempDir(),
		Page:    runpage.Render, // report.html next to every report.json
	}
	if needs.Starter {
		arn := os.Getenv("STATE_MACHINE_ARN")
		if arn == "" {
			return nil, fmt.Errorf("environment variable STATE_MACHINE_ARN is not set")
		}
		svc.Starter = sfnstarter.New(awsx.NewSFNClient(cfg, os.Getenv(awsx.EnvSFNEndpoint)), arn)
	}
	if needs.Connector {
		secretID := os.Getenv("API_KEY_SECRET_ID")
		if secretID == "" {
			return nil, fmt.Errorf("environment variable API_KEY_SECRET_ID is not set")
		}
		src := secrets.NewCache(smsecrets.New(awsx.NewSecretsClient(cfg, os.Getenv(awsx.EnvSecretsEndpoint))), SecretTTL)
		c := &connector{secrets: src, secretID: secretID, log: svc.Log}
		svc.Connect = c.connect
	}
	return svc, nil
}

// connector gives each batch a fresh client (its own request counts) paced
// by the container's limiter at this worker's share of the budget.
type connector struct {
	secrets  secrets.Source
	secretID string // the deployed secret; overrides the config's apiKeySecret so IAM scoping holds
	log      *slog.Logger

	mu      sync.Mutex
	limiter *rate.Limiter
}

func (c *connector) connect(ctx context.Context, conn config.Connection, workerRPS float64) (run.Destination, error) {
	id := conn.APIKeySecret
	if c.secretID != "" && !strings.EqualFold(id, c.secretID) {
		id = c.secretID
	}
	key, err := c.secrets.Secret(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("reading the API key secret: %w", err)
	}
	if workerRPS <= 0 {
		workerRPS = conn.RequestsPerSecond
	}
	return autopilot.New(autopilot.Options{BaseURL: conn.BaseURL, APIKey: key, Limiter: c.pace(workerRPS), Logger: c.log})
}

func (c *connector) pace(rps float64) *rate.Limiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.limiter == nil || c.limiter.Limit() != rate.Limit(rps) {
		c.limiter = rate.NewLimiter(rate.Limit(rps), 1)
	}
	return c.limiter
}
