package plan

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// UnknownHash stands in a snapshot for a contact whose state at the
// destination is not known: its upsert or removal was sent (or may have
// been) without an answer saying it was applied. It matches no content,
// so the next plan sends the contact again if the file holds it, and takes
// it off the list (mirror) if it does not.
const UnknownHash = "unknown"

// PromoteByRow writes to w the snapshot a run leaves when not every contact
// of its plan was delivered: for each email in base or target (both
// snapshots, sorted), target's entry, except for the emails in kept (not
// applied: the destination refused them), which keep base's entry (or
// none, if base had none), and those in unknown (not known to be applied
// or not: failed, or in a batch that never settled), which get
// UnknownHash. kept and unknown are sorted, as the plan's batches list
// them, and disjoint. A nil base is empty (a first run).
func PromoteByRow(base, target io.Reader, kept, unknown []string, w io.Writer) error {
	b, t := newSnapshotReader(base), newSnapshotReader(target)
	if err := b.next(); err != nil {
		return fmt.Errorf("base snapshot: %w", err)
	}
	if err := t.next(); err != nil {
		return fmt.Errorf("target snapshot: %w", err)
	}
	bw := bufio.NewWriterSize(w, snapshotBuf)
	in := func(list *[]string, email []byte) bool {
		for len(*list) > 0 && (*list)[0] < string(email) {
			*list = (*list)[1:]
		}
		return len(*list) > 0 && (*list)[0] == string(email)
	}
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
		var err error
		switch {
		case in(&unknown, email):
			err = writeSnapshotLine(bw, email, []byte(UnknownHash))
		case in(&kept, email):
			if c <= 0 {
				err = writeSnapshotLine(bw, b.email, b.hash)
			}
		case c >= 0:
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
