// Package ortto is the Ortto API v1 adapter of the destination port
// (shared/dest): people merged by email 100 a call with the export's tag,
// removals as unset_tags 100 a call, custom fields checked (or created)
// before a run sends anything. Pacing, retries, error classes and request
// counts are shared/httpx's; this package maps requests, answers and error
// bodies. The contract is shared/ortto-api.md; the simulator is ortto/sim.
//
// Merges are synchronous ("async": false): only then does Ortto say, per
// person, whether it was created, merged, suppressed or refused, which
// rejected.csv and the never-resend-what-was-delivered promise need. An
// asynchronous merge only confirms the queueing; a person refused later
// would be reported sent.
package ortto

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/httpx"
	"github.com/segpilot/segpilot/shared/pace"
)

const (
	keyHeader = "X-Api-Key"
	// maxBatch is Ortto's limit of people per merge.
	maxBatch = 100
	// Ortto blocks a caller's IP for a while after 15 bad requests in 15
	// seconds; segpilot sends at most 10 in any 15 s.
	maxRefused = 10
	refusedPer = 15 * time.Second
)

// Regions are Ortto's instance regions and their API hosts (every call is
// under /v1); a key works only on its own region's host.
var Regions = map[string]string{
	"global": "https://api.ap3api.com",
	"au":     "https://api.au.ap3api.com",
	"eu":     "https://api.eu.ap3api.com",
}

// Options configures a Client. Zero values take httpx's defaults.
type Options struct {
	BaseURL           string // a region's host (Regions) or the simulator's, with /v1 (dest.Kind's Endpoint adds it)
	APIKey            string // the private key of a Custom API data source; sent as X-Api-Key, never logged
	HTTPClient        *http.Client
	RequestsPerSecond float64
	Burst             int
	Limiter           *pace.Limiter // shared budget; overrides RequestsPerSecond and Burst
	Timeout           time.Duration
	MaxAttempts       int
	BaseBackoff       time.Duration
	MaxBackoff        time.Duration
	MaxRetryAfter     time.Duration
	Logger            *slog.Logger

	sleep func(ctx context.Context, d time.Duration) error // tests
}

// Client talks to one Ortto account. It is safe for concurrent use.
type Client struct {
	hc *httpx.Client
}

// New validates opts and returns a Client.
func New(opts Options) (*Client, error) {
	hc, err := httpx.New(httpx.Options{
		API: "ortto", BaseURL: opts.BaseURL, KeyHeader: keyHeader, Key: opts.APIKey,
		HTTPClient: opts.HTTPClient, RequestsPerSecond: opts.RequestsPerSecond, Burst: opts.Burst, Limiter: opts.Limiter,
		Timeout: opts.Timeout, MaxAttempts: opts.MaxAttempts, BaseBackoff: opts.BaseBackoff, MaxBackoff: opts.MaxBackoff,
		MaxRetryAfter: opts.MaxRetryAfter, Logger: opts.Logger,
		RetryHint: retryHint, Message: httpx.Message, Sleep: opts.sleep,
	})
	if err != nil {
		return nil, err
	}
	return &Client{hc: hc}, nil
}

