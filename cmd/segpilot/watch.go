package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/delivery"
	"github.com/segpilot/segpilot/shared/run"
)

// fileState is what watch remembers of a file: a change in either means a new drop.
type fileState struct {
	size    int64
	modTime time.Time
}

func cmdWatch(ctx context.Context, e *env, args []string) error {
	fs := e.flags("watch")
	configPath := fs.String("config", "", "exports.yaml")
	dir := fs.String("dir", "", "drop folder laid out like the bucket: files land in DIR/segments/<segment>/")
	interval := fs.Duration("interval", 2*time.Second, "how often to look for new files")
	existing := fs.Bool("existing", false, "also run the files already there at start")
	emptyWait := fs.Duration("empty-wait", time.Minute, "how long a segment file must stay empty (0 bytes) before it runs: a writer that creates its file before writing (a shell's > redirect) leaves it empty until its first bytes")
	var t target
	fs.BoolVar(&t.useSim, "sim", false, "send to the built-in simulators (one per kind of connection)")
	fs.StringVar(&t.faults, "faults", "", "with --sim: inject faults")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if err := required("config", *configPath, "dir", *dir); err != nil {
		return err
	}
	cfg, err := config.LoadFile(*configPath)
	if err != nil {
		return err
	}
	if _, err := stage(*dir, *configPath, cfg, nil, ""); err != nil {
		return err
	}
	t.baseURLs = baseURLsFromEnv(e.getenv)
	s, err := e.open(ctx, *dir, t, cfg)
	if err != nil {
		return err
	}
	defer s.close()

	seen := map[string]fileState{}
	pending := map[string]fileState{}    // seen once; run when unchanged at the next look (upload finished)
	emptySince := map[string]time.Time{} // pending and empty: since when
	first := true
	fmt.Fprintf(e.stdout, "watching %s for segment files (Ctrl-C to stop)\n", filepath.Join(*dir, "segments"))
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		files, err := scanSegments(*dir)
		if err != nil {
			return err
		}
		var ready []string
		for key, st := range files {
			if first && !*existing {
				seen[key] = st
				continue
			}
			if seen[key] == st {
				continue
			}
			if p, ok := pending[key]; !ok || p != st {
				pending[key] = st
				delete(emptySince, key)
				continue
			}
			if st.size == 0 && delivery.Classify(key) == delivery.Data {
				// Never a segment (no header, no rows), so no run can
				// succeed on it yet; runs once it has stayed empty this
				// long, to say so. (A marker is empty by design.)
				since, ok := emptySince[key]
				if !ok {
					since = time.Now()
					emptySince[key] = since
				}
				if time.Since(since) < *emptyWait {
					continue
				}
			}
			delete(pending, key)
			delete(emptySince, key)
			seen[key] = st
			ready = append(ready, key)
		}
		// In arrival order, as S3 events are queued: a newer file must not
		// run before an older one (which would then undo it).
		slices.SortFunc(ready, func(a, b string) int {
			return cmp.Or(files[a].modTime.Compare(files[b].modTime), strings.Compare(a, b))
		})
		for _, key := range ready {
			e.runDropped(ctx, s, cfg, *dir, key, files[key].modTime)
		}
		// What no new file starts, as the sweep schedule does in AWS: a
		// folder of parts whose quiet period is over.
		if swept, err := s.p.Service.Sweep(ctx); err != nil {
			fmt.Fprintf(e.stderr, "segpilot watch: %v\n", err)
		} else if len(swept) > 0 {
			e.runResults(ctx, s, *dir, swept)
		}
		first = false
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// runDropped runs the exports of one dropped file, and reports instead of
// stopping on failure: one bad drop must not stop the watcher.
func (e *env) runDropped(ctx context.Context, s *session, cfg *config.Config, dir, key string, arrived time.Time) {
	fmt.Fprintf(e.stdout, "new file %s\n", key)
	results, err := s.p.Service.Start(ctx, run.StartRequest{Trigger: run.TriggerS3, Arrived: arrived, Source: run.Source{Key: key}})
	if s.progress != nil {
		s.progress.finish()
	}
	if len(results) == 0 && err == nil {
		seg, _, _ := delivery.Of(key) // scanSegments lists only keys under a segment
		fmt.Fprintf(e.stdout, "  no export reads segment %q: nothing to do (exports read: %s)\n", seg, strings.Join(segmentsRead(cfg), ", "))
		return
	}
	var waiting []run.Result
	results = slices.DeleteFunc(results, func(r run.Result) bool {
		if r.Status == run.StatusWaiting { // a part of a folder not whole yet: one line, not a failure
			waiting = append(waiting, r)
			return true
		}
		return false
	})
	for _, r := range waiting {
		fmt.Fprintf(e.stdout, "  %s: %s\n", r.Export, r.Message)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "segpilot watch: %s: %v\n", key, err)
	}
	if len(results) > 0 {
		e.runResults(ctx, s, dir, results)
	}
}

// runResults waits for the runs started and prints their summaries.
func (e *env) runResults(ctx context.Context, s *session, dir string, results []run.Result) {
	results, err := e.await(ctx, s, results, false)
	if serr := e.summarise(ctx, s, dir, results); serr != nil {
		err = serr
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "segpilot watch: %v\n", err)
	}
}

// segmentsRead lists the segments the config's exports read.
func segmentsRead(cfg *config.Config) []string {
	var segs []string
	for _, ex := range cfg.Exports {
		if !slices.Contains(segs, ex.Segment) {
			segs = append(segs, ex.Segment)
		}
	}
	slices.Sort(segs)
	return segs
}

// scanSegments lists what is under DIR/segments/<segment>/ as bucket
// keys: files, and the parts, markers and manifests of folders; never
// what is not a segment (scratch, checksums, lock files).
func scanSegments(dir string) (map[string]fileState, error) {
	out := map[string]fileState{}
	root := filepath.Join(dir, "segments")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while we looked
		}
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if _, _, err := delivery.Of(key); err != nil || delivery.Classify(key) == delivery.Ignored {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed while we looked
		}
		out[key] = fileState{size: info.Size(), modTime: info.ModTime()}
		return nil
	})
	return out, err
}
