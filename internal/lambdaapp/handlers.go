package lambdaapp

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-lambda-go/events"

	"github.com/segpilot/segpilot/shared/run"
)

// Ingest handles S3 ObjectCreated notifications: a segment file under
// segments/ is queued for its exports; kicks/<export> (a run ended) drains
// that export's queue.
func Ingest(svc *run.Service) func(context.Context, events.S3Event) ([]run.Result, error) {
	return func(ctx context.Context, ev events.S3Event) ([]run.Result, error) {
		var all []run.Result
		for _, rec := range ev.Records {
			key := rec.S3.Object.URLDecodedKey // S3 sends keys URL-encoded
			if key == "" {
				key = rec.S3.Object.Key
			}
			if export, ok := run.KickedExport(key); ok {
				if err := svc.Kick(ctx, export); err != nil {
					return all, fmt.Errorf("draining the queue of export %s: %w", export, err)
				}
				continue
			}
			if !strings.HasPrefix(key, "segments/") || strings.HasSuffix(key, "/") {
				svc.Logger().Info("not a segment file", "key", key, "status", "ignored")
				continue
			}
			res, err := svc.Start(ctx, run.StartRequest{Trigger: run.TriggerS3, Arrived: rec.EventTime, Source: run.Source{
				Key: key, ETag: strings.Trim(rec.S3.Object.ETag, `"`), VersionID: rec.S3.Object.VersionID, Size: rec.S3.Object.Size,
			}})
			all = append(all, res...)
			if err != nil {
				return all, fmt.Errorf("ingesting %s: %w", key, err)
			}
		}
		return all, nil
	}
}

// RefreshEvent is the schedule's input ({"trigger": "schedule"}, or an
// EventBridge "Scheduled Event"), the sweep schedule's ({"sweep": true}),
// or a manual invocation.
type RefreshEvent struct {
	Trigger           string `json:"trigger"`
	DetailType        string `json:"detail-type"`
	Export            string `json:"export"`
	DryRun            bool   `json:"dryRun"`
	AllowLargeRemoval bool   `json:"allowLargeRemoval"`
	// FullResync sends every contact of the newest file, unchanged ones
	// too (a manual invoke: {"export": "…", "fullResync": true}).
	FullResync bool `json:"fullResync"`
	// Sweep drains every export's queue and runs nothing new.
	Sweep bool `json:"sweep"`
	// Undo reverses a run (a manual invoke: {"undo": "<run id>"}; export
	// optional): a run of its own, queued like a file's.
	Undo string `json:"undo"`
}

// TriggerOf says what started a refresh: the schedule (its Input, or an
// EventBridge "Scheduled Event"), else a person.
func TriggerOf(ev RefreshEvent) string {
	if ev.Trigger == run.TriggerSchedule || ev.DetailType == "Scheduled Event" {
		return run.TriggerSchedule
	}
	return run.TriggerManual
}

// Refresh handles the schedule and manual runs.
func Refresh(svc *run.Service) func(context.Context, RefreshEvent) ([]run.Result, error) {
	return func(ctx context.Context, ev RefreshEvent) ([]run.Result, error) {
		if ev.Sweep {
			return svc.Sweep(ctx)
		}
		if ev.Undo != "" {
			res, err := svc.Undo(ctx, run.UndoRequest{Trigger: run.TriggerManual, Export: ev.Export, Run: ev.Undo})
			return []run.Result{res}, err
		}
		return svc.Refresh(ctx, run.RefreshRequest{Trigger: TriggerOf(ev), Export: ev.Export,
			DryRun: ev.DryRun, AllowLargeRemoval: ev.AllowLargeRemoval, FullResync: ev.FullResync})
	}
}

// Finalize closes a run; its report's metrics go to the Service's sink.
func Finalize(svc *run.Service) func(context.Context, run.FinalizeInput) (*run.Report, error) {
	return svc.Finalize
}
