// Command finalize closes a run: report.json, rejected.csv, snapshot
// promotion, and the run's metrics as Embedded Metric Format on stdout.
// Then it starts the next file queued for the export, as ingest would.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/segpilot/segpilot/internal/lambdaapp"
	"github.com/segpilot/segpilot/shared/runpage"
)

func main() {
	svc, err := lambdaapp.NewService(context.Background(), lambdaapp.Needs{Starter: true, Connector: true, Page: runpage.Render})
	if err != nil {
		slog.Error("start-up failed", "error", err)
		os.Exit(1)
	}
	lambda.Start(lambdaapp.Finalize(svc))
}
