package run

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/store"
)

// An undo is a run like any other: a queued delivery, planned against the
// export's snapshot, claimed, sent by the Map, closed by finalize. Only
// its plan is not read from a file: plan.BuildUndo diffs the snapshot the
// undone run left against the one from before it, and the snapshot it
// targets is that earlier one, so once it is closed the next run plans
// against the export's state from before the undone run. Its upserts are
// sent in update mode: an undo never creates (so never subscribes) anyone.

// UndoRequest asks to reverse a run of an export.
type UndoRequest struct {
	Trigger string
	Export  string // "" : the export the run belongs to
	Run     string // the run to undo
}

// UndoSummary is what an undo's report says it reversed.
type UndoSummary struct {
	Of     string          `json:"of"` // the run undone
	Counts plan.UndoCounts `json:"counts"`
	CSV    string          `json:"csv"` // key of undo.csv: contact by contact
}

// UndoRefused says why a run cannot be undone (now).
type UndoRefused struct{ Msg string }

func (e *UndoRefused) Error() string { return e.Msg }

// undoSourceKey stands for an undo in the places a delivery names its
// file: no file is read, and it never matches one.
func undoSourceKey(undone string) string { return "undo:" + undone }

// undoRunID names the undo of a run: the same for every request to undo
// it, so a failed undo resumes (as a new attempt of the same run) and one
// that succeeded is not done twice.
func undoRunID(export, undone string) string {
	h := sha256.Sum256([]byte(export + "\x00undo\x00" + undone))
	return export + "-undo-" + hex.EncodeToString(h[:8])
}

func undoCSVKey(export, runID, base string) string {
	return planPrefix(export, runID, base) + plan.UndoFile
}

// Undo queues the reversal of req.Run and drains the export's queue, as a
// file's delivery is: it runs when the export is free, after what is
// queued before it.
func (s *Service) Undo(ctx context.Context, req UndoRequest) (Result, error) {
	cfg, err := LoadConfig(ctx, s.Store)
	if err != nil {
		return Result{}, err
	}
	export := req.Export
	if export == "" {
		if export, err = s.exportOfRun(ctx, cfg, req.Run); err != nil {
			return Result{Status: StatusRefused, Message: err.Error()}, err
		}
	}
	if _, err := cfg.Export(export); err != nil {
		return Result{Export: export, Status: StatusRefused, Message: err.Error()}, err
	}
	entry, err := s.enqueue(ctx, export, StartRequest{Trigger: req.Trigger, Source: Source{Key: undoSourceKey(req.Run)}, Undo: req.Run, Arrived: s.now()})
	runID := undoRunID(export, req.Run)
	if err != nil {
		return Result{Export: export, RunID: runID, Status: StatusFailed, Message: err.Error()}, err
	}
	return s.drain(ctx, cfg, export, &wanted{key: entry.Key, runID: runID})
}

// exportOfRun finds the export a run belongs to: its report is under
// runs/<export>/<run>/.
func (s *Service) exportOfRun(ctx context.Context, cfg *config.Config, runID string) (string, error) {
	for _, e := range exportsOf(cfg) {
		if _, err := s.Store.Head(ctx, runReportKey(e.Name, runID)); err == nil {
			return e.Name, nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return "", err
		}
	}
	return "", fmt.Errorf("no export has a run %s (its report would be runs/<export>/%s/report.json); `segpilot runs` lists them", runID, runID)
}

// undone says whether the run's effect on the list was undone: a
// delivery of its file then sends nothing, and says why.
func (s *Service) undone(ctx context.Context, export, runID string) (bool, error) {
	rep, err := ReadReport(ctx, s.Store, export, undoRunID(export, runID))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return rep.Status == StatusSucceeded, nil
}

