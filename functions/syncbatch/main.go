// Command syncbatch is the Map iteration Lambda: send a group of
// consecutive batches to Autopilot. Its error types (Unauthorized,
// Transient, Throttled, Corrupt) are what the state machine's Retry and
// Catch match.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/segpilot/segpilot/internal/lambdaapp"
)

func main() {
	svc, err := lambdaapp.NewService(context.Background(), lambdaapp.Needs{Connector: true, MapWorker: true})
	if err != nil {
		slog.Error("start-up failed", "error", err)
		os.Exit(1)
	}
	lambda.Start(svc.SyncBatch)
}
