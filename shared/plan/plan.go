// Package plan turns a stream of validated profiles, an export's settings and
// the previous successful snapshot into an exact plan: batches of upserts
// and removals (batches.jsonl and its index), rejected.csv and the next
// snapshot (pipeline step 1).
//
// Memory stays flat whatever the input size: records are encoded into
// chunks, each chunk is sorted by (email, row) and spilled to a temp file,
// and the chunks are k-way merged; the merged stream keeps the last row per
// email and is merge-joined against the snapshot, itself sorted by email.
package plan

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/segpilot/segpilot/shared/segment"
)

// Modes of an export: what a run does with the list (config.Export.Mode).
const (
	ModeUpsert = "upsert" // add and update only
	ModeMirror = "mirror" // also take leavers off the list
	ModeUpdate = "update" // update people the destination has; never create one (it sends as upsert does)
	ModeCreate = "create" // create people the destination lacks; never change one (it sends as upsert does)
)

// Modes lists every mode.
var Modes = []string{ModeUpsert, ModeMirror, ModeUpdate, ModeCreate}

// Defaults for Options.
const (
	DefaultBatchSize    = 100 // also the maximum: Autopilot's bulk limit
	DefaultChunkRecords = 65536
)

// Output file names inside outDir: a plan is these three files whatever
// its size.
const (
	SnapshotFile = "snapshot"
	RejectedFile = "rejected.csv"
	BatchesFile  = "batches.jsonl" // one batch per line, in sequence order
)

// Options are one export's settings for one plan.
type Options struct {
	Mode              string  // one of Modes; only mirror removes
	MaxProfiles       int     // unique valid profiles allowed; more → *LimitError and nothing written. 0: no limit
	MaxRemovalShare   float64 // mirror safety brake share, e.g. 0.2
	AllowLargeRemoval bool    // lift the brake for this plan
	BatchSize         int     // default and maximum 100
	TempDir           string  // for spill files; default os.TempDir(); spill files are always removed
	ChunkRecords      int     // spill threshold; default 65536
	// FullResync sends every contact of the file, unchanged ones too (as
	// if the snapshot were empty); leavers and the brake are as ever.
	FullResync bool
	// InGroup, for a group of a split export, says whether a contact is
	// the group's (email normalised); nil: every contact is. The others
	// are counted in OtherGroups, and one that was the group's before
	// (MovedOut) leaves it as a leaver does.
	InGroup func(email []byte) bool
	// Explain, when set, is told each contact's fate (a preview): every
	// row rejected or dropped as a duplicate, every unique contact, every
	// contact of the snapshot the file lacks. It runs on the planner's
	// goroutines one call at a time; an error stops the plan.
	Explain func(Explained) error
}

