// Package run is segpilot's pipeline core: the life of a run, from a
// delivery queued for an export (ingest, refresh, a kick) through planning,
// the claim of the export by one attempt and its execution's start
// (drain.go), the groups of batches it sends (sync.go), to its closing
// report and snapshot (finalize.go). Every decision reads a record: the
// export's state, changed only by compare-and-swap (state.go), the queue
// (queue.go), and create-only attempt records and reports (docs/design.md,
// "The life of a run"). It talks to the world only through small
// interfaces (an object store, a workflow starter, a liveness check, a
// destination), so Lambda, local mode and tests share every line of it.
package run

import (
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/plan"
)

// Triggers say what started a run.
const (
	TriggerS3       = "s3"
	TriggerSchedule = "schedule"
	TriggerManual   = "manual"
)

// Run statuses, as written in report.json.
const (
	StatusSucceeded  = "succeeded"
	StatusFailed     = "failed"
	StatusHeld       = "held"    // mirror safety brake engaged; nothing sent
	StatusRefused    = "refused" // export disabled or connection without consent; nothing sent
	StatusInvalid    = "invalid" // the file or config failed validation; nothing sent
	StatusRunning    = "running" // planned and started
	StatusUpToDate   = "up-to-date"
	StatusDryRun     = "dry-run"
	StatusNoInput    = "no-input"   // refresh found no segment file
	StatusQueued     = "queued"     // another run of the export is in progress; this delivery follows it
	StatusSuperseded = "superseded" // a newer file was already exported; this older one is skipped
	StatusWaiting    = "waiting"    // a folder of parts that is not whole yet: nothing runs until it is
	StatusIncomplete = "incomplete" // a folder that never became whole: nothing was sent
)

// Source identifies the input object of a run.
type Source struct {
	Key       string `json:"key"` // a file, or a folder delivery ("…/")
	ETag      string `json:"etag,omitempty"`
	VersionID string `json:"versionId,omitempty"`
	Size      int64  `json:"size"`
	Parts     int    `json:"parts,omitempty"` // a folder delivery's parts
}

// Manifest is runs/<export>/<run>/plans/<base>/manifest.json: what a run
// planned against one snapshot (its base) will do.
type Manifest struct {
	Export        string            `json:"export"`
	RunID         string            `json:"runId"`
	Trigger       string            `json:"trigger"`
	Source        Source            `json:"source"`
	ConfigVersion string            `json:"configVersion"`
	Connection    config.Connection `json:"connection"`
	List          string            `json:"list"`
	Fields        []dest.Field      `json:"fields,omitempty"`       // the custom fields the export fills, with their types
	CreateFields  bool              `json:"createFields,omitempty"` // the destination may create missing custom fields
	Mode          string            `json:"mode"`
	// Base names the snapshot the plan diffs against (see SnapshotRef.Base)
	// and BaseKey where it is; "" when there was none (a first run).
	Base        string          `json:"base"`
	BaseKey     string          `json:"baseKey,omitempty"`
	Counts      plan.Counts     `json:"counts"`
	Batches     []plan.BatchRef `json:"batches"` // the index of batches.jsonl
	Held        bool            `json:"held,omitempty"`
	FullResync  bool            `json:"fullResync,omitempty"` // every contact of the file sent, unchanged ones too
	Undo        *UndoSummary    `json:"undo,omitempty"`       // an undo's plan: what it reverses (see undo.go)
	Split       *SplitSummary   `json:"split,omitempty"`      // a split export's group: its share (see splits.go)
	HeldReason  string          `json:"heldReason,omitempty"`
	ShowEmails  bool            `json:"showEmails,omitempty"` // the export's showEmails: unmasked emails in the report
	Concurrency int             `json:"concurrency"`
	WorkerRPS   float64         `json:"workerRps"`
	PlannedAt   time.Time       `json:"plannedAt"`
	// ItemGroups: items.json holds groups of batches (MapItems), one a
	// child; plans from before it hold one item a batch, which the
	// ItemBatcher groups (GroupSize).
	ItemGroups bool `json:"itemGroups,omitempty"`
}

// Execution is the state machine's input: one attempt of a run.
type Execution struct {
	Export  string `json:"export"`
	RunID   string `json:"runId"`
	Attempt int64  `json:"attempt"` // the export's epoch when it was claimed: its fencing token
	Plan    string `json:"plan"`    // the plan's base (plans/<base>/)
	// ItemsKey is the plan's items.json, which the Map reads.
	ItemsKey string `json:"itemsKey"`
	// MapResultsPrefix is where the Map's ResultWriter puts its children's
	// results (runs/<export>/<run>/attempts/<n>/map), keeping the Map's own
	// result tiny.
	MapResultsPrefix string  `json:"mapResultsPrefix"`
	ListID           string  `json:"listId"`
	Concurrency      int     `json:"concurrency"`
	WorkerRPS        float64 `json:"workerRps"`
	// GroupSize is how many consecutive batches one syncbatch invocation
	// sends (the Map's ItemBatcher reads it); see GroupSize.
	GroupSize int `json:"groupSize"`
	// StartedAt is when the attempt began (before planning, when it
	// planned): for the report's duration only.
	StartedAt time.Time `json:"startedAt,omitzero"`
}

// Item is one batch in items.json, the list the Map reads: where its line
// is in batches.jsonl, and the line's checksum, checked before sending.
// An item with Batches is a group of consecutive batches (MapItems), one
// child's work: Batch, Offset and Length then span them. A group past
// the Map's first concurrency is a Relay: the Map starts it as another
// ends (see Share). Groups and Workers are the run's groups and the
// Map's concurrency, on every group (the child's event holds its items
// alone; an item, unlike the execution input, is there for any state
// machine the run started under, and a plan from before them holds 0).
type Item struct {
	Batch   int    `json:"batch"`
	Offset  int64  `json:"offset"`
	Length  int64  `json:"length"`
	CRC32C  string `json:"crc32c,omitempty"`
	Batches []Item `json:"batches,omitempty"`
	Relay   bool   `json:"relay,omitempty"`
	Groups  int    `json:"groups,omitempty"`
	Workers int    `json:"workers,omitempty"`
}

