package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/runpage"
	"github.com/segpilot/segpilot/shared/store"
)

// liftCommand is the exact segpilot command that runs a held file again
// with the brake lifted: the file as it lies in the bucket folder has the
// same bytes, so the same run id, and resumes the held plan.
func liftCommand(bucketDir string, cfg *config.Config, t target) func(string, run.Source) string {
	return func(export string, src run.Source) string {
		args := []string{"segpilot", "run", "--config", cfg.File, "--export", export,
			"--file", filepath.Join(bucketDir, filepath.FromSlash(src.Key)), "--bucket-dir", bucketDir}
		if t.useSim {
			args = append(args, "--sim")
		}
		args = append(args, "--allow-large-removal")
		for i, a := range args {
			args[i] = shellQuote(a)
		}
		return strings.Join(args, " ")
	}
}

var runIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]+-[0-9a-f]{16}$`)

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9@%+=:,./_-]+$`)

func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// pagePath is where a run's report.html lies in a bucket folder.
func pagePath(bucketDir, export, runID string) string {
	return filepath.Join(bucketDir, "runs", export, runID, "report.html")
}

func cmdReport(ctx context.Context, e *env, args []string) error {
	fs := e.flags("report")
	bucketDir := fs.String("bucket-dir", filepath.Join(".segpilot", "bucket"), "bucket folder")
	open := fs.Bool("open", false, "open the page in the default browser")
	ids, err := e.parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return usageError{"missing RUN-ID (segpilot runs --export NAME lists them)"}
	}
	runID := ids[0]
	if !runIDPattern.MatchString(runID) {
		return usageError{fmt.Sprintf("%q is not a run id: <export>-<16 hex digits>, as segpilot runs lists them", runID)}
	}
	st, err := store.OpenFolder(*bucketDir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no run %s: there is no folder %s (--bucket-dir names the bucket folder)", runID, *bucketDir)
	}
	if err != nil {
		return err
	}
	rep, err := findReport(ctx, st, runID)
	if err != nil {
		return err
	}
	path := pagePath(*bucketDir, rep.Export, rep.RunID)
	if err := ensurePage(ctx, st, rep); err != nil {
		return err
	}
	if e.json {
		return e.print(map[string]string{"runId": rep.RunID, "export": rep.Export, "status": rep.Status, "page": path}, "")
	}
	fmt.Fprintln(e.stdout, path)
	if *open {
		if err := openInBrowser(ctx, path); err != nil {
			fmt.Fprintf(e.stdout, "could not open it (%v): open the path above in a browser\n", err)
		}
	}
	return nil
}

// findReport finds a run by id: the export is the id less its last
// "-<hash>", but an export name may itself contain '-', so every export
// folder that could be it is tried.
func findReport(ctx context.Context, st store.ObjectStore, runID string) (*run.Report, error) {
	for i := strings.LastIndexByte(runID, '-'); i > 0; i = strings.LastIndexByte(runID[:i], '-') {
		rep, err := run.ReadReport(ctx, st, runID[:i], runID)
		if err == nil {
			return rep, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no run %s in this bucket folder (segpilot runs --export NAME lists them; --bucket-dir names the folder)", runID)
}

// ensurePage writes the page of a run whose report came before pages did.
func ensurePage(ctx context.Context, st *store.Folder, rep *run.Report) error {
	key := "runs/" + rep.Export + "/" + rep.RunID + "/report.html"
	if _, err := st.Head(ctx, key); !errors.Is(err, store.ErrNotFound) {
		return err
	}
	html, err := runpage.Render(rep)
	if err != nil {
		return err
	}
	// The folder was opened for reading: writing needs its temporary folder.
	w, err := store.NewFolder(st.Root())
	if err != nil {
		return err
	}
	if _, err := w.Put(ctx, key, bytes.NewReader(html), store.PutOptions{ContentType: "text/html; charset=utf-8"}); err != nil {
		return fmt.Errorf("writing %s: %w", key, err)
	}
	return nil
}

// openInBrowser hands path to the desktop's opener.
func openInBrowser(ctx context.Context, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	opener := "xdg-open"
	if runtime.GOOS == "darwin" {
		opener = "open"
	}
	if _, err := exec.LookPath(opener); err != nil {
		return fmt.Errorf("%s not found", opener)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, opener, abs)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", opener, err)
	}
	return nil
}
