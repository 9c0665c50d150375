// Command finalize ends an attempt: its report, rejected.csv, the snapshot
// it leaves, the export set free, and its metrics as Embedded Metric Format
// on stdout; then it kicks the export's queue (kicks/<export>). It starts
// nothing.
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
	svc, err := lambdaapp.NewService(context.Background(), lambdaapp.Needs{Kicker: true, Page: runpage.Render})
	if err != nil {
		slog.Error("start-up failed", "error", err)
		os.Exit(1)
	}
	lambda.Start(lambdaapp.Finalize(svc))
}
