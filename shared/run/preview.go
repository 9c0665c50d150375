package run

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/store"
)

// A dry run's preview.csv says, contact by contact, what the run would
// do and why: every row rejected or dropped as a duplicate, every contact
// added, changed (with the fields that changed and their values before
// and after), unchanged, held out, taken off or left on the list. The
// values before a change are found as an undo finds them: the profile
// whose hash the snapshot holds, among the export's plans.

var previewHeader = []string{"row", "email", "action", "fields changed", "why"}

func previewKey(export, runID string) string { return runPrefix(export, runID) + "preview.csv" }

// preview collects a plan's Explained into a CSV file; changes wait for
// finish, which needs the earlier values.
type preview struct {
	f       *os.File
	w       *csv.Writer
	changes []plan.Explained
}

func newPreview(dir string) (*preview, error) {
	f, err := os.CreateTemp(dir, "preview-*.csv")
	if err != nil {
		return nil, fmt.Errorf("creating preview.csv: %w", err)
	}
	p := &preview{f: f, w: csv.NewWriter(f)}
	return p, p.w.Write(previewHeader)
}

// close removes the preview's local file.
func (p *preview) close() {
	p.f.Close()
	os.Remove(p.f.Name())
}

func (p *preview) explain(x plan.Explained) error {
	if x.Action == plan.ActionChange && x.PrevHash != plan.UnknownHash {
		x.JSON = slices.Clone(x.JSON) // the planner reuses its buffer
		p.changes = append(p.changes, x)
		return nil
	}
	return p.write(x, "")
}

func (p *preview) write(x plan.Explained, fields string) error {
	row := ""
	if x.Row > 0 {
		row = strconv.Itoa(x.Row)
	}
	return p.w.Write([]string{row, segment.SafeCSVCell(x.Email), x.Action, segment.SafeCSVCell(fields), x.Reason})
}

// finish writes the changes, each with its fields before and after (what
// the export's plans in st sent), and puts the file at key.
func (p *preview) finish(ctx context.Context, st store.ObjectStore, export, key string) error {
	before := map[string]segment.Profile{}
	if len(p.changes) > 0 {
		want := map[string]string{}
		for _, x := range p.changes {
			want[x.Email] = x.PrevHash
		}
		var err error
		if before, err = EarlierValues(ctx, st, export, want); err != nil {
			return fmt.Errorf("preview: reading what earlier runs sent: %w", err)
		}
	}
	for _, x := range p.changes {
		now, err := x.Profile()
		if err != nil {
			return fmt.Errorf("preview: %w", err)
		}
		fields := "not known: no plan in the bucket holds what the last run sent"
		if was, ok := before[x.Email]; ok {
			fields = ChangedFields(was, now)
		}
		if err := p.write(x, fields); err != nil {
			return err
		}
	}
	p.w.Flush()
	if err := p.w.Error(); err != nil {
		return fmt.Errorf("writing preview.csv: %w", err)
	}
	if _, err := p.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := st.Put(ctx, key, p.f, store.PutOptions{ContentType: "text/csv"}); err != nil {
		return fmt.Errorf("writing %s: %w", key, err)
	}
	return nil
}

// EarlierValues finds, for each email of want (normalised, with the hash
// a snapshot holds for it), the profile with that hash among the plans of
// export in st: what a run sent it. An email no plan holds so is left out.
// It reads the newest plans first and no more once every email is found.
func EarlierValues(ctx context.Context, st store.ObjectStore, export string, want map[string]string) (map[string]segment.Profile, error) {
	out := map[string]segment.Profile{}
	if len(want) == 0 {
		return out, nil
	}
	err := planProfiles(ctx, st, export, func(u plan.Upsert) error {
		if h, ok := want[u.Profile.Email]; ok && plan.Hash(u.Profile) == h {
			out[u.Profile.Email] = u.Profile
			if len(out) == len(want) {
				return plan.ErrFoundAll
			}
		}
		return nil
	})
	return out, err
}

// SnapshotOf returns the key of the snapshot export stands on in st: what
// its next run diffs against ("" before its first run).
func SnapshotOf(ctx context.Context, st store.ObjectStore, export string) (string, error) {
	state, _, err := (&Service{Store: st}).readState(ctx, export)
	if err != nil || state.Snapshot == nil {
		return "", err
	}
	return state.Snapshot.Key, nil
}

// ChangedFields says which fields differ from was to now, as a preview
// does: "first name: Ana → Anna; string--Loyalty--Tier: gold → platinum".
// A field now empty is left as it is by the upsert, so it is not a change
// that is sent.
func ChangedFields(was, now segment.Profile) string {
	var out []string
	add := func(name, a, b string) {
		if a != b && b != "" {
			out = append(out, fmt.Sprintf("%s: %s → %s", name, orNone(a), b))
		}
	}
	add("first name", was.FirstName, now.FirstName)
	add("last name", was.LastName, now.LastName)
	keys := map[string]bool{}
	for _, c := range was.Custom {
		keys[c.Key] = true
	}
	for _, c := range now.Custom {
		keys[c.Key] = true
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		a, _ := was.Custom.Get(k)
		b, _ := now.Custom.Get(k)
		add(k, valueText(a), valueText(b))
	}
	return strings.Join(out, "; ")
}

func orNone(s string) string {
	if s == "" {
		return "(empty)"
	}
	return s
}

func valueText(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}
