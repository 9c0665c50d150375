package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExplain: after a run, `plan --explain` and `run --dry-run --explain`
// say what the next file does to the contacts named, a change with its
// field before and after.
func TestExplain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	config, file, bucket := fixture(t, 300)
	if code, out, errOut := segpilot(t, ctx, "run", "--config", config, "--export", "vip-newsletter", "--file", file, "--bucket-dir", bucket, "--sim"); code != 0 {
		t.Fatalf("run: exit %d\n%s%s", code, out, errOut)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// Row 1's tier changes; its email is what the generator wrote.
	lines := strings.SplitN(string(data), "\n", 3)
	cols := strings.Split(lines[1], ",")
	email, tier := strings.ToLower(cols[1]), cols[4]
	newTier := map[bool]string{true: "silver", false: "gold"}[tier == "gold"]
	cols[4] = newTier
	next := filepath.Join(filepath.Dir(file), "vip-week2.csv")
	if err := os.WriteFile(next, []byte(lines[0]+"\n"+strings.Join(cols, ",")+"\n"+lines[2]), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "string--Loyalty--Tier: " + tier + " → " + newTier

	code, out, errOut := segpilot(t, ctx, "plan", "--config", config, "--export", "vip-newsletter", "--file", next, "--bucket-dir", bucket,
		"--out", filepath.Join(t.TempDir(), "plan"), "--explain", email+",nobody@example.com")
	if code != 0 || !strings.Contains(out, email+": CHANGE (row 1); "+want) || !strings.Contains(out, "nobody@example.com: neither in the file nor in the snapshot") {
		t.Errorf("plan --explain: exit %d, want a line naming %q\n%s%s", code, want, out, errOut)
	}
	code, out, errOut = segpilot(t, ctx, "run", "--config", config, "--export", "vip-newsletter", "--file", next, "--bucket-dir", bucket, "--sim",
		"--dry-run", "--explain", strings.ToUpper(email))
	if code != 0 || !strings.Contains(out, email+": CHANGE (row 1); "+want) || !bytes.Contains([]byte(out), []byte("preview, contact by contact: ")) {
		t.Errorf("run --dry-run --explain: exit %d, want a line naming %q and the preview's path\n%s%s", code, want, out, errOut)
	}
}
