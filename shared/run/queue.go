package run

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/store"
)

// queueEntry is one delivery waiting its turn:
// state/<export>/queue/<arrival>-<id>.json. The key is deterministic (the
// arrival time and the object), so a duplicate event writes the same
// entry, and key order is arrival order.
type queueEntry struct {
	Trigger           string    `json:"trigger"`
	Source            Source    `json:"source"`
	Arrived           time.Time `json:"arrived"`
	AllowLargeRemoval bool      `json:"allowLargeRemoval,omitempty"`
	FullResync        bool      `json:"fullResync,omitempty"`
	Undo              string    `json:"undo,omitempty"` // the run it reverses: an undo, not a file
	Key               string    `json:"key"`            // its key in the queue
}

// request is the start request e was queued for.
func (e *queueEntry) request(export string) StartRequest {
	return StartRequest{Trigger: e.Trigger, Source: e.Source, Export: export, Arrived: e.Arrived, AllowLargeRemoval: e.AllowLargeRemoval,
		FullResync: e.FullResync, Undo: e.Undo}
}

// runID is the run the entry is a delivery of.
func (e *queueEntry) runID(export, configVersion string) string {
	if e.Undo != "" {
		return undoRunID(export, e.Undo)
	}
	return runID(export, e.Source, configVersion, e.FullResync)
}

// name is the entry's name without its folder, as deliveries/ records it.
func (e *queueEntry) name() string { return path.Base(e.Key) }

func (e *queueEntry) sameFile(o *queueEntry) bool {
	return e.Source.Key == o.Source.Key && e.Source.ETag == o.Source.ETag && e.Source.VersionID == o.Source.VersionID
}

// enqueue records a delivery of req for export and returns its entry.
func (s *Service) enqueue(ctx context.Context, export string, req StartRequest) (*queueEntry, error) {
	e := &queueEntry{Trigger: req.Trigger, Source: req.Source, Arrived: req.Arrived.UTC(), AllowLargeRemoval: req.AllowLargeRemoval,
		FullResync: req.FullResync, Undo: req.Undo}
	id := runID(export, req.Source, "", req.FullResync)
	e.Key = queuePrefix(export) + e.Arrived.Format("20060102T150405.000000000Z") + "-" + strings.TrimPrefix(id, export+"-") + ".json"
	if err := putJSON(ctx, s.Store, e.Key, e, store.PutOptions{}); err != nil {
		return nil, fmt.Errorf("queueing %s: %w", req.Source.Key, err)
	}
	return e, nil
}

// oldest returns the export's longest-waiting delivery, or nil.
func (s *Service) oldest(ctx context.Context, export string) (*queueEntry, error) {
	objs, err := s.Store.List(ctx, queuePrefix(export))
	if err != nil {
		return nil, fmt.Errorf("listing the queue of export %s: %w", export, err)
	}
	for _, o := range objs {
		var e queueEntry
		if err := getJSON(ctx, s.Store, o.Key, &e); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue // handled by another drainer since the listing
			}
			return nil, err
		}
		e.Key = o.Key
		return &e, nil
	}
	return nil, nil
}

// Delivery is runs/<export>/<run>/deliveries/<entry>: what became of one
// queued delivery, written before it leaves the queue, so whoever waits on
// it (the CLI's Await) reads its fate instead of guessing it.
type Delivery struct {
	Status  string `json:"status"`            // the decision (superseded, held, up-to-date …), or running
	Attempt int64  `json:"attempt,omitempty"` // the attempt it started (status running)
	Message string `json:"message,omitempty"`
}

// settle records what became of e and takes it off the queue.
func (s *Service) settle(ctx context.Context, export, runID string, e *queueEntry, d Delivery) error {
	if err := putJSON(ctx, s.Store, deliveryKey(export, runID, e.name()), d, store.PutOptions{}); err != nil {
		return err
	}
	if err := s.Store.Delete(ctx, e.Key); err != nil {
		return fmt.Errorf("removing %s from the queue: %w", e.Key, err)
	}
	return nil
}

// BucketKicker kicks an export's queue by writing kicks/<export>: its S3
// event invokes ingest (template.yaml routes kicks/ there), which drains
// the queue in an invocation of its own, outside finalize's timeout.
type BucketKicker struct{ Store store.ObjectStore }

var _ Kicker = BucketKicker{}

func (k BucketKicker) Kick(ctx context.Context, export string) error {
	body := `{"export":"` + export + `"}` + "\n"
	if _, err := k.Store.Put(ctx, kickKey(export), strings.NewReader(body), store.PutOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("kicking the queue of export %s: %w", export, err)
	}
	return nil
}

// KickedExport returns the export a kicks/<export> key names.
func KickedExport(key string) (string, bool) {
	export, ok := strings.CutPrefix(key, KicksPrefix)
	return export, ok && export != "" && !strings.Contains(export, "/")
}
