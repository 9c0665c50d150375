package awsx

import (
	"context"
	"errors"
	"net"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// IsTransient reports whether err, from an AWS SDK call (as the adapters
// return it, wrapped), is worth trying again later: the SDK gave up
// retrying an error its own retryer retries (throttling, 5xx, a dropped
// connection), or the error is of that kind. A missing object, a refused
// permission or a bad request is not.
//
// It is the one place segpilot classifies SDK and network errors; the core
// asks it through run.Service.Transient, so a step's S3 or Secrets Manager
// failure reaches Step Functions as Transient, which the state machine
// retries with backoff.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var gaveUp *retry.MaxAttemptsError
	if errors.As(err, &gaveUp) {
		return true // only a retryable error is retried to the limit
	}
	if retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err) == aws.TrueTernary ||
		retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err) == aws.TrueTernary {
		return true
	}
	var resp *smithyhttp.ResponseError
	if errors.As(err, &resp) && (resp.HTTPStatusCode() >= 500 || resp.HTTPStatusCode() == 429) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}
