// Package lambdaapp wires segpilot's core to AWS for the Lambda functions:
// environment -> SDK clients -> adapters -> run.Service. Each function's
// main.go calls it once at cold start and keeps the result.
package lambdaapp

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/segpilot/segpilot/internal/buildinfo"
	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
	"github.com/segpilot/segpilot/shared/awsx/sfnstarter"
	"github.com/segpilot/segpilot/shared/awsx/smsecrets"
	"github.com/segpilot/segpilot/shared/connect"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/secrets"
)

// SecretTTL is how long a container keeps the API key before reading it
// again, so a rotated secret takes effect without a redeploy.
const SecretTTL = 5 * time.Minute

// SecretPrefix names the secrets the functions may read (template.yaml's
// policies grant secret:segpilot/* only): every connection's apiKeySecret.
const SecretPrefix = "segpilot/"

// Needs says which adapters a function uses, so each builds only those.
type Needs struct {
	Starter   bool // ingest, refresh: they start and judge attempts
	Kicker    bool // finalize: a run's end kicks its export's queue
	Connector bool // syncbatch; ingest, refresh and finalize resolve the list
	// MapWorker: syncbatch, one of many children the Map starts together:
	// its container's first request waits a random phase of its interval,
	// so theirs do not all go at once. (A list lookup at ingest does not.)
	MapWorker bool
	// Page renders report.html beside each report.json (runpage.Render):
	// for the functions that write reports. Passed in by their main, so
	// syncbatch, which writes none, does not link the renderer.
	Page func(*run.Report) ([]byte, error)
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
		// Every run's outcome (RunsFailed...) as Embedded Metric Format:
		// CloudWatch Logs makes metrics of what the function prints.
		Metrics: os.Stdout,
		// S3, Secrets Manager and Step Functions errors worth a retry
		// reach the state machine as Transient.
		Transient: awsx.IsTransient,
		Page:      needs.Page,
		// Names the container in the attempts it claims (for people: in
		// Lambda, liveness is the execution's).
		Owner:      "lambda:" + os.Getenv("AWS_LAMBDA_FUNCTION_NAME") + ":" + containerID(),
		EndedGrace: EndedGrace,
	}
	b := buildinfo.Read()
	svc.Log.Info("starting", "version", b.Version, "commit", b.Commit) // which build answers, in the function's log
	if needs.Starter {
		arn := os.Getenv("STATE_MACHINE_ARN")
		if arn == "" {
			return nil, fmt.Errorf("environment variable STATE_MACHINE_ARN is not set")
		}
		starter := sfnstarter.New(awsx.NewSFNClient(cfg, os.Getenv(awsx.EnvSFNEndpoint)), arn)
		svc.Starter, svc.Liveness = starter, starter
	}
	if needs.Kicker {
		svc.Kicker = run.BucketKicker{Store: svc.Store}
	}
	if needs.Connector {
		src := secrets.NewCache(smsecrets.New(awsx.NewSecretsClient(cfg, os.Getenv(awsx.EnvSecretsEndpoint))), SecretTTL)
		// Each connection's key is its own secret, named segpilot/…: the
		// functions' IAM policy lets them read those and no other. Each
		// container paces its worker's share of the budget.
		c := &connect.Connector{Secrets: src, SecretPrefix: SecretPrefix, Log: svc.Log}
		if needs.MapWorker {
			c.StartPhase = randomPhase
		}
		svc.Connect = c.Connect
	}
	return svc, nil
}

// EndedGrace is how long after its execution ended an attempt is left
// alone before a drainer closes it: stopping an execution does not stop
// the Lambda invocations it has in flight (syncbatch's timeout is 300 s,
// finalize's 900 s; a minute more for clocks and retries).
const EndedGrace = 16 * time.Minute

// containerID names this container: random, once per cold start.
func containerID() string {
	return strconv.FormatUint(rand.Uint64(), 36)
}

// randomPhase is a uniformly random delay within one interval.
func randomPhase(interval time.Duration) time.Duration {
	return time.Duration(rand.Int64N(int64(interval) + 1))
}
