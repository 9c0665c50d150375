package plan

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/segpilot/segpilot/shared/segment"
)

// UndoFile is the undo's contact-by-contact account: what it does to each
// contact the undone run touched, and what it cannot restore.
const UndoFile = "undo.csv"

var undoHeader = []string{"row", "email", "action", "detail"}

// What an undo does to one contact (undo.csv's action column).
const (
	UndoTakeOff       = "take off the list" // the run added it
	UndoPutBack       = "put back"          // the run took it off
	UndoRestore       = "restore fields"    // the run changed its fields
	UndoNotRestorable = "not restorable"    // the run changed it, and its earlier values are not known
)

// UndoInput is what an undo is planned from: two snapshots and the
// profiles the export's plans sent.
type UndoInput struct {
	// Current opens the snapshot the destination holds now: the undone
	// run's, or one an earlier attempt of this undo left. Before opens
	// the snapshot from before the undone run; nil: the run was the
	// export's first, so everyone it holds was added by it.
	Current, Before func() (io.ReadCloser, error)
	// Profiles calls visit with every upsert the export's plans hold
	// (the undone run's too), in any order (newest plans first is
	// fastest), until visit errs; a visit's ErrFoundAll ends it.
	Profiles  func(ctx context.Context, visit func(Upsert) error) error
	BatchSize int // default and maximum DefaultBatchSize
}

// ErrFoundAll is a visit's answer that it has found every profile it
// wanted: like fs.SkipAll, it ends the visiting without being an error.
var ErrFoundAll = errors.New("plan: every profile wanted was found")

// UndoCounts say what an undo plans, by action.
type UndoCounts struct {
	TakeOff       int `json:"takeOff"`
	PutBack       int `json:"putBack"`
	Restore       int `json:"restore"`
	Partial       int `json:"partial,omitempty"` // of Restore: a field the run filled was empty before, and an upsert cannot empty it
	NotRestorable int `json:"notRestorable"`
}

// BuildUndo plans the reversal of a run into outDir: the target snapshot
// is Before, but for the contacts it cannot restore. A contact the run
// added is taken off the list; one it took off is put back (an upsert of
// its email alone: its fields were never changed); one whose fields it
// changed is sent the values Before names, found by their hash among the
// export's plans. Those values cannot empty a field (an upsert leaves
// out what is empty), so a contact whose run filled a field empty before
// is restored but for that field, named in undo.csv, and left unknown in
// the snapshot (the next run sends it again); one whose earlier values
// no plan holds is left as it is, listed not restorable.
//
// Counts map onto a plan's: Rows (each an upsert, or a contact left as it
// is) = Added (put back) + Changed (restored) + Unchanged (not
// restorable); Removed are taken off. It holds in memory the contacts
// whose fields the run changed, with two profiles each.
func BuildUndo(ctx context.Context, in UndoInput, outDir string) (*Plan, UndoCounts, error) {
	if in.BatchSize == 0 {
		in.BatchSize = DefaultBatchSize
	}
	if in.BatchSize < 0 || in.BatchSize > DefaultBatchSize {
		return nil, UndoCounts{}, fmt.Errorf("undo: batch size %d, want 1..%d", in.BatchSize, DefaultBatchSize)
	}
	changed := map[string]*restoring{}
	if err := in.join(func(email, cur, before []byte) error {
		if cur != nil && before != nil && !bytes.Equal(cur, before) && string(before) != UnknownHash {
			changed[string(email)] = &restoring{before: string(before), current: string(cur)}
		}
		return nil
	}); err != nil {
		return nil, UndoCounts{}, err
	}
	if len(changed) > 0 {
		var e encoder
		unfound := 2 * len(changed) // the profiles before and now of each
		err := in.Profiles(ctx, func(u Upsert) error {
			r := changed[u.Profile.Email]
			if r == nil {
				return nil
			}
			h := e.hash(&u.Profile)
			var hexHash [2 * hashLen]byte
			encodeHex(&hexHash, &h)
			switch p := u.Profile; string(hexHash[:]) {
			case r.before:
				if r.was == nil {
					unfound--
				}
				r.was = &p
			case r.current:
				if r.now == nil {
					unfound--
				}
				r.now = &p
			}
			if unfound == 0 {
				return ErrFoundAll
			}
			return nil
		})
		if err != nil && !errors.Is(err, ErrFoundAll) {
			return nil, UndoCounts{}, fmt.Errorf("undo: reading the profiles earlier runs sent: %w", err)
		}
	}
	out := outputs{dir: outDir}
	p, counts, err := in.write(ctx, &out, changed)
	if err != nil {
		return nil, UndoCounts{}, errors.Join(err, out.remove())
	}
	return p, counts, nil
}

