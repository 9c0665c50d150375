package run_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

// TestEveryReportGetsItsPage: a report written anywhere (here ingest
// refusing a disabled export) has its page next to it; a page that cannot
// be rendered leaves the report without one, not without a report.
func TestEveryReportGetsItsPage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		page     func(*run.Report) ([]byte, error)
		wantPage string // report.html's content; "" for none
	}{
		{"rendered", func(r *run.Report) ([]byte, error) { return []byte("page of " + r.Status), nil }, "page of refused"},
		{"render failed", func(*run.Report) ([]byte, error) { return nil, errors.New("broken template") }, ""},
		{"no renderer", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			st, err := store.NewFolder(dir)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			config := strings.Replace(queueConfig, "    mode: upsert\n", "    mode: upsert\n    enabled: false\n", 1)
			for key, body := range map[string]string{run.ConfigKey: config, "segments/vip/a.csv": "Email\na@example.com\n"} {
				if _, err := st.Put(ctx, key, strings.NewReader(body), store.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			svc := &run.Service{Store: st, TempDir: t.TempDir(), Page: tt.page}
			res, err := svc.Start(ctx, run.StartRequest{Trigger: run.TriggerManual, Source: run.Source{Key: "segments/vip/a.csv"}})
			if err != nil || len(res) != 1 || res[0].Status != run.StatusRefused {
				t.Fatalf("start: %+v %v", res, err)
			}
			rep, err := run.ReadReport(ctx, st, "vip", res[0].RunID)
			if err != nil {
				t.Fatal(err)
			}
			page, err := os.ReadFile(filepath.Join(dir, "runs", "vip", res[0].RunID, "report.html"))
			if tt.wantPage == "" {
				if rep.Page != "" || !errors.Is(err, os.ErrNotExist) {
					t.Errorf("reportHtml %q, report.html: %v", rep.Page, err)
				}
				return
			}
			if err != nil || string(page) != tt.wantPage || rep.Page != "runs/vip/"+res[0].RunID+"/report.html" {
				t.Errorf("report.html %q (%v), reportHtml %q", page, err, rep.Page)
			}
		})
	}
}
