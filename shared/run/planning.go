package run

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/segpilot/segpilot/shared/claims"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/delivery"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/kinds"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/store"
)

// planFor returns the run's plan against base: the one planned already, or
// a new one. Planning is deterministic (the file, the config, the base
// snapshot), so two drainers planning the same run against the same base
// write the same objects, and the create-only manifest makes one of them
// the record.
func (s *Service) planFor(ctx context.Context, cfg *config.Config, e *config.Export, req StartRequest, runID string, base *SnapshotRef) (*Manifest, error) {
	m, err := s.readManifest(ctx, e.Name, runID, base.Base())
	if !errors.Is(err, store.ErrNotFound) {
		return m, err
	}
	return s.plan(ctx, cfg, e, req, runID, base, false, nil)
}

// dryRun plans a delivery against the export's current snapshot and says
// what it would do, writing nothing.
func (s *Service) dryRun(ctx context.Context, cfg *config.Config, e *config.Export, req StartRequest) (Result, error) {
	runID := runID(e.Name, req.Source, cfg.Version, req.FullResync)
	res := Result{Export: e.Name, RunID: runID, Status: StatusDryRun}
	if err := cfg.Runnable(e); err != nil {
		res.Status, res.Message = StatusRefused, err.Error()
		return res, nil
	}
	switch prev, err := ReadReport(ctx, s.Store, e.Name, runID); {
	case err == nil && prev.Status == StatusSucceeded:
		res.Status, res.Counts = StatusUpToDate, prev.Plan
		res.Message = "this file was already exported with this configuration; nothing to send"
		return res, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return res, err
	}
	st, _, err := s.readState(ctx, e.Name)
	if err != nil {
		return res, err
	}
	pv, err := newPreview(s.TempDir)
	if err != nil {
		return res, err
	}
	defer pv.close()
	// An attempt holding the export that has ended (its report is
	// written; the swap that moves the snapshot follows) left the
	// snapshot the next run plans against; one still going has not yet.
	base, busy := st.Snapshot, ""
	if h := st.Holder; h != nil {
		switch rep, err := ReadAttemptReport(ctx, s.Store, e.Name, h.Run, h.Attempt); {
		case err == nil && rep.Refill:
			base = nil
		case err == nil && rep.SnapshotPromoted:
			base = &SnapshotRef{Key: rep.Snapshot, Run: h.Run, Attempt: h.Attempt}
		case errors.Is(err, store.ErrNotFound):
			busy = fmt.Sprintf("run %s is in progress (attempt %d): this dry run plans against the list as it was before it", h.Run, h.Attempt)
		case err != nil:
			return res, err
		}
	}
	m, err := s.plan(ctx, cfg, e, req, runID, base, true, pv.explain)
	var limit *plan.LimitError
	var ferr *segment.FileError
	switch {
	case errors.As(err, &limit):
		res.Status, res.Message, res.Counts = StatusInvalid, err.Error(), limit.Counts
		return res, nil
	case errors.As(err, &ferr):
		res.Status, res.Message = StatusInvalid, err.Error()
		return res, nil
	case err != nil:
		return res, err
	}
	res.Counts = m.Counts
	res.Preview = previewKey(e.Name, runID)
	if err := pv.finish(ctx, s.Store, e.Name, res.Preview); err != nil {
		return res, err
	}
	if m.Held && !req.AllowLargeRemoval && !e.AllowLargeRemoval {
		res.Message = "would be held: " + m.HeldReason + "; if that is intended, " + s.words().LiftBrake(e.Name)
	}
	if busy != "" {
		res.Message = strings.TrimPrefix(res.Message+"; "+busy, "; ")
	}
	return res, nil
}