func (o Options) withDefaults() (Options, error) {
	if !slices.Contains(Modes, o.Mode) {
		return o, fmt.Errorf("plan options: mode %q, want one of %q", o.Mode, Modes)
	}
	if o.MaxProfiles < 0 {
		return o, fmt.Errorf("plan options: maxProfiles %d is negative", o.MaxProfiles)
	}
	if o.MaxRemovalShare < 0 || o.MaxRemovalShare > 1 {
		return o, fmt.Errorf("plan options: maxRemovalShare %v, want 0..1", o.MaxRemovalShare)
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.BatchSize < 0 || o.BatchSize > DefaultBatchSize {
		return o, fmt.Errorf("plan options: batch size %d, want 1..%d", o.BatchSize, DefaultBatchSize)
	}
	if o.ChunkRecords == 0 {
		o.ChunkRecords = DefaultChunkRecords
	}
	if o.ChunkRecords < 0 {
		return o, fmt.Errorf("plan options: chunk records %d is negative", o.ChunkRecords)
	}
	return o, nil
}

// Source streams a segment: it calls emit for each valid record and reject
// for each rejected row, in row order (segment.Read partially applied). An
// error from emit or reject must stop it and be returned. Build encodes
// records on another goroutine, so the Source must not modify a record's
// Custom map after emitting it. The Stats it returns must hold in Rows its
// own count of the data rows it read: the plan's Rows is that count, and a
// plan whose rows do not all reach emit or reject fails with ErrRowCount.
type Source func(ctx context.Context, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error)

// Plan is what one run will do.
type Plan struct {
	Counts     Counts        `json:"counts"`
	Batches    []BatchRef    `json:"batches"`              // the index of batches.jsonl, in sequence order: upsert batches, then removal batches
	Held       bool          `json:"held"`                 // mirror safety brake engaged: batches are written, but must not be sent
	HeldReason string        `json:"heldReason,omitempty"` // why, and how to release it
	Files      Files         `json:"files"`                // relative paths inside outDir
	Source     segment.Stats `json:"source"`               // what the Source reported
}

// Files names the plan's outputs, relative to outDir.
type Files struct {
	Snapshot string `json:"snapshot"`
	Rejected string `json:"rejected"`
	Batches  string `json:"batches"`
	Undo     string `json:"undo,omitempty"` // an undo's undo.csv (see BuildUndo)
}

// Counts of one plan. Rows == Valid+Rejected; Valid == Unique+Duplicates;
// Unique == Added+Changed+Unchanged+OtherGroups. The first two are checked, not built
// in: Rows is the Source's count of the rows it read and Unique the
// merge's count of the profiles it classified, so a row lost on the way
// fails the plan with ErrRowCount.
type Counts struct {
	Rows       int `json:"rows"` // data rows read, as the Source counted them
	Valid      int `json:"valid"`
	Rejected   int `json:"rejected"`
	Duplicates int `json:"duplicates"` // valid rows overridden by a later row with the same email
	Unique     int `json:"unique"`
	Added      int `json:"added"`
	Changed    int `json:"changed"`
	Unchanged  int `json:"unchanged"`
	Resent     int `json:"resent,omitempty"` // a full resync: the unchanged contacts sent all the same
	// OtherGroups: a split export's contacts of the file that are another
	// group's (or held out): not this run's to send. MovedOut of them
	// were this group's before: the percentages changed.
	OtherGroups int `json:"otherGroups,omitempty"`
	MovedOut    int `json:"movedOut,omitempty"`
	Removed     int `json:"removed"` // mirror only: previous contacts not in the file
	Previous    int `json:"previous"`
}

// BatchRef indexes one batch: its line of batches.jsonl.
type BatchRef struct {
	Seq      int    `json:"seq"`
	Offset   int64  `json:"offset"` // of the line in batches.jsonl
	Length   int64  `json:"length"` // of the line, its newline included
	Upserts  int    `json:"upserts"`
	Removals int    `json:"removals"`
	CRC32C   string `json:"crc32c"` // of the line's bytes, see CRC32C
}

// Batch is one batch (a line of batches.jsonl): upserts or removals, never
// both.
type Batch struct {
	Seq      int      `json:"seq"`
	Upserts  []Upsert `json:"upserts,omitempty"`
	Removals []string `json:"removals,omitempty"`
}

// Upsert is one profile to add or update.
type Upsert struct {
	Row     int             `json:"row"` // 1-based data row it came from
	Profile segment.Profile `json:"profile"`
}

// ErrRowCount means rows went missing (or were counted twice) between
// reading the segment and classifying its profiles: the counts do not
// reconcile, and a plan built on them would leave contacts out unseen.
var ErrRowCount = errors.New("row counts do not reconcile")

// LimitError means the segment holds more unique profiles than the export
// allows; Build returns it before writing anything. Counts are what was
// read, so a report can show them: Rows, Valid, Rejected, Duplicates and
// Unique (nothing was diffed).
type LimitError struct {
	Counts Counts
	Max    int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("segment has %d profiles, above maxProfiles %d; raise maxProfiles for this export or split the segment", e.Counts.Unique, e.Max)
}

// Build plans one run, writing batches.jsonl, rejected.csv and snapshot
// into outDir (created; files of those names there are replaced).
// snapshot is the previous successful snapshot, nil on a first run. On
// *LimitError outDir is left untouched; on other errors Build removes the
// outputs it wrote.
func Build(ctx context.Context, src Source, snapshot io.Reader, outDir string, opts Options) (p *Plan, err error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(o.TempDir, "segpilot-plan-")
	if err != nil {
		return nil, fmt.Errorf("creating spill folder: %w", err)
	}
	defer func() {
		if rmErr := os.RemoveAll(work); rmErr != nil {
			p, err = nil, errors.Join(err, fmt.Errorf("removing spill folder: %w", rmErr))
		}
	}()

	// Phase 1: read, encode, sort and spill; rejections go to a staged file
	// because nothing may reach outDir before the limit check.
	stagedRejected := filepath.Join(work, RejectedFile)
	rej, err := newRejectWriter(stagedRejected)
	if err != nil {
		return nil, err
	}
	runs, counts, stats, err := spill(ctx, src, o, work, rej.write)
	if rejErr := rej.close(); err == nil {
		err = rejErr
	}
	if err != nil {
		return nil, err
	}

	// Phase 2: only when duplicates might hide it, count unique emails first.
	if o.MaxProfiles > 0 && counts.Valid > o.MaxProfiles {
		c := counts
		dups, err := runs.mergeUnique(ctx, func(*record) error { c.Unique++; return nil }, nil)
		if err != nil {
			return nil, fmt.Errorf("counting profiles: %w", err)
		}
		if c.Unique > o.MaxProfiles {
			c.Duplicates = dups
			return nil, &LimitError{Counts: c, Max: o.MaxProfiles}
		}
	}

	// Phase 3: merge-join into outDir.
	out := outputs{dir: outDir}
	defer func() {
		if err != nil {
			if rmErr := out.remove(); rmErr != nil {
				err = errors.Join(err, rmErr)
			}
		}
	}()
	p, err = out.write(ctx, runs, snapshot, work, stagedRejected, o, counts)
	if err != nil {
		return nil, err
	}
	p.Source = stats
	return p, nil
}

// Check is what `segpilot validate` runs: the planner's reading, dedupe and
// maxProfiles check, as in Build, without a snapshot or any output. reject
// gets every row Build would list in rejected.csv as invalid or duplicate
// (the invalid ones first). Counts holds Rows, Valid, Rejected, Duplicates
// and Unique, as far as it got when an error stopped it; over maxProfiles
// the error is a *LimitError.
func Check(ctx context.Context, src Source, opts Options, reject func(segment.Rejection) error) (counts Counts, err error) {
	o, err := opts.withDefaults()
	if err != nil {
		return counts, err
	}
	work, err := os.MkdirTemp(o.TempDir, "segpilot-check-")
	if err != nil {
		return counts, fmt.Errorf("creating spill folder: %w", err)
	}
	defer func() {
		if rmErr := os.RemoveAll(work); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("removing spill folder: %w", rmErr))
		}
	}()
	runs, counts, _, err := spill(ctx, src, o, work, reject)
	if err != nil {
		return counts, err
	}
	counts.Duplicates, err = runs.mergeUnique(ctx, func(*record) error { counts.Unique++; return nil },
		func(r *record, winner int) error { return reject(duplicateOf(r, winner)) })
	if err != nil {
		return counts, fmt.Errorf("counting profiles: %w", err)
	}
	if err := mergeReconciles(counts); err != nil {
		return counts, err
	}
	if o.MaxProfiles > 0 && counts.Unique > o.MaxProfiles {
		return counts, &LimitError{Counts: counts, Max: o.MaxProfiles}
	}
	return counts, nil
}

