package dest

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/segpilot/segpilot/shared/segment"
)

// ErrNotFound is matched (errors.Is) by a *RequestError answered 404.
var ErrNotFound = errors.New("not found")

// ErrListGone is matched (errors.Is) by the error of an Upsert or Remove
// whose list the destination no longer holds (deleted by hand, or the key
// now opens another account). The id a caller kept is wrong: it drops it
// and prepares the list again, once.
var ErrListGone = errors.New("the list is gone")

// ErrInProgress is matched by a Registry's error when another run holds
// the claim on an object and has not recorded it within the wait. It is
// transient (IsRetryable): a later attempt finds the object, or takes the
// claim over.
var ErrInProgress = errors.New("another run is creating it")

// UnauthorizedError means the destination refused the API key (401 or
// 403), or a key of another region. It is final for the whole run: the
// client sends nothing more once it has seen it.
type UnauthorizedError struct {
	API     string // "autopilot"
	Status  int
	Message string // the destination's own words, when it gave any
}

func (e *UnauthorizedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s refused the API key (status %d)", e.API, e.Status)
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(segment.MaskEmails(e.Message))
	}
	b.WriteString(": check or rotate the secret holding it")
	return b.String()
}

// RequestError is a call that failed for good or, when Retryable, ran out
// of attempts. Status is 0 when no answer came back.
type RequestError struct {
	API       string // "autopilot"
	Method    string
	Path      string // relative to the base URL; may hold an email, masked by Error
	Status    int
	Message   string // the destination's message, or the transport error
	Retryable bool
}

func (e *RequestError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", e.API, e.Method, segment.MaskEmails(e.Path))
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
func (e *RequestError) Is(target error) bool {
	return target == ErrNotFound && e.Status == http.StatusNotFound
}

// ConfigError: the destination does not hold what the export's
// configuration names (a custom field missing or of another type).
// Retrying cannot help; the config or the account must be fixed.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

// IsRetryable reports whether err is a transient failure that a later
// attempt may get past.
func IsRetryable(err error) bool {
	var re *RequestError
	return (errors.As(err, &re) && re.Retryable) || errors.Is(err, ErrInProgress)
}

// IsThrottled reports whether err is a request still answered 429 after
// the client's retries.
func IsThrottled(err error) bool {
	var re *RequestError
	return errors.As(err, &re) && re.Status == http.StatusTooManyRequests
}
