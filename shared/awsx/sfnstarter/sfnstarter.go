// Package sfnstarter starts segpilot runs as Step Functions executions.
package sfnstarter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/aws/aws-sdk-go-v2/service/sfn/types"
)

// MaxRunIDLength is Step Functions' limit on execution names.
const MaxRunIDLength = 80

// Starter starts executions of one state machine.
type Starter struct {
	client *sfn.Client
	arn    string
}

// New returns a starter for the state machine stateMachineARN.
func New(client *sfn.Client, stateMachineARN string) *Starter {
	return &Starter{client: client, arn: stateMachineARN}
}

// StartRun starts an execution named runID with input. Execution names are
// unique per state machine (for 90 days after the execution closes), so a
// duplicate S3 event for the same object starts nothing: StartRun then
// returns (false, nil). Note that Step Functions answers a repeat call with
// the same name and the same input *while that execution still runs* with
// success, so started is true then too; either way exactly one run exists.
func (s *Starter) StartRun(ctx context.Context, runID string, input []byte) (started bool, err error) {
	if err := ValidateRunID(runID); err != nil {
		return false, err
	}
	in := &sfn.StartExecutionInput{StateMachineArn: aws.String(s.arn), Name: aws.String(runID)}
	if len(input) > 0 { // otherwise Step Functions uses "{}"
		in.Input = aws.String(string(input))
	}
	_, err = s.client.StartExecution(ctx, in)
	if err != nil {
		var exists *types.ExecutionAlreadyExists
		if errors.As(err, &exists) {
			return false, nil
		}
		return false, fmt.Errorf("starting run %s: %w", runID, err)
	}
	return true, nil
}

// ValidateRunID reports whether runID can name an execution: 1 to 80
// characters, none of them white space, control characters or any of
// < > { } [ ] ? * " # % \ ^ | ~ ` $ & , ; : /
func ValidateRunID(runID string) error {
	if runID == "" || utf8.RuneCountInString(runID) > MaxRunIDLength {
		return fmt.Errorf("run id %q: must be 1 to %d characters", runID, MaxRunIDLength)
	}
	if i := strings.IndexFunc(runID, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("<>{}[]?*\"#%\\^|~`$&,;:/", r)
	}); i >= 0 {
		r, _ := utf8.DecodeRuneInString(runID[i:])
		return fmt.Errorf("run id %q: character %q is not allowed in an execution name", runID, r)
	}
	return nil
}
