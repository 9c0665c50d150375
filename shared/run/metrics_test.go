package run_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/secrets"
)

// emf is one Embedded Metric Format record, as CloudWatch reads it.
type emf struct {
	AWS struct {
		CloudWatchMetrics []struct {
			Namespace  string
			Dimensions [][]string
			Metrics    []struct{ Name, Unit string }
		}
	} `json:"_aws"`
	Export string
	Status string
	Values map[string]any `json:"-"`
}

func records(t *testing.T, out string) []emf {
	t.Helper()
	var recs []emf
	sc := bufio.NewScanner(bytes.NewReader([]byte(out)))
	for sc.Scan() {
		var r emf
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("metrics line %q: %v", sc.Text(), err)
		}
		if err := json.Unmarshal(sc.Bytes(), &r.Values); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

// Every run's outcome is a metric, whichever step ends it: the alarm that
// watches failed runs must see a run refused at ingest as well as one whose
// batches failed, not only executions that Step Functions calls failed
// (finalize ends those SUCCEEDED after writing a failed report).
func TestEveryRunOutcomeIsAMetric(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		play   func(f *fixture, svc *run.Service)
		metric string
	}{
		{"no API key at ingest", func(f *fixture, svc *run.Service) {
			svc.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) {
				return nil, fmt.Errorf("reading the API key secret: %w", secrets.ErrEmpty)
			}
			f.arrive(svc, "a.csv", 1, "a@example.com")
		}, "RunsFailed"},
		{"invalid file", func(f *fixture, svc *run.Service) {
			key := "segments/vip/bad.csv"
			info := f.put(key, "Name\nno email column\n")
			if _, err := svc.Start(context.Background(), run.StartRequest{Trigger: run.TriggerS3, Source: run.Source{Key: key, ETag: info.ETag}}); err != nil {
				t.Fatal(err)
			}
		}, "RunsInvalid"},
		{"batches failed", func(f *fixture, svc *run.Service) {
			ex, _ := f.planned("a@example.com")
			if _, err := svc.Finalize(context.Background(), finalizeInput(ex)); err != nil {
				t.Fatal(err)
			}
		}, "RunsFailed"},
		{"succeeded", func(f *fixture, svc *run.Service) {
			ex, items := f.planned("a@example.com")
			for _, it := range items {
				if _, err := svc.SyncBatch(context.Background(), it); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := svc.Finalize(context.Background(), finalizeInput(ex)); err != nil {
				t.Fatal(err)
			}
		}, "RunsSucceeded"},
		{"export disabled", func(f *fixture, svc *run.Service) {
			f.put(run.ConfigKey, strings.Replace(queueConfig, "    mode: upsert\n", "    mode: upsert\n    enabled: false\n", 1))
			f.arrive(svc, "a.csv", 1, "a@example.com")
		}, "RunsRefused"},
		{"held by the brake", func(f *fixture, svc *run.Service) {
			f.put(run.ConfigKey, strings.Replace(queueConfig, "mode: upsert", "mode: mirror", 1))
			var emails []string
			for i := range 10 {
				emails = append(emails, fmt.Sprintf("c%d@example.com", i))
			}
			f.arrive(svc, "a.csv", 1, emails...)
			ex := f.cloud.last(t)
			f.sendAll(svc, ex)
			f.finish(svc, ex)
			f.arrive(svc, "b.csv", 2, emails[0]) // nine of ten leave: above the brake's share
		}, "RunsHeld"},
	}
	outcomes := []string{"RunsSucceeded", "RunsFailed", "RunsHeld", "RunsInvalid", "RunsRefused"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			out := &testutil.SyncBuffer{}
			f.svc.Metrics = out
			tt.play(f, f.svc)
			recs := records(t, out.String())
			if len(recs) == 0 {
				t.Fatal("no metrics written")
			}
			last := recs[len(recs)-1]
			if len(last.AWS.CloudWatchMetrics) != 1 {
				t.Fatalf("record %+v", last)
			}
			cw := last.AWS.CloudWatchMetrics[0]
			// By export, and without a dimension: the alarms watch the
			// whole deployment, and CloudWatch keeps one metric per set.
			if cw.Namespace != "segpilot" || !slices.ContainsFunc(cw.Dimensions, func(d []string) bool { return slices.Equal(d, []string{"Export"}) }) ||
				!slices.ContainsFunc(cw.Dimensions, func(d []string) bool { return len(d) == 0 }) || last.Export != "vip" {
				t.Fatalf("namespace %s, dimensions %v, export %q; want segpilot, [[Export] []], vip", cw.Namespace, cw.Dimensions, last.Export)
			}
			var names []string
			for _, m := range cw.Metrics {
				names = append(names, m.Name)
			}
			for _, o := range outcomes {
				want := 0.0
				if o == tt.metric {
					want = 1
				}
				if !slices.Contains(names, o) || last.Values[o] != want {
					t.Errorf("%s = %v (declared: %v); want %v", o, last.Values[o], slices.Contains(names, o), want)
				}
			}
		})
	}
}

// An invalid file is reported, counted and alarmed once: its duplicate
// events and the schedule's refresh of it find the run's report and say
// so, with no second metric.
func TestAnInvalidFileIsCountedOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	out := &testutil.SyncBuffer{}
	f.svc.Metrics = out
	key := "segments/vip/bad.csv"
	info := f.put(key, "Name\nno email column\n")
	for range 2 {
		res := f.deliver(f.svc, run.Source{Key: key, ETag: info.ETag}, 1)
		if res.Status != run.StatusInvalid {
			t.Fatalf("delivery: %+v; want invalid", res)
		}
	}
	res, err := f.svc.Refresh(context.Background(), run.RefreshRequest{Trigger: run.TriggerSchedule})
	if err != nil || len(res) != 1 || res[0].Status != run.StatusInvalid || !strings.Contains(res[0].Message, "already found invalid") {
		t.Fatalf("refresh: %+v, %v", res, err)
	}
	invalid := 0
	for _, r := range records(t, out.String()) {
		if v, _ := r.Values["RunsInvalid"].(float64); v == 1 {
			invalid++
		}
	}
	if invalid != 1 {
		t.Fatalf("%d RunsInvalid metrics; want 1", invalid)
	}
}