// BatchItems is items with each group replaced by its batches.
func BatchItems(items []Item) []Item {
	out := make([]Item, 0, len(items))
	for _, it := range items {
		if len(it.Batches) == 0 {
			out = append(out, it)
			continue
		}
		out = append(out, it.Batches...)
	}
	return out
}

// Group is the syncbatch Lambda's event: consecutive items of one run, as
// the Map's ItemBatcher hands them to a child, and what all of them share.
type Group struct {
	Items      []Item     `json:"Items"`
	BatchInput GroupInput `json:"BatchInput"`
}

// GroupInput is what every batch of a group shares (the ItemBatcher's
// BatchInput, from the execution input).
type GroupInput struct {
	Export    string  `json:"export"`
	RunID     string  `json:"runId"`
	Attempt   int64   `json:"attempt"`
	Plan      string  `json:"plan"`
	ListID    string  `json:"listId"`
	WorkerRPS float64 `json:"workerRps"`
}

// RowIssue is one contact that was not delivered, and why.
type RowIssue struct {
	Row    int    `json:"row"`
	Email  string `json:"email"`
	Reason string `json:"reason"`
}

// Requests counts the HTTP requests a batch (or run) made.
type Requests struct {
	Total     int            `json:"total"`
	ByStatus  map[string]int `json:"byStatus,omitempty"`
	Retries   int            `json:"retries"`
	Throttled int            `json:"throttled"`
	// Lookup of Total listed the account's contacts (mode update or
	// create on a destination that cannot limit an upsert itself).
	Lookup int `json:"lookup,omitempty"`
}

func (r *Requests) add(o Requests) {
	r.Total += o.Total
	r.Retries += o.Retries
	r.Throttled += o.Throttled
	r.Lookup += o.Lookup
	for k, v := range o.ByStatus {
		if r.ByStatus == nil {
			r.ByStatus = map[string]int{}
		}
		r.ByStatus[k] += v
	}
}

// BatchResult is runs/<export>/<run>/results/NNNNNN.json, written once a
// batch is settled (every contact sent or rejected), and
// failures/NNNNNN.json for an attempt that left contacts failed. StartedAt
// and DurationMS place it on the report's requests timeline.
type BatchResult struct {
	Batch      int        `json:"batch"`
	Sent       int        `json:"sent"`
	Removed    int        `json:"removed"`
	Rejected   []RowIssue `json:"rejected,omitempty"`
	Failed     []RowIssue `json:"failed,omitempty"`
	Requests   Requests   `json:"requests"`
	DurationMS int64      `json:"durationMs"`
	Skipped    bool       `json:"skipped,omitempty"` // the result already existed: nothing was sent again
	// ModeSkipped: contacts the export's mode left alone (update: not in
	// the destination; create: already in it), with the reason.
	ModeSkipped []RowIssue `json:"modeSkipped,omitempty"`
	StartedAt   time.Time  `json:"startedAt,omitzero"`
}

// GroupSummary is what syncbatch answers for a group: counts, never a
// contact. Step Functions keeps a task's answer in the execution's history
// and in the Map's ResultWriter export, where no email belongs; each
// batch's result file (results/NNNNNN.json) holds the details finalize
// reads.
type GroupSummary struct {
	First    int `json:"first"` // the group's first and last batch
	Last     int `json:"last"`
	Sent     int `json:"sent"`
	Removed  int `json:"removed"`
	Rejected int `json:"rejected"`
	Requests int `json:"requests"`
	Skipped  int `json:"skipped,omitempty"` // batches an earlier attempt had settled: nothing was sent again
	// ModeSkipped counts the contacts the export's mode left alone.
	ModeSkipped int `json:"modeSkipped,omitempty"`
}

// The errors syncbatch returns. Their type names are the Lambda errorType
// that the state machine's Retry and Catch match, so do not rename them
// without changing statemachine/export.asl.json.

// Unauthorized: the key was refused, or there is none (the secret is
// missing or empty); the whole run stops at once.
type Unauthorized struct {
	Msg   string
	noKey bool   // no key to send: the secret is missing or empty
	api   string // the destination's kind that refused the key
	cause error  // what was classified, for errors.As (not sent to the state machine)
}

func (e *Unauthorized) Error() string { return e.Msg }
func (e *Unauthorized) Unwrap() error { return e.cause }

// Transient: some contacts could not be delivered for a retryable reason;
// the state machine retries the batch with backoff.
type Transient struct {
	Msg   string
	cause error
}

func (e *Transient) Error() string { return e.Msg }
func (e *Transient) Unwrap() error { return e.cause }

// Corrupt: a batch's bytes do not match the plan's checksum (or are not
// all there); nothing of that batch is sent and retrying cannot help.
type Corrupt struct{ Msg string }

func (e *Corrupt) Error() string { return e.Msg }

// Throttled: the destination kept answering 429 past the client's retries.
type Throttled struct {
	Msg   string
	cause error
}

func (e *Throttled) Error() string { return e.Msg }
func (e *Throttled) Unwrap() error { return e.cause }

// Fenced: the attempt no longer holds its export (it was closed, and
// another may run): nothing more of it is sent, and retrying cannot help.
type Fenced struct{ Msg string }

func (e *Fenced) Error() string { return e.Msg }