// restoring is a contact whose fields the undone run changed: the hashes
// before and now, and the profiles with those hashes, when a plan holds
// them.
type restoring struct {
	before, current string
	was, now        *segment.Profile
}

// unfillable names the fields now holds that was leaves empty: an upsert
// of was leaves them as they are. Without now (no plan holds what the
// run sent) every field was leaves empty might be one.
func (r *restoring) unfillable() []string {
	var out []string
	empty := func(name, was, now string) {
		if was == "" && (r.now == nil || now != "") {
			out = append(out, name)
		}
	}
	var nowFirst, nowLast string
	if r.now != nil {
		nowFirst, nowLast = r.now.FirstName, r.now.LastName
	}
	empty("first name", r.was.FirstName, nowFirst)
	empty("last name", r.was.LastName, nowLast)
	if r.now != nil {
		for _, c := range r.now.Custom {
			if _, ok := r.was.Custom.Get(c.Key); !ok {
				out = append(out, c.Key)
			}
		}
	}
	return out
}

// join merge-joins Current and Before by email, calling f with each
// email and its hash in each (nil where it has none).
func (in UndoInput) join(f func(email, cur, before []byte) error) error {
	open := func(o func() (io.ReadCloser, error), what string) (*snapshotReader, io.Closer, error) {
		if o == nil {
			return newSnapshotReader(nil), io.NopCloser(nil), nil
		}
		rc, err := o()
		if err != nil {
			return nil, nil, fmt.Errorf("undo: opening the %s snapshot: %w", what, err)
		}
		s := newSnapshotReader(rc)
		if err := s.next(); err != nil {
			rc.Close()
			return nil, nil, fmt.Errorf("undo: the %s snapshot: %w", what, err)
		}
		return s, rc, nil
	}
	cur, cc, err := open(in.Current, "current")
	if err != nil {
		return err
	}
	defer cc.Close()
	before, bc, err := open(in.Before, "earlier")
	if err != nil {
		return err
	}
	defer bc.Close()
	for cur.ok || before.ok {
		c := 0
		switch {
		case !cur.ok:
			c = 1
		case !before.ok:
			c = -1
		default:
			c = bytes.Compare(cur.email, before.email)
		}
		var err error
		switch {
		case c < 0:
			err = f(cur.email, cur.hash, nil)
		case c > 0:
			err = f(before.email, nil, before.hash)
		default:
			err = f(cur.email, cur.hash, before.hash)
		}
		if err != nil {
			return err
		}
		if c <= 0 {
			if err := cur.next(); err != nil {
				return fmt.Errorf("undo: the current snapshot: %w", err)
			}
		}
		if c >= 0 {
			if err := before.next(); err != nil {
				return fmt.Errorf("undo: the earlier snapshot: %w", err)
			}
		}
	}
	return nil
}

