package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/delivery"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/store"
)

// loadExport reads the config and picks one export.
func loadExport(configPath, export string) (*config.Config, *config.Export, error) {
	cfg, err := config.LoadFile(configPath)
	if err != nil {
		return nil, nil, err
	}
	e, err := cfg.Export(export) // its error names the file
	if err != nil {
		return nil, nil, err
	}
	return cfg, e, nil
}

// fileSource streams a local segment file (or folder of parts) into the
// planner.
func fileSource(path string, m segment.Mapping) plan.Source {
	return func(ctx context.Context, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
		if info, err := os.Stat(path); err == nil && info.IsDir() {
			return folderSource(ctx, path, m, emit, reject)
		}
		f, err := os.Open(path)
		if err != nil {
			return segment.Stats{}, fmt.Errorf("opening segment file: %w", err)
		}
		defer f.Close()
		return segment.Read(ctx, f, segment.Options{Name: path, Mapping: m}, emit, reject)
	}
}

// folderSource reads a folder of parts named on the command line as one
// delivery: its manifest's parts, or with none, every data file in it.
func folderSource(ctx context.Context, dir string, m segment.Mapping, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
	st, err := store.OpenFolder(dir)
	if err != nil {
		return segment.Stats{}, err
	}
	infos, err := st.List(ctx, "")
	if err != nil {
		return segment.Stats{}, err
	}
	objs := make([]delivery.Object, 0, len(infos))
	for _, o := range infos {
		objs = append(objs, delivery.Object{Key: o.Key, ETag: o.ETag, Size: o.Size, LastModified: o.LastModified})
	}
	read := func(key string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, filepath.FromSlash(key))) }
	d, err := delivery.Decide("", objs, read, time.Now(), delivery.Options{Whole: true})
	switch {
	case err != nil:
		return segment.Stats{}, err
	case !d.Complete:
		return segment.Stats{}, fmt.Errorf("the folder %s is not a whole delivery: %s", dir, d.Describe())
	}
	return delivery.Read(ctx, localFiles(dir), d, segment.Options{Mapping: m}, emit, reject)
}

// localFiles opens a folder's files for reading as they are: unlike the
// bucket folder's Get, without reading each whole first for its ETag.
type localFiles string

func (dir localFiles) Get(_ context.Context, key string) (io.ReadCloser, store.ObjectInfo, error) {
	f, err := os.Open(filepath.Join(string(dir), filepath.FromSlash(key)))
	return f, store.ObjectInfo{Key: key}, err
}

// validateShown bounds the rejected rows validate lists: the text shows a
// few, --json more; rejected.csv of a plan or run has them all.
const (
	validateShownText = 10
	validateShownJSON = 100
)

// validateReport is validate's --json output for an export and a file.
type validateReport struct {
	Config          string         `json:"config"`
	Export          string         `json:"export"`
	File            string         `json:"file"`
	Valid           bool           `json:"valid"`    // nothing would stop a run
	Problems        []string       `json:"problems"` // what would
	Stats           segment.Stats  `json:"stats"`
	Counts          validateCounts `json:"counts"`
	Rejections      []rowProblem   `json:"rejections"`      // the first rows not sent, invalid ones first
	RejectionsTotal int            `json:"rejectionsTotal"` // rejected + duplicates
}

type validateCounts struct {
	Rows       int `json:"rows"`
	Valid      int `json:"valid"`
	Rejected   int `json:"rejected"`
	Duplicates int `json:"duplicates"`
	Unique     int `json:"unique"`
}

// rowProblem is a rejected row without its email: validate's output may
// end up in logs.
type rowProblem struct {
	Row    int    `json:"row"`
	Reason string `json:"reason"`
}

