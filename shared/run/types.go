// Package run is segpilot's pipeline core: it plans a run from a segment file
// (ingest and refresh), sends a group of batches (syncbatch) and closes a run
// (finalize). It talks to the world only through small interfaces (an object
// store, a workflow starter, a destination), so Lambda, local mode and tests
// share every line of it.
package run

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/plan"
)

// Starter starts one workflow execution per run; a name that was already
// started reports started=false and no error (Step Functions'
// ExecutionAlreadyExists), which is what makes duplicate events harmless.
type Starter interface {
	StartRun(ctx context.Context, name string, input []byte) (started bool, err error)
}

// RunChecker is what a Starter may also offer: the state of a run it
// started, by execution name. It lets an export's lock held by a run that
// will never finalize (stopped by hand, say) be taken over within minutes.
type RunChecker interface {
	RunStatus(ctx context.Context, name string) (RunStatus, error)
}

// RunStatus is the state of a started run's execution.
type RunStatus struct {
	State   RunState
	EndedAt time.Time // when State is RunEnded
}

// RunState is where a started run's execution is.
type RunState int

const (
	RunNotStarted RunState = iota // no such execution
	RunActive                     // running, or waiting to be redriven
	RunEnded                      // succeeded, failed, timed out or stopped
)

// Processes tells whether the process that wrote an export's lock still
// runs: local mode, where several processes on one host may share a bucket
// folder, waits for a live holder and takes over from a dead one at once.
// (Lambda has none: its locks are judged by their age and their execution.)
type Processes interface {
	// Self names this process, as the locks it writes record it.
	Self() string
	// Alive says whether the process owner names still runs; an error
	// means it cannot be told (e.g. it runs on another host).
	Alive(owner string) (bool, error)
}

// Destination is where a batch goes: the destination port (shared/dest),
// which every adapter (Autopilot, Ortto) implements.
type Destination = dest.Destination

// Connector returns a destination for one batch. workerRPS is this worker's
// share of the connection's budget (Lambda); local mode may ignore it and
// pace every worker with one shared limiter instead.
type Connector func(ctx context.Context, conn config.Connection, workerRPS float64) (Destination, error)

// Triggers say what started a run.
const (
	TriggerS3       = "s3"
	TriggerSchedule = "schedule"
	TriggerManual   = "manual"
)

// Run statuses, as written in report.json.
const (
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusHeld      = "held"    // mirror safety brake engaged; nothing sent
	StatusRefused   = "refused" // export disabled or connection without consent; nothing sent
	StatusInvalid   = "invalid" // the file or config failed validation; nothing sent
	StatusRunning   = "running" // planned and started
	StatusUpToDate  = "up-to-date"
	StatusDryRun    = "dry-run"
	StatusNoInput   = "no-input" // refresh found no segment file
)

// Source identifies the input object of a run.
type Source struct {
	Key       string `json:"key"`
	ETag      string `json:"etag,omitempty"`
	VersionID string `json:"versionId,omitempty"`
	Size      int64  `json:"size"`
}

// Manifest is runs/<export>/<run>/manifest.json: what the run will do.
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
	Counts        plan.Counts       `json:"counts"`
	// Batches is the index of batches.jsonl. A run planned by an earlier
	// segpilot wrote a file per batch (batches/NNNNNN.json): its entries
	// have no byte range (Length 0), and its batches are read from there.
	Batches     []plan.BatchRef `json:"batches"`
	Held        bool            `json:"held,omitempty"`
	HeldReason  string          `json:"heldReason,omitempty"`
	ShowEmails  bool            `json:"showEmails,omitempty"` // the export's showEmails: unmasked emails in the report
	Concurrency int             `json:"concurrency"`
	WorkerRPS   float64         `json:"workerRps"`
	PlannedAt   time.Time       `json:"plannedAt"`
}

// Execution is the state machine's input.
type Execution struct {
	Export   string `json:"export"`
	RunID    string `json:"runId"`
	ItemsKey string `json:"itemsKey"`
	// MapResultsPrefix is where the Map's ResultWriter puts its children's
	// results (runs/<export>/<run>/map), keeping the Map's own result tiny.
	MapResultsPrefix string  `json:"mapResultsPrefix"`
	ListID           string  `json:"listId"`
	Concurrency      int     `json:"concurrency"`
	WorkerRPS        float64 `json:"workerRps"`
	// GroupSize is how many consecutive batches one syncbatch invocation
	// sends (the Map's ItemBatcher reads it); see GroupSize.
	GroupSize int `json:"groupSize"`
	// StartedAt is when this attempt began (before planning, when it
	// planned); Resumed counts the batches earlier attempts settled.
	StartedAt time.Time `json:"startedAt,omitzero"`
	Resumed   int       `json:"resumed,omitempty"`
}

