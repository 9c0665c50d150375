// Package dest is segpilot's destination port: what the pipeline needs from
// an email platform, in domain types only. Adapters (shared/autopilot,
// shared/ortto) implement Destination; shared/kinds registers them by the
// connection's kind. The planner, run, the runner and the functions speak
// only this package.
package dest

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/pace"
)

// Type is a custom value's type, as the segment reader converts it.
type Type string

// The value types (the segment reader's names).
const (
	String  Type = "string"
	Integer Type = "integer"
	Decimal Type = "float" // a decimal number
	Date    Type = "date"  // "2006-01-02" or an RFC 3339 timestamp
	Boolean Type = "boolean"
)

// Value is one custom value of a contact.
type Value struct {
	Key  string // the destination's field key, as configured ("string--Loyalty--Tier", "str:cm:loyalty-tier")
	Type Type
	// Value is a string (String, Date), a json.Number, int64 or float64
	// (Integer, Decimal) or a bool (Boolean).
	Value any
}

// Contact is one profile to create or update. Empty names are left out of
// the request, so an export never blanks what the destination holds.
type Contact struct {
	Email     string
	FirstName string
	LastName  string
	Custom    []Value
}

// Field is a custom field an export fills.
type Field struct {
	Key  string `json:"key"`
	Type Type   `json:"type"`
}

// ListSpec is what an export sends to: the list's title (Autopilot: a list;
// Ortto: a tag) and the custom fields its contacts carry.
type ListSpec struct {
	Title  string
	Fields []Field
	// CreateFields lets the destination create a missing custom field
	// (Ortto) instead of refusing the run.
	CreateFields bool
	// Registry, when set, claims every object the adapter creates (an
	// Autopilot list, an Ortto custom field) before creating it, so runs
	// in other processes sharing the connection create it once. nil: no
	// claims, for a single process.
	Registry Registry
	// Notice, when set, is told one sentence for the run's report about
	// something the export's owner should know: two lists with the title,
	// the one used and the one left alone.
	Notice func(string)
}

// Note tells s.Notice, when set.
func (s ListSpec) Note(sentence string) {
	if s.Notice != nil {
		s.Notice(sentence)
	}
}

// Status is how one contact (or removal) ended.
type Status string

// The statuses of an Outcome.
const (
	Sent     Status = "sent"     // accepted (for a removal: taken off the list)
	Rejected Status = "rejected" // refused for this contact; resending will not help
	Failed   Status = "failed"   // not delivered for a transient or run-wide reason; a later attempt may help
	Skipped  Status = "skipped"  // left alone by the export's mode (update: not in the destination; create: already in it)
)

// Write is what an upsert may do to a contact: the export's mode.
type Write int

// The writes an upsert can be limited to.
const (
	WriteAny    Write = iota // create the contact or update it
	WriteUpdate              // update a contact the destination has; never create one
	WriteCreate              // create a contact the destination lacks; never change one it has
)

// SkipReason says why a contact was skipped under w, for the report.
func (w Write) SkipReason(title string) string {
	if w == WriteCreate {
		return "skipped: already in " + title + " (mode: create)"
	}
	return "skipped: not in " + title + " (mode: update)"
}

// Outcome is the result for one contact or removal, in input order.
type Outcome struct {
	Email  string
	Status Status
	Reason string // why it was rejected or failed
	ID     string // the destination's id for the contact, when it said
}

// Capabilities say how a destination's requests are shaped, so the
// caller can checkpoint and count honestly.
type Capabilities struct {
	MaxBatch    int // contacts per upsert request
	RemoveBatch int // emails per removal request; 1 means one request per email
	// Writes: Upsert applies WriteUpdate and WriteCreate itself (Ortto's
	// skip_non_existing and merge_strategy 3). Without, the caller learns
	// who exists from the Directory and sends only what the mode allows,
	// with WriteAny.
	Writes bool
	// MaxRefused, when not 0, is how many requests answered as malformed
	// (400, 413, 422) the destination takes in any RefusedPer before it
	// locks the caller out; the connection's limiter sends fewer (Ortto).
	MaxRefused int
	RefusedPer time.Duration
}

