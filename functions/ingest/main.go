// Command ingest is the S3-triggered Lambda: a segment file landed under
// segments/, so plan and start a run for every export that reads it.
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
	lambda.Start(lambdaapp.Ingest(svc))
}
