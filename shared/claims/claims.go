// Package claims is the bucket-backed dest.Registry: before an adapter
// creates an object in a destination (an Autopilot list, an Ortto custom
// field) it claims the object's name in the bucket, so that every run and
// process of one connection creates it once. Autopilot allows two lists
// with one title, and the second is for ever: exports sharing a list raced
// to create it, and the export lock could not stop them (it is per export;
// the list is per connection).
//
// # The claim
//
// One small JSON object per name:
//
//	state/<connection>/lists/<hex of sha256(title)[:16]>.json
//	state/<connection>/fields/<hex of sha256(field id)[:16]>.json
//
// holding the name, who claimed it and when, a generation (1, then +1 at
// every takeover) and, once known, the destination's id and who recorded
// it. Names are hashed so any title makes a valid key; the name inside
// guards against a collision. Every write is create-only (IfNoneMatch) or
// compare-and-swap on the ETag read (IfMatch): a caller that loses a race
// reads again and starts over, never overwrites. Claims are never deleted.
//
// # Resolve, step by step
//
// Each round reads the claim, then finds the destination's objects with
// the name (a real request, so a refused key is found before anything is
// sent), then:
//
//  1. No claim, objects found: record the oldest (create-only). It was made
//     by hand or before claims existed; adopting it beats a duplicate.
//  2. No claim, none found: claim it (create-only), create the object,
//     record its id (CAS). Exactly one caller wins the create-only put;
//     the others lose it and read the winner's claim next round.
//  3. An id recorded and found: use it; any other object with the name is
//     reported (dest.Resolved.Others), never sent to. The recorded id wins
//     over "oldest": it is the one earlier runs sent to.
//  4. An id recorded, not found, others with the name found: record the
//     oldest of them instead (CAS), naming the replaced id.
//  5. An id recorded, none found (deleted by hand, or the key now opens
//     another account): take the claim over (CAS, next generation) and
//     create, naming the replaced id. Never a blind overwrite: two callers
//     seeing the list gone race on the CAS and one creates.
//  6. Claimed without an id, objects found: the holder created it and has
//     not recorded it (it died after creating, or is about to): record the
//     oldest (CAS). An interrupted creation is resolved by finding, never
//     by creating again. Should the holder record first, the CAS fails and
//     the next round reads its id.
//  7. Claimed without an id, none found: the holder is creating, or died
//     before it did. Wait, finding again every Poll. A claim seen
//     unchanged (same ETag) for Lease, on this caller's own monotonic
//     clock, is taken over (CAS, next generation); the new holder finds
//     once more, since the old one may have created after all, and creates
//     only if still none. Past Wait, give up with dest.ErrInProgress (a
//     transient error: the step is retried later).
//
// A holder must create within its lease: Create's context ends three
// quarters of Lease after the claim was written, measured before the put,
// so by the time a waiter has watched the claim for a whole Lease the
// holder has stopped sending for at least a quarter of it. That margin is
// for a request the holder gave up on that the destination still applies
// late: the waiter's final find sees it. (No destination takes a fencing
// token, so this is as far as a claim can fence; if a late request still
// lands, its object is a duplicate that step 3 reports and leaves alone.)
// Wall clocks are never compared between processes.
package claims

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/segpilot/segpilot/shared/clock"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/store"
)

// Defaults for zero Options.
const (
	DefaultLease = 2 * time.Minute
	DefaultPoll  = time.Second
)

// Options tunes a Registry. Zero values take the defaults.
type Options struct {
	// Holder says who claims, in the claim: a run's id. Default: the
	// process id and host.
	Holder string
	// Lease is how long a holder has to create (three quarters of it) and
	// how long a waiter watches an unrecorded claim before taking it over.
	// Default 2 minutes.
	Lease time.Duration
	// Poll is how often a waiter finds again. Default 1 second.
	Poll time.Duration
	// Wait bounds how long Resolve waits for another holder before
	// dest.ErrInProgress. Default 2 × Lease.
	Wait time.Duration
}

// Registry keeps one connection's claims in an object store. It is safe
// for concurrent use, and any number of Registries (processes) may share
// the store.
type Registry struct {
	st         store.ObjectStore
	connection string
	holder     string
	lease      time.Duration
	poll       time.Duration
	wait       time.Duration
}

var _ dest.Registry = (*Registry)(nil)

