package autopilot

import "github.com/segpilot/segpilot/shared/dest"

// ErrNotFound is matched (errors.Is) by an answer 404 to a lookup.
var ErrNotFound = dest.ErrNotFound

// UnauthorizedError means Autopilot refused the API key (401 or 403). It is
// final for the whole run: the Client sends nothing more once it has seen it.
type UnauthorizedError = dest.UnauthorizedError

// APIError is a call that failed for good, or ran out of attempts when
// Retryable is true. Status is 0 when no answer came back.
type APIError = dest.RequestError

// IsRetryable reports whether err is a transient failure that a later run
// (or a later retry) may get past.
func IsRetryable(err error) bool { return dest.IsRetryable(err) }