// plan reads the segment file, plans the run against base and (unless
// dry) uploads the plan under plans/<base>/; explain, if set, is told
// each contact's fate.
func (s *Service) plan(ctx context.Context, cfg *config.Config, e *config.Export, req StartRequest, runID string, base *SnapshotRef, dry bool, explain func(plan.Explained) error) (*Manifest, error) {
	conn := cfg.ConnectionOf(e)
	dir, err := os.MkdirTemp(s.TempDir, "segpilot-plan-*")
	if err != nil {
		return nil, fmt.Errorf("creating plan folder: %w", err)
	}
	defer os.RemoveAll(dir)

	var snap io.Reader
	if base != nil {
		rc, _, err := s.Store.Get(ctx, base.Key)
		if err != nil {
			return nil, fmt.Errorf("reading the snapshot %s: %w", base.Key, err)
		}
		defer rc.Close()
		snap = rc
	}
	src := func(ctx context.Context, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
		if req.Source.isFolder() {
			d, err := s.decideFolder(ctx, req.Source.Key, e)
			switch {
			case err != nil:
				return segment.Stats{}, err
			case !d.Complete || d.Identity != req.Source.ETag:
				return segment.Stats{}, &DeliveryChanged{Msg: "the folder " + req.Source.Key + " changed since this delivery of it was queued (" +
					d.Describe() + "): its newer state is a delivery of its own"}
			}
			return delivery.Read(ctx, s.Store, d, segment.Options{Mapping: e.Mapping(), TempDir: s.TempDir}, emit, reject)
		}
		rc, _, err := s.Store.Get(ctx, req.Source.Key)
		if err != nil {
			return segment.Stats{}, fmt.Errorf("reading %s: %w", req.Source.Key, err)
		}
		defer rc.Close()
		return segment.Read(ctx, rc, segment.Options{Name: req.Source.Key, Mapping: e.Mapping(), TempDir: s.TempDir}, emit, reject)
	}
	var inGroup func([]byte) bool
	var splitSum *SplitSummary
	if e.Split != nil {
		alloc, sum, err := s.allocation(ctx, e, dry)
		if err != nil {
			return nil, err
		}
		group := e.Split.Group
		inGroup, splitSum = func(email []byte) bool { return alloc.GroupOf(email) == group }, sum
	}
	p, err := plan.Build(ctx, src, snap, dir, plan.Options{
		InGroup: inGroup, Explain: explain,
		Mode: e.Mode, MaxProfiles: e.MaxProfiles, MaxRemovalShare: e.MaxRemovalShare,
		// The request's allowance is applied when the plan is run, not
		// planned: the plan is shared by every delivery of the file.
		AllowLargeRemoval: e.AllowLargeRemoval, TempDir: s.TempDir, FullResync: req.FullResync,
		BatchSize: conn.Capabilities().MaxBatch, // contacts per request the destination takes
	})
	if err != nil {
		return nil, err
	}
	concurrency, workerRPS := Pacing(conn.RequestsPerSecond)
	m := &Manifest{Export: e.Name, RunID: runID, Trigger: req.Trigger, Source: req.Source,
		ConfigVersion: cfg.Version, Connection: *conn, List: e.List, Fields: e.Fields(), CreateFields: e.CreateFields, Mode: e.Mode,
		Base: base.Base(), Counts: p.Counts, Batches: p.Batches, Held: p.Held, HeldReason: p.HeldReason, ShowEmails: e.ShowEmails,
		Concurrency: concurrency, WorkerRPS: workerRPS, ItemGroups: true, PlannedAt: s.now(), FullResync: req.FullResync, Split: splitSum}
	if base != nil {
		m.BaseKey = base.Key
	}
	if dry {
		return m, nil
	}
	return m, s.upload(ctx, dir, p, m)
}

