package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/run"
)

// cmdUndo reverses a run: a run of its own, queued and sent like a file's.
func cmdUndo(ctx context.Context, e *env, args []string) error {
	var f runFlags
	fs := e.flags("undo")
	fs.StringVar(&f.configPath, "config", "", "exports.yaml")
	fs.StringVar(&f.export, "export", "", "the run's export (default: the export whose runs hold it)")
	fs.StringVar(&f.bucketDir, "bucket-dir", filepath.Join(".segpilot", "bucket"), "folder standing in for the S3 bucket")
	fs.BoolVar(&f.t.useSim, "sim", false, "send to the built-in simulators (one per kind of connection) instead of the config's baseURL")
	fs.BoolVar(&f.t.noWait, "no-wait", false, "if another process is running this export, exit at once (exit code 3) instead of waiting for it")
	ids, err := e.parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return usageError{"missing RUN-ID, the run to undo (segpilot runs --export NAME lists them)"}
	}
	if !runIDPattern.MatchString(ids[0]) {
		return usageError{fmt.Sprintf("%q is not a run id: <export>-<16 hex digits>, as segpilot runs lists them", ids[0])}
	}
	if err := required("config", f.configPath); err != nil {
		return err
	}
	cfg, err := config.LoadFile(f.configPath)
	if err != nil {
		return err
	}
	if _, err := stage(f.bucketDir, f.configPath, cfg, nil, ""); err != nil {
		return err
	}
	f.t.baseURLs = baseURLsFromEnv(e.getenv)
	s, err := e.open(ctx, f.bucketDir, f.t, cfg)
	if err != nil {
		return err
	}
	defer s.close()
	res, err := s.p.Service.Undo(ctx, run.UndoRequest{Trigger: run.TriggerManual, Export: f.export, Run: ids[0]})
	var results []run.Result
	if res.RunID != "" { // else nothing was queued: the error says why
		results = []run.Result{res}
	}
	return e.followUp(ctx, s, f, results, err)
}