// spill is phase one: it reads src, hands rejected rows to reject, and
// encodes, sorts and spills the valid records into work, merged down to
// few enough runs for one final merge.
func spill(ctx context.Context, src Source, o Options, work string, reject func(segment.Rejection) error) (*spilled, Counts, segment.Stats, error) {
	var counts Counts
	sp := newSpiller(ctx, work, o.ChunkRecords)
	stats, srcErr := src(ctx,
		func(r segment.Record) error {
			if hasLineBreakOrTab(r.Profile.Email) {
				return fmt.Errorf("row %d: email contains a tab or line break", r.Row)
			}
			counts.Valid++
			return sp.emit(r)
		},
		func(r segment.Rejection) error {
			counts.Rejected++
			if o.Explain != nil {
				if err := o.Explain(Explained{Row: r.Row, Email: r.Email, Action: ActionRejected, Reason: r.Reason}); err != nil {
					return err
				}
			}
			return reject(r)
		})
	// The Source's own count, not Valid+Rejected: a row it read but never
	// handed over must show, not vanish from every count.
	counts.Rows = stats.Rows
	runs, spErr := sp.finish(srcErr != nil)
	switch {
	case srcErr != nil:
		return nil, counts, stats, fmt.Errorf("reading segment: %w", srcErr)
	case spErr != nil:
		return nil, counts, stats, fmt.Errorf("spilling profiles: %w", spErr)
	case counts.Rows != counts.Valid+counts.Rejected:
		return nil, counts, stats, fmt.Errorf("reading segment: %w: the source read %d data rows but handed over %d valid and %d rejected",
			ErrRowCount, counts.Rows, counts.Valid, counts.Rejected)
	}
	if err := runs.reduce(ctx, work, maxRuns); err != nil {
		return nil, counts, stats, fmt.Errorf("merging spill files: %w", err)
	}
	return runs, counts, stats, nil
}