// New returns the Registry of connection's claims in st.
func New(st store.ObjectStore, connection string, opts Options) (*Registry, error) {
	if connection == "" || connection == "." || connection == ".." ||
		strings.ContainsAny(connection, `/\`) || strings.ContainsFunc(connection, unicode.IsControl) {
		return nil, fmt.Errorf("claims: connection name %q cannot be a key segment", connection)
	}
	if opts.Lease < 0 || opts.Poll < 0 || opts.Wait < 0 {
		return nil, errors.New("claims: options must not be negative")
	}
	r := &Registry{st: st, connection: connection, holder: opts.Holder, lease: opts.Lease, poll: opts.Poll, wait: opts.Wait}
	if r.holder == "" {
		host, err := os.Hostname()
		if err != nil {
			host = "unknown host"
		}
		r.holder = fmt.Sprintf("pid %d on %s", os.Getpid(), host)
	}
	if r.lease == 0 {
		r.lease = DefaultLease
	}
	if r.poll == 0 {
		r.poll = DefaultPoll
	}
	if r.wait == 0 {
		r.wait = 2 * r.lease
	}
	return r, nil
}

// Key is where the claim on kind's name lives.
func (r *Registry) Key(kind dest.ObjectKind, name string) string {
	sum := sha256.Sum256([]byte(name))
	return fmt.Sprintf("state/%s/%ss/%s.json", r.connection, kind, hex.EncodeToString(sum[:16]))
}

// claim is the stored object.
type claim struct {
	Connection string    `json:"connection"`
	Kind       string    `json:"kind"`
	Name       string    `json:"name"`
	Generation int       `json:"generation"`
	Holder     string    `json:"holder"`
	ClaimedAt  time.Time `json:"claimed_at"`
	ID         string    `json:"id,omitempty"`
	RecordedBy string    `json:"recorded_by,omitempty"`
	RecordedAt time.Time `json:"recorded_at,omitzero"`
	// Replaced are ids recorded before that the destination stopped
	// listing, oldest first.
	Replaced []string `json:"replaced,omitempty"`
}

// resolution is one Resolve call's state.
type resolution struct {
	r       *Registry
	kind    dest.ObjectKind
	name    string
	key     string
	objects dest.Objects
	// watched is the unrecorded claim a waiter watches, and since when.
	watched      string
	watchedSince time.Time
	// created is the id this call created, and the one it replaced, should
	// a waiter record it first.
	created, replaced string
}

// next is what Resolve does after a round.
type next int

const (
	settled next = iota // the object is resolved
	again               // a race was lost: read and find again now
	wait                // another holder is creating: find again after Poll
)

// Resolve implements dest.Registry; the package comment tells how.
func (r *Registry) Resolve(ctx context.Context, kind dest.ObjectKind, name string, objects dest.Objects) (dest.Resolved, error) {
	if name == "" {
		return dest.Resolved{}, fmt.Errorf("resolving a %s: empty name", kind)
	}
	res := &resolution{r: r, kind: kind, name: name, key: r.Key(kind, name), objects: objects}
	start := time.Now()
	for {
		cur, etag, err := res.read(ctx)
		if err != nil {
			return dest.Resolved{}, err
		}
		ids, err := objects.Find(ctx)
		if err != nil {
			return dest.Resolved{}, err
		}
		out, then, err := res.round(ctx, cur, etag, ids)
		switch {
		case err != nil || then == settled:
			return out, err
		case then == wait && time.Since(start) >= r.wait:
			return dest.Resolved{}, fmt.Errorf("waiting for %s, who claimed %s %q at %s: %w",
				cur.Holder, kind, name, cur.ClaimedAt.Format(time.RFC3339), dest.ErrInProgress)
		case then == wait:
			if err := clock.Sleep(ctx, r.poll); err != nil {
				return dest.Resolved{}, err
			}
		}
	}
}

// round takes one step of the protocol (the package comment's numbers).
func (res *resolution) round(ctx context.Context, cur *claim, etag string, ids []string) (dest.Resolved, next, error) {
	switch {
	case cur == nil && len(ids) > 0: // 1
		return res.record(ctx, res.fresh(ids[0]), "", ids, "")
	case cur == nil: // 2
		return res.claimAndCreate(ctx, res.fresh(""), "", false, "")
	case cur.ID != "" && slices.Contains(ids, cur.ID) && cur.ID == res.created: // 3, after a waiter recorded ours
		out := resolved(cur.ID, ids, res.replaced)
		out.Recorded, out.Created = true, true
		return out, settled, nil
	case cur.ID != "" && slices.Contains(ids, cur.ID): // 3
		out := resolved(cur.ID, ids, "")
		out.Recorded = true
		return out, settled, nil
	case cur.ID != "" && len(ids) > 0: // 4
		c := res.takeover(cur)
		c.ID, c.RecordedBy, c.RecordedAt = ids[0], res.r.holder, time.Now().UTC()
		return res.record(ctx, c, etag, ids, cur.ID)
	case cur.ID != "": // 5
		return res.claimAndCreate(ctx, res.takeover(cur), etag, false, cur.ID)
	case len(ids) > 0: // 6
		c := *cur
		c.ID, c.RecordedBy, c.RecordedAt = ids[0], res.r.holder, time.Now().UTC()
		return res.record(ctx, &c, etag, ids, "")
	}
	// 7: claimed, nothing made yet.
	if etag != res.watched {
		res.watched, res.watchedSince = etag, time.Now()
	}
	if time.Since(res.watchedSince) < res.r.lease {
		return dest.Resolved{}, wait, nil
	}
	return res.claimAndCreate(ctx, res.takeover(cur), etag, true, "")
}

// fresh is a first claim by this caller, with id when it records one.
func (res *resolution) fresh(id string) *claim {
	now := time.Now().UTC()
	c := &claim{Connection: res.r.connection, Kind: string(res.kind), Name: res.name, Generation: 1, Holder: res.r.holder, ClaimedAt: now}
	if id != "" {
		c.ID, c.RecordedBy, c.RecordedAt = id, res.r.holder, now
	}
	return c
}

// takeover is cur claimed anew by this caller, without an id; a recorded
// id moves to Replaced.
func (res *resolution) takeover(cur *claim) *claim {
	next := &claim{Connection: cur.Connection, Kind: cur.Kind, Name: cur.Name, Generation: cur.Generation + 1,
		Holder: res.r.holder, ClaimedAt: time.Now().UTC(), Replaced: slices.Clone(cur.Replaced)}
	if cur.ID != "" {
		next.Replaced = append(next.Replaced, cur.ID)
	}
	return next
}

// record writes c, whose id is one of ids, over etag ("": create-only).
func (res *resolution) record(ctx context.Context, c *claim, etag string, ids []string, replaced string) (dest.Resolved, next, error) {
	if _, err := res.write(ctx, c, etag); err != nil {
		return dest.Resolved{}, again, lostRace(err)
	}
	return resolved(c.ID, ids, replaced), settled, nil
}

// claimAndCreate writes c (this caller's claim, without an id) over etag
// and, holding it, creates the object and records its id. After a
// takeover from a holder that may be alive, it finds first.
func (res *resolution) claimAndCreate(ctx context.Context, c *claim, etag string, findFirst bool, replaced string) (dest.Resolved, next, error) {
	claimed := time.Now() // before the put: the lease runs from no later than the claim
	held, err := res.write(ctx, c, etag)
	if err != nil {
		return dest.Resolved{}, again, lostRace(err)
	}
	leased, cancel := context.WithDeadline(ctx, claimed.Add(res.r.lease*3/4))
	defer cancel()
	if findFirst {
		ids, err := res.objects.Find(leased)
		if err != nil {
			return dest.Resolved{}, again, err
		}
		if len(ids) > 0 {
			c.ID, c.RecordedBy, c.RecordedAt = ids[0], res.r.holder, time.Now().UTC()
			return res.record(ctx, c, held, ids, replaced)
		}
	}
	id, err := res.objects.Create(leased)
	if err != nil {
		return dest.Resolved{}, again, err
	}
	if id == "" {
		return dest.Resolved{}, again, fmt.Errorf("creating %s %q: the destination gave no id", res.kind, res.name)
	}
	res.created, res.replaced = id, replaced
	c.ID, c.RecordedBy, c.RecordedAt = id, res.r.holder, time.Now().UTC()
	out, then, err := res.record(ctx, c, held, []string{id}, replaced)
	out.Created = then == settled
	return out, then, err
}

// read returns the claim and its ETag; nil when there is none.
func (res *resolution) read(ctx context.Context) (*claim, string, error) {
	body, info, err := res.r.st.Get(ctx, res.key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading the claim on %s %q: %w", res.kind, res.name, err)
	}
	defer body.Close()
	raw, err := io.ReadAll(body)
	if err != nil {
		return nil, "", fmt.Errorf("reading the claim on %s %q: %w", res.kind, res.name, err)
	}
	var c claim
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, "", fmt.Errorf("decoding the claim %s: %w", res.key, err)
	}
	if c.Name != res.name || c.Kind != string(res.kind) {
		return nil, "", fmt.Errorf("the claim %s is on %s %q, not %s %q", res.key, c.Kind, c.Name, res.kind, res.name)
	}
	return &c, info.ETag, nil
}

// write puts c create-only (etag "") or over etag, and returns the new
// ETag.
func (res *resolution) write(ctx context.Context, c *claim, etag string) (string, error) {
	raw, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encoding the claim on %s %q: %w", res.kind, res.name, err)
	}
	opts := store.PutOptions{ContentType: "application/json", IfNoneMatch: etag == "", IfMatch: etag}
	info, err := res.r.st.Put(ctx, res.key, bytes.NewReader(raw), opts)
	if err != nil {
		return "", fmt.Errorf("writing the claim on %s %q: %w", res.kind, res.name, err)
	}
	return info.ETag, nil
}

// lostRace is nil when err says another caller wrote the claim first:
// the caller reads again. Any other error is returned.
func lostRace(err error) error {
	if errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrChanged) {
		return nil
	}
	return err
}

func resolved(id string, ids []string, replaced string) dest.Resolved {
	out := dest.Resolved{ID: id, Replaced: replaced}
	for _, other := range ids {
		if other != id {
			out.Others = append(out.Others, other)
		}
	}
	return out
}