func cmdValidate(ctx context.Context, e *env, args []string) error {
	fs := e.flags("validate")
	configPath := fs.String("config", "", "exports.yaml")
	export := fs.String("export", "", "export name in the config")
	file := fs.String("file", "", "segment file (CSV, JSON Lines or JSON array; gzip ok)")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if *configPath == "" {
		return usageError{"missing --config (see --help)"}
	}
	cfg, err := config.LoadFile(*configPath)
	if err != nil {
		return err
	}
	if *export == "" && *file == "" {
		// A valid config; exports it switches off are worth a word.
		text := fmt.Sprintf("%s: valid (%s, %s)\n", *configPath, plural(len(cfg.Connections), "connection", "connections"),
			plural(len(cfg.Exports), "export", "exports"))
		var idle []string
		for _, name := range slices.Sorted(maps.Keys(cfg.Exports)) {
			if err := cfg.Runnable(cfg.Exports[name]); err != nil {
				idle = append(idle, err.Error())
				text += "  note: " + err.Error() + "\n"
			}
		}
		return e.print(map[string]any{"config": *configPath, "valid": true, "version": cfg.Version, "notRunnable": idle}, text)
	}
	if err := required("export", *export, "file", *file); err != nil {
		return err
	}
	ex, err := cfg.Export(*export) // its error names the file
	if err != nil {
		return err
	}
	rep := validateReport{Config: *configPath, Export: ex.Name, File: *file, Problems: []string{}, Rejections: []rowProblem{}}
	if err := cfg.Runnable(ex); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	// The planner's own reading, dedupe and maxProfiles check, so validate
	// refuses exactly what plan and run refuse.
	src := func(ctx context.Context, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
		st, err := fileSource(*file, ex.Mapping())(ctx, emit, reject)
		rep.Stats = st
		return st, err
	}
	counts, err := plan.Check(ctx, src, planOptions(ex), func(r segment.Rejection) error {
		rep.RejectionsTotal++
		if len(rep.Rejections) < validateShownJSON {
			rep.Rejections = append(rep.Rejections, rowProblem{Row: r.Row, Reason: r.Reason})
		}
		return nil
	})
	var limit *plan.LimitError
	var ferr *segment.FileError
	switch {
	case errors.As(err, &ferr):
		rep.Problems = append(rep.Problems, ferr.Error())
	case errors.As(err, &limit):
		rep.Problems = append(rep.Problems, limit.Error())
	case err != nil:
		return err
	}
	rep.Counts = validateCounts{Rows: counts.Rows, Valid: counts.Valid, Rejected: counts.Rejected,
		Duplicates: counts.Duplicates, Unique: counts.Unique}
	rep.Valid = len(rep.Problems) == 0

	var b strings.Builder
	if ferr == nil {
		c := rep.Counts
		fmt.Fprintf(&b, "%s: valid %s file: %s, %d valid (%d unique, %s), %d rejected\n",
			*file, rep.Stats.Format, plural(c.Rows, "row", "rows"), c.Valid, c.Unique, plural(c.Duplicates, "duplicate", "duplicates"), c.Rejected)
	}
	for _, r := range rep.Rejections[:min(len(rep.Rejections), validateShownText)] {
		fmt.Fprintf(&b, "  row %d: %s\n", r.Row, r.Reason)
	}
	if n := rep.RejectionsTotal - min(len(rep.Rejections), validateShownText); n > 0 {
		fmt.Fprintf(&b, "  … and %d more (segpilot plan writes them all to rejected.csv)\n", n)
	}
	if rep.Valid {
		fmt.Fprintf(&b, "%s: valid for export %s\n", *file, ex.Name)
	}
	if err := e.print(rep, b.String()); err != nil {
		return err
	}
	if !rep.Valid {
		return fmt.Errorf("%s: export %s would not run:\n  %s", *file, ex.Name, strings.Join(rep.Problems, "\n  "))
	}
	return nil
}

// planOptions are the export's settings as the planner takes them.
func planOptions(ex *config.Export) plan.Options {
	return plan.Options{Mode: ex.Mode, MaxProfiles: ex.MaxProfiles, MaxRemovalShare: ex.MaxRemovalShare,
		AllowLargeRemoval: ex.AllowLargeRemoval}
}