// mergeReconciles checks that every valid row came out of the merge, as
// a unique profile or a duplicate.
func mergeReconciles(c Counts) error {
	if c.Valid != c.Unique+c.Duplicates {
		return fmt.Errorf("merging profiles: %w: %d valid rows went in, %d unique profiles and %d duplicates came out",
			ErrRowCount, c.Valid, c.Unique, c.Duplicates)
	}
	return nil
}

// outputs writes and, on failure, removes the plan's files in outDir.
type outputs struct {
	dir     string
	written []string
}

func (out *outputs) remove() error {
	var errs []error
	for _, p := range out.written {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("removing partial plan output: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (out *outputs) write(ctx context.Context, runs *spilled, snapshot io.Reader, work, stagedRejected string, o Options, counts Counts) (*Plan, error) {
	if err := os.MkdirAll(out.dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating plan folder: %w", err)
	}
	batchPath := filepath.Join(out.dir, BatchesFile)
	out.written = append(out.written, batchPath)
	batchFile, err := os.OpenFile(batchPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", BatchesFile, err)
	}
	defer batchFile.Close() // second close after the checked one below is harmless
	bw := newBatchWriter(batchFile, o.BatchSize)
	bwOpen := true
	defer func() {
		if bwOpen {
			bw.close() // stops its goroutine; an error is already being returned
		}
	}()

	snapPath := filepath.Join(out.dir, SnapshotFile)
	out.written = append(out.written, snapPath)
	snapFile, err := os.OpenFile(snapPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating snapshot: %w", err)
	}
	defer snapFile.Close() // second close after the checked one below is harmless

	removals, err := os.Create(filepath.Join(work, "removals"))
	if err != nil {
		return nil, fmt.Errorf("creating removals file: %w", err)
	}
	defer removals.Close()

	snapW := newBackgroundWriter(snapFile, snapshotBuf)
	defer snapW.close() // stops its goroutine on every path; checked below
	// Dropped duplicates go to rejected.csv after the file's invalid rows:
	// the merge finds them in email order.
	dupW, err := appendRejectWriter(stagedRejected)
	if err != nil {
		return nil, err
	}
	dupOpen := true
	defer func() {
		if dupOpen {
			dupW.close() // an error is already being returned
		}
	}()

	j := &joiner{
		rejected:  dupW,
		mirror:    o.Mode == ModeMirror,
		full:      o.FullResync,
		inGroup:   o.InGroup,
		explainFn: o.Explain,
		snap:      newSnapshotReader(snapshot),
		snapOut:   bufio.NewWriterSize(snapW, snapshotBuf),
		removals:  bufio.NewWriterSize(removals, 64<<10),
		batches:   bw,
		counts:    &counts,
	}
	dups, err := j.run(ctx, runs)
	if err != nil {
		return nil, err
	}
	if err := j.removals.Flush(); err != nil {
		return nil, fmt.Errorf("writing removals file: %w", err)
	}
	if err := addRemovals(removals, bw); err != nil {
		return nil, err
	}
	bwOpen = false
	refs, err := bw.close()
	if err != nil {
		return nil, err
	}
	if err := batchFile.Close(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", BatchesFile, err)
	}
	if err := j.snapOut.Flush(); err != nil {
		return nil, fmt.Errorf("writing snapshot: %w", err)
	}
	if err := snapW.close(); err != nil {
		return nil, fmt.Errorf("writing snapshot: %w", err)
	}
	if err := snapFile.Close(); err != nil {
		return nil, fmt.Errorf("writing snapshot: %w", err)
	}

	dupOpen = false
	if err := dupW.close(); err != nil {
		return nil, err
	}
	rejPath := filepath.Join(out.dir, RejectedFile)
	out.written = append(out.written, rejPath)
	if err := moveFile(stagedRejected, rejPath); err != nil {
		return nil, fmt.Errorf("writing rejected.csv: %w", err)
	}

	// Unique is what the merge classified, not Valid-dups: a record lost
	// in the spill files must show too.
	counts.Duplicates = dups
	counts.Unique = counts.Added + counts.Changed + counts.Unchanged + counts.OtherGroups
	if err := mergeReconciles(counts); err != nil {
		return nil, err
	}
	p := &Plan{
		Counts:  counts,
		Batches: refs,
		Files:   Files{Snapshot: SnapshotFile, Rejected: RejectedFile, Batches: BatchesFile},
	}
	p.Held, p.HeldReason = brake(counts, o)
	return p, nil
}

// addRemovals turns the staged leavers into removal batches after every
// upsert batch.
func addRemovals(f *os.File, bw *batchWriter) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("reading removals file: %w", err)
	}
	br := bufio.NewReaderSize(f, 64<<10)
	var line []byte
	for {
		var err error
		line, err = readLine(br, line[:0])
		if len(line) > 0 {
			bw.addRemoval(string(line))
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading removals file: %w", err)
		}
	}
}