// undoPlanFor plans the undo q asks for, against base, the export's
// snapshot: the plan made already when there is one.
func (s *Service) undoPlanFor(ctx context.Context, cfg *config.Config, e *config.Export, q *queueEntry, runID string, base *SnapshotRef) (*Manifest, error) {
	undone := q.Undo
	target, err := ReadReport(ctx, s.Store, e.Name, undone)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, &UndoRefused{Msg: "export " + e.Name + " has no run " + undone + "; `segpilot runs` lists its runs"}
	case err != nil:
		return nil, err
	}
	holder := ""
	if base != nil {
		if holder, err = s.effectiveRun(ctx, e.Name, base.Key); err != nil {
			return nil, err
		}
	}
	if err := undoable(e, target, base, holder, runID); err != nil {
		return nil, err
	}
	m, err := s.readManifest(ctx, e.Name, runID, base.Base())
	if !errors.Is(err, store.ErrNotFound) {
		return m, err
	}
	before, err := s.snapshotBefore(ctx, e.Name, target)
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp(s.TempDir, "segpilot-undo-*")
	if err != nil {
		return nil, fmt.Errorf("creating plan folder: %w", err)
	}
	defer os.RemoveAll(dir)
	conn := cfg.ConnectionOf(e)
	in := plan.UndoInput{
		Current: s.opener(ctx, base.Key),
		Profiles: func(ctx context.Context, visit func(plan.Upsert) error) error {
			return planProfiles(ctx, s.Store, e.Name, visit)
		},
		BatchSize: conn.Capabilities().MaxBatch,
	}
	if before != "" {
		in.Before = s.opener(ctx, before)
	}
	p, counts, err := plan.BuildUndo(ctx, in, dir)
	if err != nil {
		return nil, err
	}
	concurrency, workerRPS := Pacing(conn.RequestsPerSecond)
	m = &Manifest{Export: e.Name, RunID: runID, Trigger: q.Trigger, Source: q.Source, ConfigVersion: cfg.Version, Connection: *conn,
		List: e.List, Fields: e.Fields(), Mode: e.Mode, Undo: &UndoSummary{Of: undone, Counts: counts, CSV: undoCSVKey(e.Name, runID, base.Base())},
		Base: base.Base(), BaseKey: base.Key, Counts: p.Counts, Batches: p.Batches, ShowEmails: e.ShowEmails,
		Concurrency: concurrency, WorkerRPS: workerRPS, ItemGroups: true, PlannedAt: s.now()}
	return m, s.upload(ctx, dir, p, m)
}

// undoable says why the run target cannot be undone against base, the
// export's snapshot, if it cannot: only the run that wrote that snapshot,
// or whose state it holds (holder: see effectiveRun), or whose undo
// (runID) left it half done, can be, to the same list.
func undoable(e *config.Export, target *Report, base *SnapshotRef, holder, runID string) error {
	undone := target.RunID
	if target.Snapshot == "" || !target.SnapshotPromoted {
		return &UndoRefused{Msg: fmt.Sprintf("run %s changed nothing on the list (it ended %s: %s); there is nothing to undo", undone, target.Status, target.Message)}
	}
	if base == nil || (base.Run != undone && holder != undone && base.Run != runID) {
		later := "a later run"
		if holder != "" {
			later = "run " + holder
		}
		return &UndoRefused{Msg: fmt.Sprintf("run %s cannot be undone: %s came after it and built on what it left (the list holds what that run left); "+
			"undo %s first, then %s", undone, later, strings.TrimPrefix(later, "run "), undone)}
	}
	if target.List != "" && target.List != e.List {
		return &UndoRefused{Msg: fmt.Sprintf("run %s sent to the list %q, and export %s now sends to %q: undo it with the config it ran under", undone, target.List, e.Name, e.List)}
	}
	return nil
}

