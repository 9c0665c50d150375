// Command echo is a Lambda bootstrap answering each event with itself: the
// smallest function the test's Lambda service can run. An event's "stderr"
// is written to standard error first, as a crash's trace would be.
package main

import (
	"context"
	"encoding/json"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(_ context.Context, event json.RawMessage) (json.RawMessage, error) {
		var e struct {
			Stderr string `json:"stderr"`
		}
		if json.Unmarshal(event, &e) == nil && e.Stderr != "" {
			os.Stderr.WriteString(e.Stderr)
		}
		return event, nil
	})
}
