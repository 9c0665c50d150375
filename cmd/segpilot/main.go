// Command segpilot runs segpilot's export pipeline on a laptop: the same
// handlers and state machine as the Lambda deployment, with a folder as the
// bucket and Autopilot or Ortto (real or simulated).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/segpilot/segpilot/internal/buildinfo"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/suggest"
)

// Exit codes.
const (
	exitOK      = 0
	exitInvalid = 1 // the file or config is invalid, or a run failed
	exitUsage   = 2
	exitBusy    = 3 // --no-wait, and another process holds the export
)

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// busyError: with --no-wait, another process holds what this run needs.
type busyError struct{ msg string }

func (e busyError) Error() string { return e.msg }

type command struct {
	summary string
	usage   string // the command line's shape, for a mistake's message and the help
	example string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what every command gets: its streams and global flags.
type env struct {
	stdout, stderr io.Writer
	json           bool
	printed        bool // with --json: a document went to stdout
	verbose        bool
	log            *slog.Logger
	getenv         func(string) string
}

func commands() map[string]command {
	return map[string]command{
		"demo": {"run the bundled sample export end to end against the built-in simulator (make run)",
			"segpilot demo [--dest autopilot|ortto] [run's flags]", "segpilot demo", cmdDemo},
		"run": {"run an export locally: plan, send, finalize",
			"segpilot run --config FILE --export NAME --file SEGMENT [--bucket-dir DIR] [--sim] [flags]",
			"segpilot run --config exports.yaml --export vip-newsletter --file vip.csv --sim", cmdRun},
		"plan": {"dry run: what would be added, changed, removed and rejected",
			"segpilot plan --config FILE --export NAME --file SEGMENT [--snapshot FILE] [--out DIR]",
			"segpilot plan --config exports.yaml --export vip-newsletter --file vip.csv", cmdPlan},
		"validate": {"check a config and a segment file without sending anything",
			"segpilot validate --config FILE [--export NAME --file SEGMENT]",
			"segpilot validate --config exports.yaml --export vip-newsletter --file vip.csv", cmdValidate},
		"sim": {"serve a destination's simulator on loopback: Autopilot's (the default) or Ortto's",
			"segpilot sim [--kind autopilot|ortto] --api-key KEY [--addr HOST:PORT] [flags]",
			"segpilot sim --addr 127.0.0.1:8089 --api-key test-key --rps 5", cmdSim},
		"watch": {"run exports for every file dropped into DIR/segments/<segment>/",
			"segpilot watch --config FILE --dir DIR [--sim] [flags]",
			"segpilot watch --config exports.yaml --dir ./bucket --sim", cmdWatch},
		"runs": {"list the runs of an export and their status",
			"segpilot runs --export NAME [--bucket-dir DIR]",
			"segpilot runs --export vip-newsletter --bucket-dir .segpilot/bucket", cmdRuns},
		"report": {"print the path of a run's page (report.html); --open opens it",
			"segpilot report RUN-ID [--bucket-dir DIR] [--open]",
			"segpilot report vip-newsletter-0123456789abcdef --bucket-dir .segpilot/demo --open", cmdReport},
		"undo": {"reverse a run: take off the list whom it added, put back whom it took off, restore the fields it changed",
			"segpilot undo RUN-ID --config FILE [--export NAME] [--bucket-dir DIR] [--sim]",
			"segpilot undo vip-newsletter-0123456789abcdef --config exports.yaml --sim", cmdUndo},
		"version": {"print segpilot's version (module version and commit)",
			"segpilot version", "segpilot version", cmdVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// Main runs one command and returns its exit code (tests call it directly).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout, cmds)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "segpilot: unknown command %q%s ('segpilot help' lists them)\n", args[0], didYouMean(args[0], slices.Sorted(maps.Keys(cmds))))
		return exitUsage
	}
	e := &env{stdout: stdout, stderr: stderr, getenv: getenv}
	err := cmd.run(ctx, e, args[1:])
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	// With --json the document on stdout is the whole answer, the error
	// included: stderr says nothing more.
	if e.json {
		if !e.printed {
			e.printError(args[0], err)
		}
	} else {
		fmt.Fprintf(stderr, "segpilot %s: %s\n", args[0], errorText(err))
	}
	var ue usageError
	var be busyError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &be):
		return exitBusy
	}
	return exitInvalid
}

// errorText is a failed command's message for stderr.
func errorText(err error) string {
	var ue usageError
	var be busyError
	switch {
	case errors.As(err, &ue):
		return ue.msg
	case errors.As(err, &be):
		return "busy: " + be.msg
	}
	// Validation errors list one problem per line; everything else is one line.
	return strings.TrimSpace(err.Error())
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "segpilot exports customer segments into Autopilot lists and Ortto (a tag per list).")
	fmt.Fprintln(w, "\nUsage: segpilot <command> [flags]   (segpilot <command> --help for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, cmds[n].summary)
	}
}