// Directory lists the account's contacts, for the modes a destination
// cannot apply itself (Capabilities.Writes false).
type Directory interface {
	// Contacts calls each with the email of every contact of the account.
	Contacts(ctx context.Context, each func(email string) error) error
}

// Stats counts what a Destination has sent since it was made.
type Stats struct {
	Requests      int         // attempts sent, retries included
	ByStatus      map[int]int // answers by HTTP status
	Retries       int
	Throttled     int // 429 answers
	NetworkErrors int // attempts that got no answer, other than timeouts
	Timeouts      int // attempts that hit the per-attempt timeout
}

// Destination is one account of an email platform, for one batch (or one
// resolution of a run's list). How its requests are shaped is its Kind's
// Capabilities.
//
// Errors: a refused key is *UnauthorizedError (the whole run stops); a
// call that failed for good or ran out of retries is *RequestError
// (Retryable says which); a destination that does not match the export's
// configuration (a missing custom field) is *ConfigError. Upsert and Remove
// return an error only when the whole run must stop (a refused key, ctx
// ended) or when the list is gone (ErrListGone: the caller drops the id it
// kept, prepares the list again, once, and resends); every other problem
// is an Outcome.
type Destination interface {
	// PrepareList resolves the export's list once per run, before the
	// fan-out, and returns the handle Upsert and Remove take.
	PrepareList(ctx context.Context, spec ListSpec) (string, error)
	// Upsert creates or updates contacts, as w allows, and adds them to
	// list; one Outcome per contact, in order (Skipped for one w leaves
	// alone). A destination without Capabilities.Writes is given WriteAny.
	Upsert(ctx context.Context, list string, contacts []Contact, w Write) ([]Outcome, error)
	// Remove takes emails off list (never deletes a contact); one Outcome
	// per email, in order. An email that is not a member counts as removed.
	Remove(ctx context.Context, list string, emails []string) ([]Outcome, error)
	Stats() Stats
}

// Connection is what an adapter is built from.
type Connection struct {
	BaseURL    string
	APIKey     string
	HTTPClient *http.Client  // optional; copied, never mutated
	Limiter    *pace.Limiter // the budget this destination shares
	Timeout    time.Duration // per request; 0: the adapter's default
	Logger     *slog.Logger
}

// Kind describes one destination: how its connection and custom fields
// are configured, and how to build its adapter. shared/kinds lists them.
type Kind struct {
	Name  string // the connection's kind: "autopilot"
	Title string // in messages and reports: "Autopilot"
	// DefaultBaseURL is used when a connection names neither a baseURL nor
	// a region: the API's host, the form messages and the README show.
	DefaultBaseURL string
	// Regions maps a connection's region: to its base URL (a host); nil
	// when the kind has none.
	Regions map[string]string
	// APIPath is the path every call is under ("/v1"). A base URL may end
	// with it or not: Endpoint adds it when missing.
	APIPath string
	// FieldHelp says how a custom field key looks, for config errors.
	FieldHelp string
	// TextField is how a text custom field is written, for a row reason
	// whose fix is one: "string--Name".
	TextField string
	// FieldType checks a custom field key and returns its value type;
	// decimal is the export's mark that the field holds decimals.
	FieldType func(key string, decimal bool) (Type, error)
	// MarksDecimals: a custom field may be written {field: KEY, decimal:
	// true} (Ortto's int fields hold integers or decimals).
	MarksDecimals bool
	// CreatesFields: the kind can create missing custom fields (an
	// export's createFields: true).
	CreatesFields bool
	Capabilities  Capabilities
	New           func(Connection) (Destination, error)
}

// Endpoint is the URL the adapter's calls go under: base (a host, or a
// proxy's root) with the kind's APIPath, added unless base ends with it,
// so "http://127.0.0.1:8089", ".../v1" and ".../v1/" all work alike.
func (k Kind) Endpoint(base string) string {
	base = strings.TrimRight(strings.TrimSpace(base), "/")
	if strings.HasSuffix(base, k.APIPath) {
		return base
	}
	return base + k.APIPath
}