// retryHint reads the wait Ortto puts in a 429's body (no header):
// {"error": {"code": "rate-limit", "message": "rate limit", "try-in-seconds": 10}}.
func retryHint(_ http.Header, body []byte, _ time.Time) (time.Duration, bool) {
	var doc struct {
		Error struct {
			TryIn *float64 `json:"try-in-seconds"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &doc) != nil || doc.Error.TryIn == nil || *doc.Error.TryIn < 0 {
		return 0, false
	}
	return time.Duration(*doc.Error.TryIn * float64(time.Second)), true
}

// Stats returns a snapshot of the counters.
func (c *Client) Stats() dest.Stats { return c.hc.Stats() }

var _ dest.Destination = (*Client)(nil)

// person is one entry of a merge's people.
type person struct {
	Fields    map[string]any `json:"fields"`
	Tags      []string       `json:"tags,omitempty"`
	UnsetTags []string       `json:"unset_tags,omitempty"`
}

// merge is a POST /v1/person/merge body. It never carries bol::p or
// bol::sp: a new person gets Ortto's default subscription, an existing
// one keeps their choice.
type merge struct {
	People          []person `json:"people"`
	MergeBy         []string `json:"merge_by"`
	MergeStrategy   int      `json:"merge_strategy"` // 2: overwrite the fields sent, keep the others
	FindStrategy    int      `json:"find_strategy"`
	Async           bool     `json:"async"`
	SkipNonExisting bool     `json:"skip_non_existing,omitempty"`
	// SuppressionListFieldID: an address on the account's suppression list
	// is reported per person ("suppressed"), not created.
	SuppressionListFieldID string `json:"suppression_list_field_id,omitempty"`
}

const (
	mergeOverwrite = 2
	mergeNewOnly   = 3 // existing people are left alone, untagged
	fieldEmail     = "str::email"
)

// mergeAnswer is Ortto's answer to a synchronous merge: one entry per
// person, in request order.
type mergeAnswer struct {
	People []struct {
		PersonID string `json:"person_id"`
		Status   string `json:"status"` // created, merged, suppressed, …
		Error    string `json:"error"`
	} `json:"people"`
}

func (c *Client) merge(ctx context.Context, body merge) (mergeAnswer, error) {
	var answer mergeAnswer
	err := c.hc.Do(ctx, httpx.Request{Method: http.MethodPost, Path: "/person/merge", Body: body}, &answer)
	return answer, err
}

// Upsert merges contacts by email, 100 a call, tagging each with tag. A
// person Ortto refuses (suppressed, invalid) is rejected on its own; the
// rest of its call goes through. The error is not nil only when the key
// was refused or ctx ended; the contacts not attempted then end as failed.
// It never returns dest.ErrListGone, nor does Remove: a tag cannot be
// gone, since Ortto makes it on first use.
func (c *Client) Upsert(ctx context.Context, tag string, contacts []dest.Contact, w dest.Write) ([]dest.Outcome, error) {
	out := make([]dest.Outcome, len(contacts))
	pending := make([]int, 0, len(contacts))
	people := make([]person, len(contacts))
	custom := map[string]bool{} // keys checked: every contact carries the same few
	for i, ct := range contacts {
		out[i].Email = ct.Email
		fields, reason := fieldsOf(ct, custom)
		if reason != "" {
			out[i].Status, out[i].Reason = dest.Rejected, reason
			continue
		}
		people[i] = person{Fields: fields, Tags: []string{tag}}
		pending = append(pending, i)
	}
	for start := 0; start < len(pending); start += maxBatch {
		idx := pending[start:min(start+maxBatch, len(pending))]
		batch := make([]person, len(idx))
		for j, i := range idx {
			batch[j] = people[i]
		}
		// Merges are keyed by email, so replaying a call that timed out
		// after being applied changes nothing.
		body := merge{People: batch, MergeBy: []string{fieldEmail}, MergeStrategy: mergeOverwrite, SuppressionListFieldID: fieldEmail}
		switch w {
		case dest.WriteUpdate:
			body.SkipNonExisting = true
		case dest.WriteCreate:
			body.MergeStrategy = mergeNewOnly
		}
		outcome := func(status, errMsg string) (dest.Status, string) {
			if status == "ignored" && w != dest.WriteAny {
				return dest.Skipped, w.SkipReason("Ortto")
			}
			return upsertOutcome(status, errMsg)
		}
		answer, err := c.merge(ctx, body)
		if stop := settle(ctx, out, idx, answer, err, outcome); stop != nil {
			return out, fmt.Errorf("merging people (call %d): %w", start/maxBatch+1, stop)
		}
	}
	return out, nil
}

// upsertOutcome maps one person's entry of a merge answer.
func upsertOutcome(status, errMsg string) (dest.Status, string) {
	switch {
	case status == "suppressed":
		return dest.Rejected, "suppressed in Ortto: " + orText(errMsg, "the address is on the suppression list")
	case errMsg != "" || status == "error":
		return dest.Rejected, orText(errMsg, "refused by Ortto")
	case status == "created" || status == "merged":
		return dest.Sent, ""
	default:
		return dest.Failed, fmt.Sprintf("Ortto answered status %q for this person", status)
	}
}

// Remove takes the tag off each email, 100 a call (unset_tags), never
// creating a person (skip_non_existing). A person without the tag, or
// unknown, counts as removed, so a re-run is harmless.
func (c *Client) Remove(ctx context.Context, tag string, emails []string) ([]dest.Outcome, error) {
	out := make([]dest.Outcome, len(emails))
	for i, email := range emails {
		out[i].Email = email
	}
	idx := make([]int, 0, maxBatch)
	for start := 0; start < len(emails); start += maxBatch {
		chunk := emails[start:min(start+maxBatch, len(emails))]
		people := make([]person, len(chunk))
		idx = idx[:0]
		for j, email := range chunk {
			people[j] = person{Fields: map[string]any{fieldEmail: email}, UnsetTags: []string{tag}}
			idx = append(idx, start+j)
		}
		answer, err := c.merge(ctx, merge{People: people, MergeBy: []string{fieldEmail}, MergeStrategy: mergeOverwrite,
			SkipNonExisting: true})
		if stop := settle(ctx, out, idx, answer, err, removeOutcome); stop != nil {
			return out, fmt.Errorf("removing tag %q (call %d): %w", tag, start/maxBatch+1, stop)
		}
	}
	return out, nil
}

func removeOutcome(status, errMsg string) (dest.Status, string) {
	if errMsg != "" || status == "error" {
		return dest.Failed, "removing the tag: " + orText(errMsg, "refused by Ortto")
	}
	return dest.Sent, ""
}

// settle records the outcomes of one merge call for out[idx...]. It
// returns the error when the whole run must stop (a refused key, ctx
// ended); the outcomes still unset then end as failed.
//
// A call refused as a whole (400) is not split to find a culprit, as the
// Autopilot adapter does: Ortto reports a person's problem in that
// person's entry, so a whole-call 400 is the call's (a field deleted
// since the run checked it), and Ortto locks out a caller sending 15 bad
// requests in 15 seconds. Its people fail with Ortto's message; the batch
// is retried and, failing again, reported.
func settle(ctx context.Context, out []dest.Outcome, idx []int, answer mergeAnswer, err error, outcome func(status, errMsg string) (dest.Status, string)) error {
	var refused *dest.UnauthorizedError
	switch {
	case err == nil:
		for j, i := range idx {
			if j >= len(answer.People) {
				out[i].Status, out[i].Reason = dest.Failed, "Ortto's answer has no entry for this person"
				continue
			}
			p := answer.People[j]
			out[i].Status, out[i].Reason = outcome(p.Status, p.Error)
			out[i].ID = p.PersonID
		}
		return nil
	case errors.As(err, &refused) || ctx.Err() != nil:
		for i := range out {
			if out[i].Status == "" {
				out[i].Status, out[i].Reason = dest.Failed, "not attempted: "+err.Error()
			}
		}
		return err
	default:
		for _, i := range idx {
			out[i].Status, out[i].Reason = dest.Failed, err.Error()
		}
		return nil
	}
}

func orText(s, fallback string) string {
	if strings.TrimSpace(s) == "" {
		return fallback
	}
	return s
}
