package run_test

import (
	"context"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/run"
)

// TestOverMaxProfilesReportsTheCountsItRead: a file over the export's
// maxProfiles is invalid and sends nothing, but its report (and the
// result the CLI prints, and a dry run's) carries what was read: rows,
// valid, rejected, duplicates and unique profiles, not zeros.
func TestOverMaxProfilesReportsTheCountsItRead(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.put(run.ConfigKey, strings.Replace(queueConfig, "    mode: upsert\n", "    mode: upsert\n    maxProfiles: 5\n", 1))
	// 10 rows: 7 people, one of them twice, and 2 rows without a valid email.
	emails := []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com", "not-an-email",
		"e@example.com", "f@example.com", "a@example.com", "nobody@", "g@example.com"}
	key := "segments/vip/big.csv"
	info := f.put(key, "Email\n"+strings.Join(emails, "\n")+"\n")
	src := run.Source{Key: key, ETag: info.ETag, Size: info.Size}
	want := plan.Counts{Rows: 10, Valid: 8, Rejected: 2, Duplicates: 1, Unique: 7}

	dry, err := f.svc.Start(context.Background(), run.StartRequest{Trigger: run.TriggerManual, Export: "vip", Source: src, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry) != 1 || dry[0].Status != run.StatusInvalid || dry[0].Counts != want {
		t.Errorf("dry run: %+v; want invalid with counts %+v", dry, want)
	}

	res := f.deliver(f.svc, src, 1)
	if res.Status != run.StatusInvalid || !strings.Contains(res.Message, "maxProfiles 5") {
		t.Fatalf("result %+v; want invalid over maxProfiles 5", res)
	}
	if res.Counts != want {
		t.Errorf("result counts %+v; want %+v", res.Counts, want)
	}
	rep, err := run.ReadReport(context.Background(), f.st, "vip", res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Status != run.StatusInvalid || rep.Plan != want {
		t.Errorf("report %s, plan %+v; want invalid, plan %+v", rep.Status, rep.Plan, want)
	}
	if len(f.cloud.runs()) != 0 {
		t.Errorf("executions started: %v", f.cloud.runs())
	}
}
