package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

// writeParts writes n CSV parts of per profiles each into dir.
func writeParts(t *testing.T, dir string, n, per int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for p := range n {
		var b strings.Builder
		b.WriteString("EmailAddress,FirstName,LastName,LoyaltyTier,LifetimeOrders\n")
		for r := range per {
			fmt.Fprintf(&b, "part%d-%d@example.com,Ann,Lee,gold,%d\n", p, r, r)
		}
		dropFile(t, filepath.Join(dir, fmt.Sprintf("part-%05d.csv", p)), []byte(b.String()))
	}
}

// 'segpilot run --file DIR' runs a folder of parts as one delivery: the
// folder named on the command line is whole.
func TestRunAFolderOfParts(t *testing.T) {
	t.Parallel()
	config, _, bucket := fixture(t, 10)
	parts := filepath.Join(t.TempDir(), "unload")
	writeParts(t, parts, 3, 40)
	code, out, stderr := segpilot(t, context.Background(), "run", "--config", config, "--export", "vip-newsletter",
		"--file", parts, "--bucket-dir", bucket, "--sim")
	if code != 0 || !strings.Contains(out, ": SUCCEEDED") || !strings.Contains(out, "rows 120") {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
}

// A folder whose manifest names a part that is not there never runs: the
// CLI says what it waits for, and exits non-zero.
func TestRunAFolderMissingAPartOfItsManifest(t *testing.T) {
	t.Parallel()
	config, _, bucket := fixture(t, 10)
	parts := filepath.Join(t.TempDir(), "unload")
	writeParts(t, parts, 2, 10)
	manifest := `{"entries":[{"url":"s3://wh/unload/part-00000.csv"},{"url":"s3://wh/unload/part-00001.csv"},{"url":"s3://wh/unload/part-00002.csv"}]}`
	if err := os.WriteFile(filepath.Join(parts, "manifest"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := segpilot(t, context.Background(), "run", "--config", config, "--export", "vip-newsletter",
		"--file", parts, "--bucket-dir", bucket, "--sim")
	if code == 0 || !strings.Contains(out, "WAITING") || !strings.Contains(out, "part-00002.csv") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

// watch sees parts land in a folder, and runs it once when its marker
// does.
func TestWatchRunsAFolderWhenItsMarkerLands(t *testing.T) {
	t.Parallel()
	config, _, bucket := fixture(t, 10)
	out, stop := watching(t, config, bucket)
	folder := filepath.Join(bucket, "segments", "vip-customers", "spark-run")
	writeParts(t, folder, 2, 25)
	waitFor(t, func() bool { return strings.Count(out.String(), "waiting for a whole delivery") == 2 })
	dropFile(t, filepath.Join(folder, "_SUCCESS"), nil)
	st, err := store.NewFolder(bucket)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		reps, err := run.ListReports(context.Background(), st, "vip-newsletter")
		return err == nil && len(reps) == 1 && reps[0].Status == run.StatusSucceeded && reps[0].Plan.Rows == 50 &&
			reps[0].Source.Key == "segments/vip-customers/spark-run/"
	})
	stop()
}

// validate and plan read a folder of parts as run does: one delivery.
func TestValidateAndPlanAFolderOfParts(t *testing.T) {
	t.Parallel()
	config, _, _ := fixture(t, 10)
	parts := filepath.Join(t.TempDir(), "unload")
	writeParts(t, parts, 3, 20)
	if err := os.WriteFile(filepath.Join(parts, "part-00001.csv.crc"), []byte("crc"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := segpilot(t, context.Background(), "validate", "--config", config, "--export", "vip-newsletter", "--file", parts)
	if code != 0 || !strings.Contains(out, "60 rows") {
		t.Fatalf("validate: exit %d\n%s\n%s", code, out, stderr)
	}
	code, out, stderr = segpilot(t, context.Background(), "plan", "--config", config, "--export", "vip-newsletter", "--file", parts,
		"--out", filepath.Join(t.TempDir(), "plan"))
	if code != 0 || !strings.Contains(out, "rows 60: valid 60") {
		t.Fatalf("plan: exit %d\n%s\n%s", code, out, stderr)
	}
}
