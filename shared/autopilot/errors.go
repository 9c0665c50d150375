package autopilot

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/segpilot/segpilot/shared/segment"
)

// ErrNotFound is matched (errors.Is) by an answer 404 to a lookup.
var ErrNotFound = errors.New("autopilot: not found")

// UnauthorizedError means Autopilot refused the API key (401 or 403). It is
// final for the whole run: the Client sends nothing more once it has seen it.
type UnauthorizedError struct {
	Status int
}

func (e *UnauthorizedError) Error() string {
	return fmt.Sprintf("autopilot refused the API key (status %d): check or rotate the secret holding it", e.Status)
}

// APIError is a call that failed for good, or ran out of attempts when
// Retryable is true. Status is 0 when no answer came back.
type APIError struct {
	Status    int
	Method    string
	Path      string // relative to the base URL; may hold an email, masked by Error
	Message   string // the API's message, or the transport error
	Retryable bool
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "autopilot %s %s", e.Method, segment.MaskEmails(e.Path))
	if e.Status != 0 {
		fmt.Fprintf(&b, ": status %d", e.Status)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(segment.MaskEmails(e.Message))
	}
	return b.String()
}

// Is lets errors.Is(err, ErrNotFound) match a 404.
func (e *APIError) Is(target error) bool {
	return target == ErrNotFound && e.Status == http.StatusNotFound
}

// IsRetryable reports whether err is a transient failure that a later run
// (or a later retry) may get past.
func IsRetryable(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Retryable
}
