package plan

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// PromoteByRow writes to w the snapshot a run leaves when not every contact
// of its plan was delivered: for each email in base or target (both
// snapshots, sorted), target's entry, unless the email is in undelivered
// (sorted, as the plan's batches list them), which keeps base's entry (or
// none, if base had none). So a contact whose upsert failed keeps its
// previous hash (and a new one stays absent), and a leaver whose removal
// failed stays in the snapshot: the next run sends them again. A nil base
// is empty (a first run).
func PromoteByRow(base, target io.Reader, undelivered []string, w io.Writer) error {
	b, t := newSnapshotReader(base), newSnapshotReader(target)
	if err := b.next(); err != nil {
		return fmt.Errorf("base snapshot: %w", err)
	}
	if err := t.next(); err != nil {
		return fmt.Errorf("target snapshot: %w", err)
	}
	bw := bufio.NewWriterSize(w, snapshotBuf)
	for b.ok || t.ok {
		// The email this step is about: the smaller of the two, both when equal.
		c := 0
		switch {
		case !b.ok:
			c = 1
		case !t.ok:
			c = -1
		default:
			c = bytes.Compare(b.email, t.email)
		}
		email := t.email
		if c < 0 {
			email = b.email
		}
		for len(undelivered) > 0 && undelivered[0] < string(email) {
			undelivered = undelivered[1:]
		}
		keep := len(undelivered) > 0 && undelivered[0] == string(email)
		var err error
		switch {
		case keep && c <= 0:
			err = writeSnapshotLine(bw, b.email, b.hash)
		case !keep && c >= 0:
			err = writeSnapshotLine(bw, t.email, t.hash)
		}
		if err != nil {
			return err
		}
		if c <= 0 {
			if err := b.next(); err != nil {
				return fmt.Errorf("base snapshot: %w", err)
			}
		}
		if c >= 0 {
			if err := t.next(); err != nil {
				return fmt.Errorf("target snapshot: %w", err)
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	return nil
}