// upload writes the plan under plans/<base>/ in five objects, whatever its
// size: the snapshot, input-rejected.csv, batches.jsonl, items.json (its
// index, which the Map reads) and the manifest, last and create-only, so
// a manifest's presence means the whole plan is there.
func (s *Service) upload(ctx context.Context, dir string, p *plan.Plan, m *Manifest) error {
	files := []struct{ local, key string }{
		{p.Files.Snapshot, plannedSnapshotKey(m.Export, m.RunID, m.Base)},
		{p.Files.Rejected, inputRejectedKey(m.Export, m.RunID, m.Base)},
		{p.Files.Batches, batchesKey(m.Export, m.RunID, m.Base)},
	}
	if p.Files.Undo != "" {
		files = append(files, struct{ local, key string }{p.Files.Undo, undoCSVKey(m.Export, m.RunID, m.Base)})
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, f := range files {
		g.Go(func() error {
			file, err := os.Open(filepath.Join(dir, f.local))
			if err != nil {
				return fmt.Errorf("uploading plan: %w", err)
			}
			defer file.Close()
			if _, err := s.Store.Put(gctx, f.key, file, store.PutOptions{}); err != nil {
				return fmt.Errorf("uploading %s: %w", f.key, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	items := MapItems(p.Batches, m.Concurrency, m.WorkerRPS)
	if err := putJSON(ctx, s.Store, itemsKey(m.Export, m.RunID, m.Base), items, store.PutOptions{}); err != nil {
		return err
	}
	err := putJSON(ctx, s.Store, manifestKey(m.Export, m.RunID, m.Base), m, store.PutOptions{IfNoneMatch: true})
	if errors.Is(err, store.ErrExists) {
		return nil // another drainer planned the same run against the same base
	}
	return err
}

// resolveList finds (or creates) the export's list, unless the plan has
// nothing to send, and returns the requests it made, what the destination
// said worth a note (two lists with the title, say) for the report, and
// whether the list the export sent to before is gone (deleted by hand, or
// the key now opens another account): then no snapshot says who is on the
// list now. A list or field it creates is claimed in the bucket first
// (shared/claims), so runs of other exports sharing it, in any process,
// create it once.
func (s *Service) resolveList(ctx context.Context, m *Manifest) (listInfo, error) {
	if len(m.Batches) == 0 {
		return listInfo{}, nil
	}
	d, err := s.Connect(ctx, m.Connection, Share{RPS: m.WorkerRPS})
	if err != nil {
		return listInfo{}, s.classify(fmt.Errorf("connecting to %s: %w", m.Connection.Name, err))
	}
	li, err := s.prepareList(ctx, d, m)
	li.requests = requestsOf(d.Stats())
	if err == nil && needsDirectory(m) {
		// Alone before the fan-out, the lookup paces at the connection's
		// whole budget, not a worker's share of it: an account of 100,000
		// contacts is 1,000 requests, 200 s at 5 a second (2,000 s at a
		// share, beyond ingest's 900 s).
		var whole Destination
		if whole, err = s.Connect(ctx, m.Connection, Share{}); err != nil {
			return li, s.classify(fmt.Errorf("connecting to %s: %w", m.Connection.Name, err))
		}
		li.lookup, err = s.lookupExisting(ctx, whole, m)
		li.requests.add(requestsOf(whole.Stats()))
	}
	return li, s.classify(err)
}

// listInfo is what resolving an export's list found.
type listInfo struct {
	id       string
	requests Requests
	notes    []string
	gone     bool // the list recorded before is no longer the destination's
	lookup   int  // requests spent listing the account's contacts (see existing.go)
}

// prepareList asks d for the export's list through the connection's claims.
func (s *Service) prepareList(ctx context.Context, d Destination, m *Manifest) (listInfo, error) {
	reg, err := claims.New(s.Store, m.Connection.Name, claims.Options{Holder: m.RunID})
	if err != nil {
		return listInfo{}, err
	}
	var li listInfo
	watched := &watchedRegistry{Registry: reg}
	li.id, err = d.PrepareList(ctx, dest.ListSpec{Title: m.List, Fields: m.Fields, CreateFields: m.CreateFields,
		Registry: watched, Notice: func(n string) { li.notes = append(li.notes, n) }})
	li.gone = watched.listReplaced
	if err != nil {
		return li, err // the destination's error names the list
	}
	return li, nil
}

// watchedRegistry tells whether the registry replaced a recorded list
// with another.
type watchedRegistry struct {
	dest.Registry
	listReplaced bool
}

func (w *watchedRegistry) Resolve(ctx context.Context, kind dest.ObjectKind, name string, o dest.Objects) (dest.Resolved, error) {
	res, err := w.Registry.Resolve(ctx, kind, name, o)
	if err == nil && kind == dest.ObjectList && res.Replaced != "" {
		w.listReplaced = true
	}
	return res, err
}

// refusedMessage is what a run's report says when its key was refused or
// there is none: what happened, and what to do.
func (s *Service) refusedMessage(u *Unauthorized) string {
	if !u.noKey {
		region := ""
		if k, ok := kinds.Lookup(u.api); ok && k.Regions != nil {
			region = " and that the connection's region is the account's"
		}
		return config.Connection{Kind: u.api}.Title() + " refused the API key (401/403), so nothing more was sent: " +
			s.words().CheckKey(u.api) + region + ", then run again"
	}
	return "there is no API key to send with (" + u.Msg + "): " + s.words().SetKey(u.api) +
		"; the next file dropped or the scheduled refresh then runs this export normally; nothing was sent"
}

func (s *Service) readManifest(ctx context.Context, export, runID, base string) (*Manifest, error) {
	var m Manifest
	if err := getJSON(ctx, s.Store, manifestKey(export, runID, base), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// readManifestHead returns the manifest without its list of batches
// (Batches is nil), for a batch: that list has an entry per batch, so
// every batch of a 3,000-batch run reading it made the run quadratic. A
// manifest never changes once written (it is created only if absent), so
// it is read once per process (a warm Lambda container serves many
// batches of a run).
func (s *Service) readManifestHead(ctx context.Context, export, runID, base string) (*Manifest, error) {
	key := manifestKey(export, runID, base)
	s.manifestMu.Lock()
	m, ok := s.manifests[key]
	s.manifestMu.Unlock()
	if ok {
		return m, nil
	}
	var head struct {
		Manifest
		Batches skipped `json:"batches"` // shadows Manifest.Batches
	}
	if err := getJSON(ctx, s.Store, key, &head); err != nil {
		return nil, err
	}
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	if len(s.manifests) >= maxCachedManifests {
		clear(s.manifests) // runs come one at a time per export: a few are enough
	}
	if s.manifests == nil {
		s.manifests = map[string]*Manifest{}
	}
	s.manifests[key] = &head.Manifest
	return &head.Manifest, nil
}

const maxCachedManifests = 32

// skipped is a JSON value left undecoded.
type skipped struct{}

func (*skipped) UnmarshalJSON([]byte) error { return nil }

// Pacing splits a connection's budget over parallel workers. More workers
// than requests per second keeps the budget busy while each worker also
// reads and writes S3; the workers together never exceed the budget.
func Pacing(rps float64) (concurrency int, workerRPS float64) {
	concurrency = int(math.Ceil(2 * rps))
	concurrency = min(max(concurrency, 2), 40)
	return concurrency, shareHeadroom * rps / float64(concurrency)
}

// shareHeadroom keeps workers that pace their shares apart (Lambda
// containers) 1 % under the budget together. Exactly at an API's limit,
// independent schedules drain its token bucket a token at a time (a late
// request leaves a token the full bucket cannot keep; the next one, on
// time, spends its own) until a stray 429, whose Retry-After pause makes
// that worker the run's last by a second: 10 % of a 100,000-profile run
// at 100 requests/s, in one benchmark run of three. 1 % refills the bucket
// a token a second at 100 requests/s (no 429 in 24 runs).
const shareHeadroom = 0.99

// groupTime is about how long one syncbatch invocation sends for: long
// enough that a run of a million profiles is a few hundred invocations,
// not ten thousand, and well inside syncbatch's 300 s timeout.
const groupTime = 60 * time.Second

// MapItems is items.json: the plan's batches in groups of consecutive
// ones, one group a syncbatch invocation, largest first. Each group holds
// a worker's share of the work left (guided self-scheduling), at most
// groupTime of requests at the worker's pace, at least a batch: the Map
// hands the next group to the first worker free, so a worker slowed down
// (a Retry-After pause) takes fewer, and the run ends with small groups
// that finish together instead of the slowest worker's whole share. Fixed
// groups (GroupSize) made a worker that lost a few seconds the run's last
// by those seconds. Half a worker's share a group balanced no better and
// cost 6 % at the API's limit (twice the invocations, each a cold start
// at times). The groups past the first concurrency are relays (see
// Share); each names the groups and the concurrency, for the last
// shares to take the finished ones' budget.
func MapItems(batches []plan.BatchRef, concurrency int, workerRPS float64) []Item {
	left := 0
	for _, b := range batches {
		left += cost(b)
	}
	most := max(int(groupTime.Seconds()*workerRPS), 1)
	var items []Item
	for i := 0; i < len(batches); {
		want := min(max(left/max(concurrency, 1), 1), most)
		g := Item{Batch: batches[i].Seq, Offset: batches[i].Offset, Relay: len(items) >= concurrency}
		for n := 0; i < len(batches) && (n == 0 || n+cost(batches[i]) <= want); i++ {
			b := batches[i]
			n += cost(b)
			left -= cost(b)
			g.Batches = append(g.Batches, Item{Batch: b.Seq, Offset: b.Offset, Length: b.Length, CRC32C: b.CRC32C})
			g.Length = b.Offset + b.Length - g.Offset
		}
		items = append(items, g)
	}
	for i := range items {
		items[i].Groups, items[i].Workers = len(items), concurrency
	}
	return items
}

// cost is a batch's requests as a group counts them: an upsert batch one
// bulk call, a removal batch a call per email (Autopilot's; Ortto's 100
// a call make it an upper bound).
func cost(b plan.BatchRef) int {
	if b.Upserts == 0 {
		return max(b.Removals, 1)
	}
	return 1
}

// GroupSize is how many consecutive batches one syncbatch invocation sends
// (the execution input's groupSize, which the Map's ItemBatcher reads):
// about groupTime of requests at the worker's pace, counting the costliest
// batch (an upsert batch is one request, a removal batch one per email),
// but never so many that the run has fewer groups than workers, which
// would leave part of the budget unused. At least 1.
func GroupSize(batches []plan.BatchRef, concurrency int, workerRPS float64) int {
	most := 1
	for _, b := range batches {
		most = max(most, cost(b))
	}
	size := int(groupTime.Seconds() * workerRPS / float64(most))
	if concurrency > 0 {
		size = min(size, (len(batches)+concurrency-1)/concurrency)
	}
	return max(size, 1)
}

// Refresh is the scheduled (and manual) trigger: every enabled export (or
// the one named) runs from the newest file of its segment. Exports are
// independent: one that fails is reported and the others go on.
func (s *Service) Refresh(ctx context.Context, req RefreshRequest) ([]Result, error) {
	cfg, err := LoadConfig(ctx, s.Store)
	if err != nil {
		return nil, err
	}
	exports := exportsOf(cfg)
	if req.Export != "" {
		if exports, err = cfg.Named(req.Export); err != nil { // a split export: each group
			return nil, err
		}
	}
	var results []Result
	var errs []error
	for _, e := range exports {
		newest, arrived, err := s.newest(ctx, e)
		if err != nil {
			results = append(results, Result{Export: e.Name, Status: StatusFailed, Message: err.Error()})
			errs = append(errs, fmt.Errorf("export %s: %w", e.Name, err))
			continue
		}
		if newest == nil {
			res := Result{Export: e.Name, Status: StatusNoInput, Message: "no file (or whole folder of parts) under segments/" + e.Segment + "/"}
			s.Logger().Info("nothing to refresh", "export", e.Name, "status", res.Status)
			results = append(results, res)
			continue
		}
		rs, err := s.Start(ctx, StartRequest{Trigger: req.Trigger, Export: e.Name, DryRun: req.DryRun,
			AllowLargeRemoval: req.AllowLargeRemoval, FullResync: req.FullResync, Arrived: arrived, Source: *newest})
		results = append(results, rs...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return results, errors.Join(errs...)
}

// RefreshRequest re-runs exports from the newest file of their segment.
type RefreshRequest struct {
	Trigger           string
	Export            string // empty: every enabled export
	DryRun            bool
	AllowLargeRemoval bool
	FullResync        bool // send every contact of the newest file, unchanged ones too
}

// newest returns e's newest delivery and when it arrived: a file directly
// under its segment, or a whole folder of parts (as of its newest
// object), by modification time, then key; nil when there is none.
func (s *Service) newest(ctx context.Context, e *config.Export) (*Source, time.Time, error) {
	objs, err := s.Store.List(ctx, "segments/"+e.Segment+"/")
	if err != nil {
		return nil, time.Time{}, err
	}
	var best *store.ObjectInfo
	folders := map[string]time.Time{} // each folder's newest object
	for i := range objs {
		o := &objs[i]
		kind := delivery.Classify(o.Key)
		_, folder, err := delivery.Of(o.Key)
		switch {
		case err != nil, kind == delivery.Ignored: // a console-created folder marker, a checksum …
			continue
		case folder != "":
			if o.LastModified.After(folders[folder]) {
				folders[folder] = o.LastModified
			}
			continue
		case kind != delivery.Data:
			continue
		}
		if best == nil || o.LastModified.After(best.LastModified) ||
			o.LastModified.Equal(best.LastModified) && o.Key > best.Key {
			best = o
		}
	}
	// The newest whole folder newer than the best file wins over it.
	order := slices.SortedFunc(maps.Keys(folders), func(a, b string) int {
		return cmp.Or(folders[b].Compare(folders[a]), strings.Compare(b, a))
	})
	for _, f := range order {
		if best != nil && !folders[f].After(best.LastModified) {
			break
		}
		d, err := s.decideFolder(ctx, f, e)
		if err != nil {
			return nil, time.Time{}, err
		}
		if d.Complete {
			src := folderSource(d)
			return &src, d.Last, nil
		}
	}
	if best == nil {
		return nil, time.Time{}, nil
	}
	if best.ETag == "" {
		info, err := s.Store.Head(ctx, best.Key)
		if err != nil {
			return nil, time.Time{}, err
		}
		best = &info
	}
	return &Source{Key: best.Key, ETag: best.ETag, VersionID: best.VersionID, Size: best.Size}, best.LastModified, nil
}
