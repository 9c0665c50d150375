package run

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/delivery"
	"github.com/segpilot/segpilot/shared/store"
)

// A folder delivery's Source names the folder (its key ends in "/"), its
// identity as the ETag (delivery.Decision.Identity: the parts' keys and
// ETags), its parts' bytes and their number.

// isFolder tells a folder delivery's Source from a single file's.
func (src Source) isFolder() bool { return strings.HasSuffix(src.Key, "/") }

// incompleteAfter is how long a folder may wait for its manifest, marker
// or quiet period before its run's report says it never became whole.
const incompleteAfter = 6 * time.Hour

// decideFolder lists folder and judges it with e's rules.
func (s *Service) decideFolder(ctx context.Context, folder string, e *config.Export) (delivery.Decision, error) {
	infos, err := s.Store.List(ctx, folder)
	if err != nil {
		return delivery.Decision{}, fmt.Errorf("listing %s: %w", folder, err)
	}
	objs := make([]delivery.Object, 0, len(infos))
	for _, o := range infos {
		objs = append(objs, delivery.Object{Key: o.Key, ETag: o.ETag, Size: o.Size, LastModified: o.LastModified})
	}
	read := func(key string) ([]byte, error) {
		rc, _, err := s.Store.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(io.LimitReader(rc, 64<<20))
	}
	return delivery.Decide(folder, objs, read, s.now(), delivery.Options{QuietPeriod: e.QuietPeriod})
}

func folderSource(d delivery.Decision) Source {
	return Source{Key: d.Folder, ETag: d.Identity, Size: d.Size, Parts: len(d.Parts)}
}

// pending is state/<export>/pending/<folder hash>.json: a folder this
// export saw parts of that is not whole yet. The sweep looks at it again
// (a quiet period ends with no event), and says once when it has waited
// too long.
type pending struct {
	Folder    string    `json:"folder"`
	FirstSeen time.Time `json:"firstSeen"`
	Reported  bool      `json:"reported,omitempty"`
}

func pendingPrefix(export string) string { return "state/" + export + "/pending/" }

func pendingKey(export, folder string) string {
	h := sha256.Sum256([]byte(folder))
	return pendingPrefix(export) + hex.EncodeToString(h[:8]) + ".json"
}

// waiting records that e saw folder incomplete, and says what it waits for.
func (s *Service) waiting(ctx context.Context, e *config.Export, d delivery.Decision) (Result, error) {
	res := Result{Export: e.Name, Status: StatusWaiting, Message: "waiting for a whole delivery: " + d.Describe()}
	key := pendingKey(e.Name, d.Folder)
	var p pending
	switch err := getJSON(ctx, s.Store, key, &p); {
	case errors.Is(err, store.ErrNotFound):
		p = pending{Folder: d.Folder, FirstSeen: s.now()}
		if err := putJSON(ctx, s.Store, key, p, store.PutOptions{IfNoneMatch: true}); err != nil && !errors.Is(err, store.ErrExists) {
			return res, err
		}
	case err != nil:
		return res, err
	}
	s.Logger().Info("delivery incomplete", "export", e.Name, "status", res.Status, "folder", d.Folder, "parts", len(d.Parts), "missing", len(d.Missing))
	return res, nil
}

// sweepPending looks again at e's incomplete folders: one now whole runs
// (as if its last part had just arrived); one that has waited more than
// incompleteAfter gets a report, once, saying what it lacks.
func (s *Service) sweepPending(ctx context.Context, cfg *config.Config, e *config.Export) ([]Result, error) {
	objs, err := s.Store.List(ctx, pendingPrefix(e.Name))
	if err != nil {
		return nil, err
	}
	var results []Result
	var errs []error
	for _, o := range objs {
		var p pending
		if err := getJSON(ctx, s.Store, o.Key, &p); err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				errs = append(errs, err)
			}
			continue
		}
		d, err := s.decideFolder(ctx, p.Folder, e)
		switch {
		case err != nil:
			errs = append(errs, err)
		case d.Complete:
			rs, err := s.Start(ctx, StartRequest{Trigger: TriggerS3, Export: e.Name, Arrived: d.Last, Source: folderSource(d)})
			results = append(results, rs...)
			errs = append(errs, err)
		case !p.Reported && s.now().Sub(p.FirstSeen) >= incompleteAfter:
			errs = append(errs, s.reportIncomplete(ctx, cfg, e, d, o.Key, p))
		}
	}
	return results, errors.Join(errs...)
}

// reportIncomplete writes the report of a folder that never became whole:
// nothing was sent, and it is no invalid file (no alarm): its parts, and
// what it lacks.
func (s *Service) reportIncomplete(ctx context.Context, cfg *config.Config, e *config.Export, d delivery.Decision, key string, p pending) error {
	src := folderSource(d)
	rep := &Report{Export: e.Name, RunID: RunID(e.Name, src, cfg.Version), Trigger: TriggerS3, Source: src, ConfigVersion: cfg.Version,
		Mode: e.Mode, List: e.List, Status: StatusIncomplete, FinishedAt: s.now(), Seq: -1,
		Message: fmt.Sprintf("not run: since %s, %s; a partial folder never runs (its missing rows would read as leavers). "+
			"If the job that writes it failed, run it again; if it writes neither manifest nor _SUCCESS marker, have it write one "+
			"(or, for an upsert export, set quietPeriod)", p.FirstSeen.UTC().Format(time.RFC3339), d.Describe())}
	if err := s.publish(ctx, rep); err != nil {
		return err
	}
	s.emit(rep)
	p.Reported = true
	return putJSON(ctx, s.Store, key, p, store.PutOptions{})
}

// DeliveryChanged: a folder delivery's parts are not those it was queued
// with (a part added or replaced since); the folder's newer state is a
// delivery of its own.
type DeliveryChanged struct{ Msg string }

func (e *DeliveryChanged) Error() string { return e.Msg }