// joiner classifies each unique profile against the previous snapshot and
// writes the new snapshot, upserts and leavers as it goes.
type joiner struct {
	mirror    bool
	full      bool
	inGroup   func(email []byte) bool
	explainFn func(Explained) error
	snap      *snapshotReader
	snapOut   *bufio.Writer
	removals  *bufio.Writer
	batches   *batchWriter
	rejected  *rejectWriter // for the dropped duplicates
	counts    *Counts
	hexHash   [2 * hashLen]byte
}

func (j *joiner) run(ctx context.Context, runs *spilled) (dups int, err error) {
	if err := j.snap.next(); err != nil {
		return 0, err
	}
	dups, err = runs.mergeUnique(ctx, j.unique, j.duplicate)
	if err != nil {
		return dups, err
	}
	for j.snap.ok {
		if err := j.leaver(); err != nil {
			return dups, err
		}
	}
	return dups, nil
}

func (j *joiner) unique(r *record) error {
	for j.snap.ok && bytes.Compare(j.snap.email, r.email) < 0 {
		if err := j.leaver(); err != nil {
			return err
		}
	}
	if j.inGroup != nil && !j.inGroup(r.email) {
		j.counts.OtherGroups++
		if j.snap.ok && bytes.Equal(j.snap.email, r.email) {
			j.counts.MovedOut++
			why := "the split's percentages changed: it is another group's now, and leaves this group's list"
			if !j.mirror {
				why = "the split's percentages changed: it is another group's now (it stays on this group's list too: only mirror removes)"
			}
			if err := j.explain(Explained{Row: r.row, Email: string(r.email), Action: ActionMovedOut, Reason: why}); err != nil {
				return err
			}
			return j.leaverOf()
		}
		return j.explain(Explained{Row: r.row, Email: string(r.email), Action: ActionOtherGroup, Reason: "the split puts it in another group, or holds it out"})
	}
	encodeHex(&j.hexHash, &r.hash)
	upsert := true
	x := Explained{Row: r.row, Email: string(r.email), Action: ActionAdd, Reason: "not on the list yet (as far as the last run left it)"}
	if j.snap.ok && bytes.Equal(j.snap.email, r.email) {
		if bytes.Equal(j.snap.hash, j.hexHash[:]) {
			j.counts.Unchanged++
			upsert = j.full
			x.Action, x.Reason = ActionUnchanged, "the same as the last run sent"
			if j.full {
				j.counts.Resent++
				x.Action, x.Reason = ActionResend, "unchanged, sent all the same: a full resync"
			}
		} else {
			j.counts.Changed++
			x.Action, x.Reason, x.PrevHash = ActionChange, "differs from what the last run sent", string(j.snap.hash)
			if string(j.snap.hash) == UnknownHash {
				x.Reason = "an earlier request for it got no clear answer: sent again"
			}
		}
		j.counts.Previous++
		if err := j.snap.next(); err != nil {
			return err
		}
	} else {
		j.counts.Added++
	}
	if upsert {
		j.batches.addUpsert(r.row, r.email, r.json)
	}
	if j.explainFn != nil && x.Action != ActionUnchanged && x.Action != ActionResend {
		x.JSON = r.json
	}
	if err := j.explain(x); err != nil {
		return err
	}
	return writeSnapshotLine(j.snapOut, r.email, j.hexHash[:])
}