func cmdPlan(ctx context.Context, e *env, args []string) error {
	fs := e.flags("plan")
	configPath := fs.String("config", "", "exports.yaml")
	export := fs.String("export", "", "export name in the config")
	file := fs.String("file", "", "segment file")
	snapshot := fs.String("snapshot", "", "previous snapshot (state/<export>/snapshot); none = first run")
	out := fs.String("out", "", "where to write the plan (default: a new folder under .segpilot/plans)")
	explain := fs.String("explain", "", "print what the run would do to these contacts (emails, comma-separated) and why")
	bucketDir := fs.String("bucket-dir", "", "the bucket folder of the export's runs: without --snapshot the plan diffs against the export's snapshot there, and --explain names the fields a change changes, before and after")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, email := range strings.Split(*explain, ",") {
		if email = strings.TrimSpace(email); email == "" {
			continue
		}
		n, err := segment.NormalizeEmail(email)
		if err != nil {
			return usageError{fmt.Sprintf("--explain: %q is not an email address: %v", email, err)}
		}
		want[n] = true
	}
	if err := required("config", *configPath, "export", *export, "file", *file); err != nil {
		return err
	}
	_, ex, err := loadExport(*configPath, *export)
	if err != nil {
		return err
	}
	if ex.Split != nil {
		// Which group a contact is in depends on how the percentages
		// changed over time, which the bucket keeps (state/<export>/split.json).
		return usageError{fmt.Sprintf("%s is a group of the split export %s: plan it with `segpilot run --dry-run --export %s`, which reads the split kept in the bucket", ex.Name, ex.Split.Parent, ex.Split.Parent)}
	}
	var bucket store.ObjectStore
	if *bucketDir != "" {
		if bucket, err = store.OpenFolder(*bucketDir); err != nil {
			return fmt.Errorf("--bucket-dir: %w", err)
		}
	}
	var snap io.Reader
	switch {
	case *snapshot != "":
		f, err := os.Open(*snapshot)
		if err != nil {
			return fmt.Errorf("opening snapshot: %w", err)
		}
		defer f.Close()
		snap = f
	case bucket != nil:
		key, err := run.SnapshotOf(ctx, bucket, ex.Name)
		if err != nil {
			return err
		}
		if key != "" {
			rc, _, err := bucket.Get(ctx, key)
			if err != nil {
				return fmt.Errorf("reading the export's snapshot: %w", err)
			}
			defer rc.Close()
			snap = rc
		}
	}
	dir := *out
	if dir == "" {
		if err := os.MkdirAll(filepath.Join(".segpilot", "plans"), 0o755); err != nil {
			return err
		}
		if dir, err = os.MkdirTemp(filepath.Join(".segpilot", "plans"), ex.Name+"-"); err != nil {
			return err
		}
	}
	opts := planOptions(ex)
	var explained []plan.Explained
	if len(want) > 0 {
		opts.Explain = func(x plan.Explained) error {
			if want[x.Email] {
				x.JSON = slices.Clone(x.JSON) // the planner reuses its buffer
				explained = append(explained, x)
			}
			return nil
		}
	}
	p, err := plan.Build(ctx, fileSource(*file, ex.Mapping()), snap, dir, opts)
	if err != nil {
		var limit *plan.LimitError
		if errors.As(err, &limit) {
			os.RemoveAll(dir)
		}
		return err
	}
	c := p.Counts
	text := fmt.Sprintf("plan for %s (%s mode) written to %s\n", ex.Name, ex.Mode, dir) +
		fmt.Sprintf("  rows %d: valid %d (unique %d, duplicates %d), rejected %d\n", c.Rows, c.Valid, c.Unique, c.Duplicates, c.Rejected) +
		fmt.Sprintf("  to add %d, to change %d, unchanged %d, to remove %d — %s\n", c.Added, c.Changed, c.Unchanged, c.Removed,
			plural(len(p.Batches), "batch", "batches"))
	if p.Held {
		text += "  HELD: " + p.HeldReason + "\n"
	}
	if c.Rejected > 0 {
		text += "  rejected rows: " + filepath.Join(dir, p.Files.Rejected) + "\n"
	}
	lines, err := explainLines(ctx, bucket, ex.Name, want, explained)
	if err != nil {
		return err
	}
	text += lines
	return e.print(map[string]any{"export": ex.Name, "dir": dir, "counts": c, "batches": len(p.Batches), "held": p.Held, "heldReason": p.HeldReason}, text)
}

// plural says n things: "1 row", "2 rows".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// print writes v as JSON with --json, else the text.
func (e *env) print(v any, text string) error {
	if e.json {
		e.printed = true
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err := fmt.Fprint(e.stdout, text)
	return err
}

// explainLines says, for each contact --explain names, what the plan does
// with it and why; a change's fields, before and after, when the bucket
// holds what the last run sent.
func explainLines(ctx context.Context, bucket store.ObjectStore, export string, want map[string]bool, explained []plan.Explained) (string, error) {
	before := map[string]segment.Profile{}
	if bucket != nil {
		changed := map[string]string{}
		for _, x := range explained {
			if x.Action == plan.ActionChange {
				changed[x.Email] = x.PrevHash
			}
		}
		var err error
		if before, err = run.EarlierValues(ctx, bucket, export, changed); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	seen := map[string]bool{}
	for _, x := range explained {
		seen[x.Email] = true
		fmt.Fprintf(&b, "  %s: %s", x.Email, strings.ToUpper(x.Action))
		if x.Row > 0 {
			fmt.Fprintf(&b, " (row %d)", x.Row)
		}
		if x.Action == plan.ActionChange {
			now, err := x.Profile()
			if err != nil {
				return "", err
			}
			switch was, ok := before[x.Email]; {
			case ok:
				fmt.Fprintf(&b, "; %s", run.ChangedFields(was, now))
			case bucket == nil:
				b.WriteString("; which fields: give --bucket-dir, whose earlier runs hold what was sent")
			default:
				b.WriteString("; which fields: not known, no plan in the bucket holds what the last run sent")
			}
		}
		fmt.Fprintf(&b, "; %s\n", x.Reason)
	}
	for _, email := range slices.Sorted(maps.Keys(want)) {
		if !seen[email] {
			fmt.Fprintf(&b, "  %s: neither in the file nor in the snapshot\n", email)
		}
	}
	return b.String(), nil
}
