package plan

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// A snapshot is text, one line per contact, "email\thash\n", sorted by email
// bytewise with no repeats, so it can be merge-joined as a stream.

const snapshotBuf = 1 << 20

// snapshotReader streams and checks a snapshot. A nil io.Reader is an empty
// snapshot (first run).
type snapshotReader struct {
	br    *bufio.Reader
	line  int
	ok    bool // email/hash hold the current entry
	raw   []byte
	email []byte
	hash  []byte
	prev  []byte
}

func newSnapshotReader(r io.Reader) *snapshotReader {
	s := &snapshotReader{}
	if r != nil {
		s.br = bufio.NewReaderSize(r, snapshotBuf)
	}
	return s
}

// next loads the following entry; s.ok is false at the end.
func (s *snapshotReader) next() error {
	s.ok = false
	if s.br == nil {
		return nil
	}
	s.prev, s.email = s.email, s.prev // keep the last email for the order check
	var err error
	s.raw, err = readLine(s.br, s.raw[:0])
	if err == io.EOF && len(s.raw) == 0 {
		s.br = nil
		return nil
	}
	if err != nil && err != io.EOF {
		return fmt.Errorf("reading snapshot: %w", err)
	}
	s.line++
	tab := bytes.IndexByte(s.raw, '\t')
	if tab <= 0 || tab == len(s.raw)-1 || bytes.IndexByte(s.raw[tab+1:], '\t') >= 0 {
		return fmt.Errorf("snapshot line %d: want \"email<TAB>hash\"", s.line)
	}
	s.email = append(s.email[:0], s.raw[:tab]...)
	s.hash = append(s.hash[:0], s.raw[tab+1:]...)
	if s.line > 1 && bytes.Compare(s.prev, s.email) >= 0 {
		return fmt.Errorf("snapshot line %d: not sorted by email (or a repeat)", s.line)
	}
	s.ok = true
	return nil
}

// readLine appends the next line without its "\n" (and a "\r" before it) to
// buf. It returns io.EOF with whatever the last, unterminated line held.
func readLine(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		part, err := br.ReadSlice('\n')
		buf = append(buf, part...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if n := len(buf); n > 0 && buf[n-1] == '\n' {
			buf = buf[:n-1]
			if n := len(buf); n > 0 && buf[n-1] == '\r' {
				buf = buf[:n-1]
			}
		}
		return buf, err
	}
}

// FilterSnapshot copies a snapshot from r to w, leaving out the entries whose
// email drop reports true (for example contacts the API rejected, so the next
// run retries them). It checks the format as it goes.
func FilterSnapshot(r io.Reader, w io.Writer, drop func(email string) bool) error {
	s := newSnapshotReader(r)
	bw := bufio.NewWriterSize(w, snapshotBuf)
	for {
		if err := s.next(); err != nil {
			return err
		}
		if !s.ok {
			break
		}
		if drop(string(s.email)) {
			continue
		}
		if err := writeSnapshotLine(bw, s.email, s.hash); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	return nil
}

// SnapshotLen counts a snapshot's entries, checking its format.
func SnapshotLen(r io.Reader) (int, error) {
	s := newSnapshotReader(r)
	n := 0
	for {
		if err := s.next(); err != nil {
			return n, err
		}
		if !s.ok {
			return n, nil
		}
		n++
	}
}

func writeSnapshotLine(w *bufio.Writer, email, hash []byte) error {
	// One Write, through the writer's own spare room when the line fits.
	line := w.AvailableBuffer()
	line = append(line, email...)
	line = append(line, '\t')
	line = append(line, hash...)
	line = append(line, '\n')
	if _, err := w.Write(line); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	return nil
}