// write writes the undo's plan: batches.jsonl (upserts, then removals),
// the target snapshot, an empty rejected.csv (no file was read) and
// undo.csv.
func (in UndoInput) write(ctx context.Context, out *outputs, changed map[string]*restoring) (*Plan, UndoCounts, error) {
	if err := os.MkdirAll(out.dir, 0o700); err != nil {
		return nil, UndoCounts{}, fmt.Errorf("creating plan folder: %w", err)
	}
	create := func(name string) (*os.File, error) {
		path := filepath.Join(out.dir, name)
		out.written = append(out.written, path)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("creating %s: %w", name, err)
		}
		return f, nil
	}
	rej, err := newRejectWriter(filepath.Join(out.dir, RejectedFile))
	out.written = append(out.written, filepath.Join(out.dir, RejectedFile))
	if err != nil {
		return nil, UndoCounts{}, err
	}
	if err := rej.close(); err != nil {
		return nil, UndoCounts{}, err
	}
	batchFile, err := create(BatchesFile)
	if err != nil {
		return nil, UndoCounts{}, err
	}
	defer batchFile.Close()
	snapFile, err := create(SnapshotFile)
	if err != nil {
		return nil, UndoCounts{}, err
	}
	defer snapFile.Close()
	undoFile, err := create(UndoFile)
	if err != nil {
		return nil, UndoCounts{}, err
	}
	defer undoFile.Close()

	bw := newBatchWriter(batchFile, in.BatchSize)
	bwOpen := true
	defer func() {
		if bwOpen {
			bw.close()
		}
	}()
	snap := bufio.NewWriterSize(snapFile, snapshotBuf)
	undoBuf := bufio.NewWriterSize(undoFile, 64<<10)
	undo := csv.NewWriter(undoBuf)
	if err := undo.Write(undoHeader); err != nil {
		return nil, UndoCounts{}, fmt.Errorf("writing %s: %w", UndoFile, err)
	}
	// Removals go after every upsert, as in a plan: staged in memory as
	// emails only (the run's additions, at most its file's size).
	var takeOff []string
	var counts UndoCounts
	var c Counts
	var e encoder
	var jsonRest []byte
	row := 0
	line := func(email []byte, action, detail string) error {
		row++
		return undo.Write([]string{strconv.Itoa(row), segment.SafeCSVCell(string(email)), action, segment.SafeCSVCell(detail)})
	}
	err = in.join(func(email, cur, before []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if cur != nil {
			c.Previous++
		}
		switch {
		case before == nil: // the run added it
			counts.TakeOff++
			c.Removed++
			takeOff = append(takeOff, string(email))
			return line(email, UndoTakeOff, "")
		case cur == nil: // the run took it off; its fields are as they were
			counts.PutBack++
			c.Added++
			if err := line(email, UndoPutBack, ""); err != nil {
				return err
			}
			bw.addUpsert(row, email, []byte("}"))
			return writeSnapshotLine(snap, email, before)
		case bytes.Equal(cur, before):
			return writeSnapshotLine(snap, email, before)
		}
		r := changed[string(email)]
		if r == nil || r.was == nil {
			counts.NotRestorable++
			c.Unchanged++
			why := "no plan of this export holds the values it had before the run"
			if r == nil {
				why = "its state before the run was not known (a request whose outcome was never seen)"
			}
			if err := line(email, UndoNotRestorable, why+"; left as the run made it"); err != nil {
				return err
			}
			return writeSnapshotLine(snap, email, cur)
		}
		counts.Restore++
		c.Changed++
		target, detail := before, ""
		if lost := r.unfillable(); len(lost) > 0 {
			counts.Partial++
			target = []byte(UnknownHash) // neither hash: the next run sends it again
			detail = "not restorable: " + strings.Join(lost, ", ") + " (empty before the run; an upsert cannot empty a field)"
			if r.now == nil {
				detail = "maybe not restorable: " + strings.Join(lost, ", ") + " (empty before the run; what the run sent is not known)"
			}
		}
		if err := line(email, UndoRestore, detail); err != nil {
			return err
		}
		var err error
		if jsonRest, err = appendJSONRest(jsonRest[:0], r.was, e.sortedCustom(r.was.Custom)); err != nil {
			return fmt.Errorf("undo: %w", err)
		}
		bw.addUpsert(row, email, jsonRest)
		return writeSnapshotLine(snap, email, target)
	})
	if err != nil {
		return nil, UndoCounts{}, err
	}
	for _, email := range takeOff {
		bw.addRemoval(email)
	}
	bwOpen = false
	refs, err := bw.close()
	if err != nil {
		return nil, UndoCounts{}, err
	}
	undo.Flush()
	for _, step := range []struct {
		what string
		err  error
	}{
		{BatchesFile, batchFile.Close()},
		{SnapshotFile, snap.Flush()},
		{SnapshotFile, snapFile.Close()},
		{UndoFile, undo.Error()},
		{UndoFile, undoBuf.Flush()},
		{UndoFile, undoFile.Close()},
	} {
		if step.err != nil {
			return nil, UndoCounts{}, fmt.Errorf("writing %s: %w", step.what, step.err)
		}
	}
	c.Unique = c.Added + c.Changed + c.Unchanged
	c.Rows, c.Valid = c.Unique, c.Unique
	return &Plan{Counts: c, Batches: refs,
		Files: Files{Snapshot: SnapshotFile, Rejected: RejectedFile, Batches: BatchesFile, Undo: UndoFile}}, counts, nil
}
