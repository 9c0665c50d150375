package plan_test

import (
	"context"
	"encoding/csv"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/segment"
)

// TestBuildUndo: each kind of contact an undo meets, in its batches, its
// target snapshot and undo.csv.
func TestBuildUndo(t *testing.T) {
	t.Parallel()
	gold := segment.Profile{Email: "changed@x", FirstName: "Ana", LastName: "Silva", Custom: segment.Custom{{Key: "tier", Value: "gold"}}}
	plat := gold
	plat.Custom = segment.Custom{{Key: "tier", Value: "platinum"}}
	noLast := segment.Profile{Email: "named@x", FirstName: "Bo"}               // before: no last name
	named := segment.Profile{Email: "named@x", FirstName: "Bo", LastName: "X"} // the run gave one
	lost := segment.Profile{Email: "lost@x", FirstName: "Cy"}                  // the run's values; the earlier ones are in no plan
	sent := []plan.Upsert{{Profile: gold}, {Profile: plat}, {Profile: noLast}, {Profile: named}, {Profile: lost}}

	before := lines("changed@x", plan.Hash(gold), "kept@x", "k1", "lost@x", "earlier-hash-of-no-plan", "named@x", plan.Hash(noLast),
		"putback-unknown@x", plan.UnknownHash, "removed@x", "r1", "unknown-before@x", plan.UnknownHash)
	current := lines("added@x", "a1", "changed@x", plan.Hash(plat), "kept@x", "k1",
		"lost@x", plan.Hash(lost), "named@x", plan.Hash(named), "unknown-before@x", "u1")

	dir := t.TempDir()
	p, counts, err := plan.BuildUndo(context.Background(), plan.UndoInput{
		Current: opener(current), Before: opener(before),
		Profiles: func(_ context.Context, visit func(plan.Upsert) error) error {
			for _, u := range sent {
				if err := visit(u); err != nil {
					return err
				}
			}
			return nil
		},
	}, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := plan.UndoCounts{TakeOff: 1, PutBack: 2, Restore: 2, Partial: 1, NotRestorable: 2}
	if counts != want {
		t.Errorf("counts %+v, want %+v", counts, want)
	}
	if c := p.Counts; c.Rows != 6 || c.Added != 2 || c.Changed != 2 || c.Unchanged != 2 || c.Removed != 1 || c.Previous != 6 {
		t.Errorf("plan counts %+v", c)
	}

	// Snapshot: before's, but the partly restored contact is unknown and
	// the contacts left as they are keep the run's hash.
	wantSnap := lines("changed@x", plan.Hash(gold), "kept@x", "k1", "lost@x", plan.Hash(lost), "named@x", plan.UnknownHash,
		"putback-unknown@x", plan.UnknownHash, "removed@x", "r1", "unknown-before@x", "u1")
	if got := read(t, filepath.Join(dir, p.Files.Snapshot)); got != wantSnap {
		t.Errorf("snapshot:\n%s\nwant:\n%s", got, wantSnap)
	}

	// Batches: the restores with the earlier values, the put-backs by
	// email alone, then the removal.
	bf, err := os.Open(filepath.Join(dir, p.Files.Batches))
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	upserts := map[string]segment.Profile{}
	var removals []string
	for _, ref := range p.Batches {
		line := make([]byte, ref.Length)
		if _, err := bf.ReadAt(line, ref.Offset); err != nil {
			t.Fatal(err)
		}
		b, err := plan.ReadBatch(line)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range b.Upserts {
			upserts[u.Profile.Email] = u.Profile
		}
		removals = append(removals, b.Removals...)
	}
	if len(upserts) != 4 || plan.Hash(upserts["changed@x"]) != plan.Hash(gold) || plan.Hash(upserts["named@x"]) != plan.Hash(noLast) ||
		plan.Hash(upserts["removed@x"]) != plan.Hash(segment.Profile{Email: "removed@x"}) {
		t.Errorf("upserts %+v; want changed@x and named@x at their earlier values, removed@x and putback-unknown@x by email", upserts)
	}
	if strings.Join(removals, ",") != "added@x" {
		t.Errorf("removals %v, want added@x", removals)
	}

	f, err := os.Open(filepath.Join(dir, p.Files.Undo))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]string{}
	for _, r := range rows[1:] {
		actions[r[1]] = r[2] + ": " + r[3]
	}
	for email, want := range map[string]string{
		"added@x":          plan.UndoTakeOff,
		"removed@x":        plan.UndoPutBack,
		"changed@x":        plan.UndoRestore + ": ",
		"named@x":          plan.UndoRestore + ": not restorable: last name",
		"lost@x":           plan.UndoNotRestorable + ": no plan of this export holds",
		"unknown-before@x": plan.UndoNotRestorable + ": its state before the run was not known",
	} {
		if !strings.HasPrefix(actions[email], want) {
			t.Errorf("undo.csv says %s: %q, want %q…", email, actions[email], want)
		}
	}
	if _, ok := actions["kept@x"]; ok || len(actions) != 7 {
		t.Errorf("undo.csv lists %d contacts (%v); want the 7 the run touched, not kept@x", len(actions), actions)
	}
}

// TestBuildUndoStopsOnceEveryProfileIsFound: the export's plans come
// newest first, and an undo reads no further once it has every changed
// contact's profiles before and now (its history may be a year of plans).
func TestBuildUndoStopsOnceEveryProfileIsFound(t *testing.T) {
	t.Parallel()
	gold := segment.Profile{Email: "changed@x", FirstName: "Ana", Custom: segment.Custom{{Key: "tier", Value: "gold"}}}
	plat, silver := gold, gold
	plat.Custom = segment.Custom{{Key: "tier", Value: "platinum"}}
	silver.Custom = segment.Custom{{Key: "tier", Value: "silver"}}
	newestFirst := []plan.Upsert{{Profile: plat}, {Profile: gold}, {Profile: silver}}
	visited, stopped := 0, error(nil)
	_, counts, err := plan.BuildUndo(context.Background(), plan.UndoInput{
		Current: opener(lines("changed@x", plan.Hash(plat))), Before: opener(lines("changed@x", plan.Hash(gold))),
		Profiles: func(_ context.Context, visit func(plan.Upsert) error) error {
			for _, u := range newestFirst {
				visited++
				if err := visit(u); err != nil {
					stopped = err
					return err
				}
			}
			return nil
		},
	}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if visited != 2 || !errors.Is(stopped, plan.ErrFoundAll) {
		t.Errorf("visited %d profiles, stopped by %v; want 2, stopped by plan.ErrFoundAll once both were found", visited, stopped)
	}
	if counts.Restore != 1 || counts.Partial != 0 {
		t.Errorf("counts %+v; want changed@x restored whole", counts)
	}
}

func lines(kv ...string) string {
	var b strings.Builder
	for i := 0; i < len(kv); i += 2 {
		b.WriteString(kv[i] + "\t" + kv[i+1] + "\n")
	}
	return b.String()
}

func opener(s string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(s)), nil }
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