// effectiveRun says which run left the state a snapshot describes: the
// run that wrote it, but for an undo's, which describes the state from
// before the run it undid, once it succeeded ("" : no run, the export's first state). So
// once the later run is undone, the run before it can be.
func (s *Service) effectiveRun(ctx context.Context, export, key string) (string, error) {
	prefix := "runs/" + export + "/"
	for range 1000 {
		rest, ok := strings.CutPrefix(key, prefix)
		if !ok {
			return "", nil // none, or the legacy snapshot
		}
		id, _, _ := strings.Cut(rest, "/")
		rep, err := ReadReport(ctx, s.Store, export, id)
		if err != nil {
			return "", fmt.Errorf("reading the report of run %s, whose snapshot the export holds: %w", id, err)
		}
		if rep.Undo == nil || rep.Undo.Of == "" || rep.Status != StatusSucceeded {
			return id, nil // a run, or an undo not finished: its own state
		}
		undone, err := ReadReport(ctx, s.Store, export, rep.Undo.Of)
		if err != nil {
			return "", fmt.Errorf("reading the report of run %s, which run %s undid: %w", rep.Undo.Of, id, err)
		}
		if key, err = s.snapshotBefore(ctx, export, undone); err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("the snapshot %s is the end of a chain of over 1,000 undos", key)
}

// snapshotBefore returns the key of the snapshot the export held before
// run began ("" : none, it was the export's first): walking back from the
// snapshot its last attempt left through the attempts that built it, to
// the first base that is not the run's own.
func (s *Service) snapshotBefore(ctx context.Context, export string, run *Report) (string, error) {
	objs, err := s.Store.List(ctx, runPrefix(export, run.RunID)+"attempts/")
	if err != nil {
		return "", fmt.Errorf("listing the attempts of %s: %w", run.RunID, err)
	}
	baseOf := map[string]string{}
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, "/report.json") {
			continue
		}
		var rep Report
		if err := getJSON(ctx, s.Store, o.Key, &rep); err != nil {
			return "", err
		}
		if rep.SnapshotPromoted && rep.Snapshot != "" {
			baseOf[rep.Snapshot] = rep.Base
		}
	}
	own := runPrefix(export, run.RunID)
	key := run.Snapshot
	for range len(baseOf) + 1 {
		base, ok := baseOf[key]
		if !ok {
			return "", fmt.Errorf("no attempt of run %s left the snapshot %s: what the list held before it cannot be traced", run.RunID, key)
		}
		if !strings.HasPrefix(base, own) {
			return base, nil
		}
		key = base
	}
	return "", fmt.Errorf("the attempts of run %s name their snapshots in a loop", run.RunID)
}

// opener opens key when called.
func (s *Service) opener(ctx context.Context, key string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		rc, _, err := s.Store.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", key, err)
		}
		return rc, nil
	}
}

// planProfiles streams every upsert of every plan of export in st, the
// newest plans first: what a lookup by hash wants is most often in the
// last runs' plans, and its visit's plan.ErrFoundAll then spares reading
// the export's whole history.
func planProfiles(ctx context.Context, st store.ObjectStore, export string, visit func(plan.Upsert) error) error {
	objs, err := st.List(ctx, "runs/"+export+"/")
	if err != nil {
		return fmt.Errorf("listing the plans of export %s: %w", export, err)
	}
	objs = slices.DeleteFunc(objs, func(o store.ObjectInfo) bool { return !strings.HasSuffix(o.Key, "/"+plan.BatchesFile) })
	slices.SortFunc(objs, func(a, b store.ObjectInfo) int {
		return cmp.Or(b.LastModified.Compare(a.LastModified), strings.Compare(b.Key, a.Key))
	})
	for _, o := range objs {
		if err := batchProfiles(ctx, st, o.Key, visit); err != nil {
			if errors.Is(err, plan.ErrFoundAll) {
				return nil
			}
			return err
		}
	}
	return nil
}

func batchProfiles(ctx context.Context, st store.ObjectStore, key string, visit func(plan.Upsert) error) error {
	rc, _, err := st.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("reading %s: %w", key, err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 1<<20)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			b, berr := plan.ReadBatch(line)
			if berr != nil {
				return fmt.Errorf("%s line %d: %w", key, n, berr)
			}
			for _, u := range b.Upserts {
				if err := visit(u); err != nil {
					return err
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", key, err)
		}
	}
}
