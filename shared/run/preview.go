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
// Finish, which needs the earlier values.
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

// finish writes the changes, each with its fields before and after, found
// by profiles, and puts the file at key.
func (p *preview) finish(ctx context.Context, st store.ObjectStore, key string, profiles func(context.Context, func(plan.Upsert) error) error) error {
	before := map[string]*segment.Profile{}
	for _, x := range p.changes {
		before[x.Email] = nil
	}
	if len(before) > 0 {
		want := map[string]string{}
		for _, x := range p.changes {
			want[x.Email] = x.PrevHash
		}
		err := profiles(ctx, func(u plan.Upsert) error {
			if h, ok := want[u.Profile.Email]; ok && before[u.Profile.Email] == nil && plan.Hash(u.Profile) == h {
				prof := u.Profile
				before[u.Profile.Email] = &prof
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("preview: reading what earlier runs sent: %w", err)
		}
	}
	for _, x := range p.changes {
		now, err := x.Profile()
		if err != nil {
			return fmt.Errorf("preview: %w", err)
		}
		fields := "not known: no plan in the bucket holds what the last run sent"
		if was := before[x.Email]; was != nil {
			fields = changedFields(*was, now)
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

// changedFields says which fields differ: "first name: Ana → Anna;
// string--Loyalty--Tier: gold → platinum". A field now empty is left as it
// is by the upsert, so it is not a change that is sent.
func changedFields(was, now segment.Profile) string {
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
