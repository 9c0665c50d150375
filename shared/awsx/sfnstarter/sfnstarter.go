// Package sfnstarter starts segpilot runs as Step Functions executions.
package sfnstarter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/aws/aws-sdk-go-v2/service/sfn/types"

	"github.com/segpilot/segpilot/shared/run"
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

// StartRun starts the execution named name (an attempt of a run) with
// input. Execution names are unique per state machine (for 90 days after
// the execution closes), so starting a name again starts nothing:
// StartRun then returns (false, nil). Step Functions answers a repeat call
// with the same name and the same input *while that execution still runs*
// with success, so started is true then too; either way exactly one
// execution exists, which is what lets any drainer finish a start whose
// answer was lost.
func (s *Starter) StartRun(ctx context.Context, name string, input []byte) (started bool, err error) {
	if err := ValidateRunID(name); err != nil {
		return false, err
	}
	in := &sfn.StartExecutionInput{StateMachineArn: aws.String(s.arn), Name: aws.String(name)}
	if len(input) > 0 { // otherwise Step Functions uses "{}"
		in.Input = aws.String(string(input))
	}
	_, err = s.client.StartExecution(ctx, in)
	if err != nil {
		var exists *types.ExecutionAlreadyExists
		if errors.As(err, &exists) {
			return false, nil
		}
		return false, fmt.Errorf("starting execution %s: %w", name, err)
	}
	return true, nil
}

var _ run.Liveness = (*Starter)(nil)

// Attempt tells where an attempt's execution is: DescribeExecution. An
// execution that does not exist was never started (its start was lost,
// or is still to come); an ended one reports its stop date, which the
// core waits past for the Lambda invocations it had in flight.
func (s *Starter) Attempt(ctx context.Context, h run.Holder) (run.Live, error) {
	arn := strings.Replace(s.arn, ":stateMachine:", ":execution:", 1) + ":" + h.Execution
	out, err := s.client.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: aws.String(arn)})
	if err != nil {
		var missing *types.ExecutionDoesNotExist
		if errors.As(err, &missing) {
			return run.Live{State: run.LiveNotStarted}, nil
		}
		return run.Live{}, fmt.Errorf("describing execution %s: %w", h.Execution, err)
	}
	switch out.Status {
	case types.ExecutionStatusSucceeded, types.ExecutionStatusFailed, types.ExecutionStatusTimedOut, types.ExecutionStatusAborted:
		// An ended execution has a stop date; without one, its start will do.
		return run.Live{State: run.LiveEnded, EndedAt: aws.ToTime(cmp.Or(out.StopDate, out.StartDate))}, nil
	default: // RUNNING, PENDING_REDRIVE, or one added later: wait for it
		return run.Live{State: run.LiveRunning}, nil
	}
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