// duplicate lists a row that lost to a later row of the same email. Its
// email is the normalised one: the planner does not keep it as given.
func (j *joiner) duplicate(r *record, winner int) error {
	d := duplicateOf(r, winner)
	if err := j.explain(Explained{Row: d.Row, Email: d.Email, Action: ActionDuplicate, Reason: d.Reason}); err != nil {
		return err
	}
	return j.rejected.write(d)
}

func duplicateOf(r *record, winner int) segment.Rejection {
	return segment.Rejection{Row: r.row, Email: string(r.email), Reason: "duplicate of row " + strconv.Itoa(winner)}
}

// leaver handles the current snapshot entry, absent from the file: mirror
// mode removes it; upsert mode carries it into the new snapshot because the
// contact is still on the list and segpilot put it there.
func (j *joiner) leaver() error {
	x := Explained{Email: string(j.snap.email), Action: ActionKeep, Reason: "not in the file; only a mirror export takes leavers off the list"}
	if j.mirror {
		x.Action, x.Reason = ActionRemove, "not in the file: a mirror export takes it off the list"
	}
	if err := j.explain(x); err != nil {
		return err
	}
	return j.leaverOf()
}

// leaverOf takes the current snapshot entry as a leaver, its fate
// explained.
func (j *joiner) leaverOf() error {
	j.counts.Previous++
	if j.mirror {
		j.counts.Removed++
		if _, err := j.removals.Write(j.snap.email); err != nil {
			return fmt.Errorf("writing removals file: %w", err)
		}
		if err := j.removals.WriteByte('\n'); err != nil {
			return fmt.Errorf("writing removals file: %w", err)
		}
	} else if err := writeSnapshotLine(j.snapOut, j.snap.email, j.snap.hash); err != nil {
		return err
	}
	return j.snap.next()
}

// brake decides whether a mirror plan must be held for a human: it would
// take too large a share of the list off, or the file looks truncated.
// How to release it depends on where segpilot runs: its caller says.
func brake(c Counts, o Options) (bool, string) {
	if o.Mode != ModeMirror || c.Previous == 0 || o.AllowLargeRemoval {
		return false, ""
	}
	share := float64(c.Removed) / float64(c.Previous)
	mine := c.Unique - c.OtherGroups // a split group's own contacts
	switch {
	case c.Unique == 0:
		return true, fmt.Sprintf("segment has no valid profiles, so mirroring it would remove all %d contacts", c.Previous)
	case share > o.MaxRemovalShare:
		return true, fmt.Sprintf("would remove %d of %d contacts (%s), above maxRemovalShare %s",
			c.Removed, c.Previous, percent(share), percent(o.MaxRemovalShare))
	case float64(mine) < float64(c.Previous)*(1-o.MaxRemovalShare):
		return true, fmt.Sprintf("segment has %d profiles against %d contacts before, a drop above maxRemovalShare %s",
			mine, c.Previous, percent(o.MaxRemovalShare))
	}
	return false, ""
}

// percent formats a share as "60%" or "12.5%".
func percent(share float64) string {
	return strconv.FormatFloat(float64(int64(share*1000+0.5))/10, 'f', -1, 64) + "%"
}

// hasLineBreakOrTab reports whether an email would break a snapshot line.
// A loop: strings.ContainsAny costs more for a set it builds on every call.
func hasLineBreakOrTab(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\t', '\n', '\r':
			return true
		}
	}
	return false
}

// encodeHex is hex.Encode for a content hash, two digits per table lookup:
// the merge runs it once per profile.
func encodeHex(dst *[2 * hashLen]byte, h *[hashLen]byte) {
	for i, b := range h {
		p := hexPairs[b]
		dst[2*i], dst[2*i+1] = p[0], p[1]
	}
}

var hexPairs = func() (t [256][2]byte) {
	for i := range t {
		t[i] = [2]byte{hexDigits[i>>4], hexDigits[i&0xf]}
	}
	return t
}()

// moveFile renames src to dst, copying when they sit on different file
// systems (TempDir and outDir need not share one).
func moveFile(src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	outF, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(outF, in); err != nil {
		return errors.Join(err, outF.Close())
	}
	return outF.Close()
}
