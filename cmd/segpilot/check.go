package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/segment"
)

// loadExport reads the config and picks one export.
func loadExport(configPath, export string) (*config.Config, *config.Export, error) {
	cfg, err := config.LoadFile(configPath)
	if err != nil {
		return nil, nil, err
	}
	e, err := cfg.Export(export)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", configPath, err)
	}
	return cfg, e, nil
}

// fileSource streams a local segment file into the planner.
func fileSource(path string, m segment.Mapping) plan.Source {
	return func(ctx context.Context, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
		f, err := os.Open(path)
		if err != nil {
			return segment.Stats{}, fmt.Errorf("opening segment file: %w", err)
		}
		defer f.Close()
		return segment.Read(ctx, f, segment.Options{Name: path, Mapping: m}, emit, reject)
	}
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
		return e.print(map[string]any{"config": *configPath, "valid": true, "version": cfg.Version},
			fmt.Sprintf("%s: valid (%d connections, %d exports)\n", *configPath, len(cfg.Connections), len(cfg.Exports)))
	}
	if err := required("export", *export, "file", *file); err != nil {
		return err
	}
	ex, err := cfg.Export(*export)
	if err != nil {
		return fmt.Errorf("%s: %w", *configPath, err)
	}
	var firstRejections []segment.Rejection
	stats, err := fileSource(*file, ex.Mapping())(ctx, func(segment.Record) error { return nil },
		func(r segment.Rejection) error {
			if len(firstRejections) < 10 {
				firstRejections = append(firstRejections, r)
			}
			return nil
		})
	if err != nil {
		return err
	}
	text := fmt.Sprintf("%s: valid %s file: %d rows, %d valid, %d rejected\n", *file, stats.Format, stats.Rows, stats.Valid, stats.Rejected)
	for _, r := range firstRejections {
		text += fmt.Sprintf("  row %d: %s\n", r.Row, r.Reason)
	}
	if stats.Rejected > len(firstRejections) {
		text += fmt.Sprintf("  … and %d more (segpilot plan writes them all to rejected.csv)\n", stats.Rejected-len(firstRejections))
	}
	return e.print(map[string]any{"file": *file, "stats": stats}, text)
}

func cmdPlan(ctx context.Context, e *env, args []string) error {
	fs := e.flags("plan")
	configPath := fs.String("config", "", "exports.yaml")
	export := fs.String("export", "", "export name in the config")
	file := fs.String("file", "", "segment file")
	snapshot := fs.String("snapshot", "", "previous snapshot (state/<export>/snapshot); none = first run")
	out := fs.String("out", "", "where to write the plan (default: a new folder under .segpilot/plans)")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if err := required("config", *configPath, "export", *export, "file", *file); err != nil {
		return err
	}
	_, ex, err := loadExport(*configPath, *export)
	if err != nil {
		return err
	}
	var snap *os.File
	if *snapshot != "" {
		if snap, err = os.Open(*snapshot); err != nil {
			return fmt.Errorf("opening snapshot: %w", err)
		}
		defer snap.Close()
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
	opts := plan.Options{Mode: ex.Mode, MaxProfiles: ex.MaxProfiles, MaxRemovalShare: ex.MaxRemovalShare,
		AllowLargeRemoval: ex.AllowLargeRemoval}
	var p *plan.Plan
	if snap != nil {
		p, err = plan.Build(ctx, fileSource(*file, ex.Mapping()), snap, dir, opts)
	} else {
		p, err = plan.Build(ctx, fileSource(*file, ex.Mapping()), nil, dir, opts)
	}
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
		fmt.Sprintf("  to add %d, to change %d, unchanged %d, to remove %d — %d batches\n", c.Added, c.Changed, c.Unchanged, c.Removed, len(p.Batches))
	if p.Held {
		text += "  HELD: " + p.HeldReason + "\n"
	}
	if c.Rejected > 0 {
		text += "  rejected rows: " + filepath.Join(dir, p.Files.Rejected) + "\n"
	}
	return e.print(map[string]any{"export": ex.Name, "dir": dir, "counts": c, "batches": len(p.Batches), "held": p.Held, "heldReason": p.HeldReason}, text)
}

// print writes v as JSON with --json, else the text.
func (e *env) print(v any, text string) error {
	if e.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err := fmt.Fprint(e.stdout, text)
	return err
}