// flags builds a command's flag set with the global -v and --json flags
// (help prints its help).
func (e *env) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package says nothing: parseArgs prints the help on --help,
	// and a mistake in two lines rather than buried in the whole help.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.BoolVar(&e.verbose, "v", false, "debug logs")
	fs.BoolVar(&e.json, "json", false, "machine-readable output")
	return fs
}

// help prints a command's help: what it does, its shape, an example and
// every flag.
func (e *env) help(fs *flag.FlagSet) {
	cmd := commands()[fs.Name()]
	fmt.Fprintf(e.stdout, "segpilot %s: %s\n\nUsage:\n  %s\n\nExample:\n  %s\n\nFlags:\n", fs.Name(), cmd.summary, cmd.usage, cmd.example)
	fs.SetOutput(e.stdout)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// didYouMean is "; did you mean X?" for the one of names closest to a
// mistyped s, or "" when none is close.
func didYouMean(s string, names []string) string {
	if m, ok := suggest.Closest(s, names, strings.ToLower, func(n int) int { return min(1+n/4, 3) }); ok {
		return "; did you mean " + m + "?"
	}
	return ""
}

// flagError is a mistake on a command line: the flag package's words,
// the flag meant when one was mistyped, and the command's shape.
func flagError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, "-"+f.Name) })
		msg += didYouMean("-"+name, names)
	}
	return usageError{fmt.Sprintf("%s\nusage: %s (segpilot %s --help lists every flag)", msg, commands()[fs.Name()].usage, fs.Name())}
}

// parse parses a command's flags; it takes no other arguments.
func (e *env) parse(fs *flag.FlagSet, args []string) error {
	_, err := e.parseArgs(fs, args, 0)
	return err
}

// parseArgs parses a command's flags and up to n other arguments, which
// may stand before, between or after the flags (the flag package stops
// at the first); "--" ends the flags.
func (e *env) parseArgs(fs *flag.FlagSet, args []string, n int) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				e.help(fs)
				return nil, err
			}
			return nil, flagError(fs, err)
		}
		left := fs.Args()
		if len(left) == 0 {
			break
		}
		if len(left) < len(args) && args[len(args)-len(left)-1] == "--" {
			rest = append(rest, left...)
			break
		}
		rest, args = append(rest, left[0]), left[1:]
	}
	if len(rest) > n {
		return nil, usageError{fmt.Sprintf("unexpected argument %q", rest[n])}
	}
	level := slog.LevelWarn
	if e.verbose {
		level = slog.LevelDebug
	}
	e.log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	return rest, nil
}

func required(pairs ...string) error {
	var missing []string
	for i := 0; i < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			missing = append(missing, "--"+pairs[i])
		}
	}
	if len(missing) > 0 {
		return usageError{"missing " + strings.Join(missing, ", ") + " (see --help)"}
	}
	return nil
}

// printError writes a failed command's error as the one JSON document on
// stdout, so --json callers always get JSON: {"error": {...}}.
func (e *env) printError(command string, err error) {
	doc := struct {
		Command  string           `json:"command"`
		Kind     string           `json:"kind"` // usage, busy, invalid (a bad config or file), failed
		Message  string           `json:"message"`
		File     string           `json:"file,omitempty"`
		Problems []config.Problem `json:"problems,omitempty"`
	}{Command: command, Kind: "failed", Message: err.Error()}
	var ue usageError
	var be busyError
	var ve *config.ValidationError
	var fe *segment.FileError
	switch {
	case errors.As(err, &ue):
		doc.Kind = "usage"
	case errors.As(err, &be):
		doc.Kind = "busy"
	case errors.As(err, &ve):
		doc.Kind, doc.File, doc.Problems = "invalid", ve.File, ve.Problems
	case errors.As(err, &fe):
		doc.Kind = "invalid"
	}
	if perr := e.print(map[string]any{"error": doc}, ""); perr != nil {
		fmt.Fprintf(e.stderr, "segpilot %s: writing the error as JSON: %v\n", command, perr)
	}
}

func cmdVersion(_ context.Context, e *env, args []string) error {
	fs := e.flags("version")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	b := buildinfo.Read()
	// go run and go test stamp nothing; make build does.
	commit := cmp.Or(b.Commit, "unknown")
	return e.print(b, fmt.Sprintf("segpilot %s, commit %s, %s\n", b.Version, commit, b.Go))
}