// Item is one batch in items.json, the list the Map reads: where its line
// is in batches.jsonl, and the line's checksum, checked before sending. An
// item of a run planned by an earlier segpilot has no range (Length 0):
// its batch is the file batches/NNNNNN.json.
type Item struct {
	Batch  int    `json:"batch"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	CRC32C string `json:"crc32c,omitempty"`
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
	ListID    string  `json:"listId"`
	WorkerRPS float64 `json:"workerRps"`
}

// UnmarshalJSON also reads the event of an execution started before
// groups, one batch: {"export", "runId", "listId", "workerRps", "batch",
// "crc32c"}. Step Functions finishes an execution on the definition it
// started with, so such events arrive after an upgrade.
func (g *Group) UnmarshalJSON(data []byte) error {
	type group Group // without this method
	var ev struct {
		group
		GroupInput
		Item
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return err
	}
	*g = Group(ev.group)
	if len(g.Items) == 0 && ev.Item.Batch > 0 {
		*g = Group{Items: []Item{ev.Item}, BatchInput: ev.GroupInput}
	}
	return nil
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
}

func (r *Requests) add(o Requests) {
	r.Total += o.Total
	r.Retries += o.Retries
	r.Throttled += o.Throttled
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
	StartedAt  time.Time  `json:"startedAt,omitzero"`
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
}

func (e *Unauthorized) Error() string { return e.Msg }

// Transient: some contacts could not be delivered for a retryable reason;
// the state machine retries the batch with backoff.
type Transient struct{ Msg string }

func (e *Transient) Error() string { return e.Msg }

// Corrupt: a batch's bytes do not match the plan's checksum (or are not
// all there); nothing of that batch is sent and retrying cannot help.
type Corrupt struct{ Msg string }

func (e *Corrupt) Error() string { return e.Msg }

// Throttled: the destination kept answering 429 past the client's retries.
type Throttled struct{ Msg string }

func (e *Throttled) Error() string { return e.Msg }

// Keys of the bucket layout (see README).
const ConfigKey = "config/exports.yaml"

func runPrefix(export, runID string) string { return "runs/" + export + "/" + runID + "/" }
func manifestKey(export, runID string) string {
	return runPrefix(export, runID) + "manifest.json"
}
func itemsKey(export, runID string) string         { return runPrefix(export, runID) + "items.json" }
func mapResultsPrefix(export, runID string) string { return runPrefix(export, runID) + "map" }
func reportKey(export, runID string) string        { return runPrefix(export, runID) + "report.json" }

// listRequestsKey holds the requests ingest made to find the run's list.
func listRequestsKey(export, runID string) string {
	return runPrefix(export, runID) + "list-requests.json"
}
func batchesKey(export, runID string) string { return runPrefix(export, runID) + plan.BatchesFile }

// batchFileKey is where a run planned by an earlier segpilot keeps a batch.
func batchFileKey(export, runID string, seq int) string {
	return fmt.Sprintf("%sbatches/%06d.json", runPrefix(export, runID), seq)
}
func resultsPrefix(export, runID string) string { return runPrefix(export, runID) + "results/" }
func resultKey(export, runID string, seq int) string {
	return fmt.Sprintf("%s%06d.json", resultsPrefix(export, runID), seq)
}
func progressKey(export, runID string, seq int) string {
	return fmt.Sprintf("%sprogress/%06d.json", runPrefix(export, runID), seq)
}
func failureKey(export, runID string, seq int) string {
	return fmt.Sprintf("%sfailures/%06d.json", runPrefix(export, runID), seq)
}
func plannedSnapshotKey(export, runID string) string { return runPrefix(export, runID) + "snapshot" }
func inputRejectedKey(export, runID string) string {
	return runPrefix(export, runID) + "input-rejected.csv"
}
func rejectedKey(export, runID string) string { return runPrefix(export, runID) + "rejected.csv" }
func refusalKey(export, runID string) string  { return runPrefix(export, runID) + "refused.json" }
func snapshotKey(export string) string        { return "state/" + export + "/snapshot" }
