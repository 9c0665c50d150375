package plan

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/segpilot/segpilot/shared/segment"
)

// Spill files hold one record after another, without separators:
//
//	uvarint len(email) | email | uvarint row | 16-byte hash | uvarint len(json) | profile JSON after the email
//
// Length prefixes keep any byte in an email or profile harmless, and there
// is nothing to parse or escape on the way back.

const (
	spillWriteBuf = 256 << 10
	spillReadBuf  = 128 << 10 // per open chunk during the merge
)

// entry is one record inside a chunk; strings live in the chunk's arena so a
// chunk is a few slices however many records it holds.
type entry struct {
	row      int
	emailOff uint32
	emailLen uint32
	jsonOff  uint32
	jsonLen  uint32
	hash     [hashLen]byte
}

type chunk struct {
	arena   []byte
	entries []entry
	keys    []sortKey // one per entry, in entry order until sort
	scratch []sortKey // for the radix sort
	sorted  []sortKey // keys or scratch, in (email, row) order after sort
	last    bool      // the final, partial chunk: kept in memory instead of spilled
}

// sortKey is what the sort moves around: the email's key and its entry.
type sortKey struct {
	key emailKey
	idx uint32
}

func (c *chunk) reset() {
	c.arena = c.arena[:0]
	c.entries = c.entries[:0]
	c.keys = c.keys[:0]
	c.sorted = nil
	c.last = false
}

func (c *chunk) email(e *entry) []byte {
	return c.arena[e.emailOff : e.emailOff+e.emailLen]
}

func (c *chunk) json(e *entry) []byte {
	return c.arena[e.jsonOff : e.jsonOff+e.jsonLen]
}

// add encodes r (hash and JSON) into the chunk. The JSON is kept without
// its start (see appendJSONEmail).
func (c *chunk) add(enc *encoder, r *segment.Record) error {
	c.reserve()
	start := len(c.arena)
	custom := enc.sortedCustom(r.Profile.Custom)
	c.arena = append(c.arena, r.Profile.Email...)
	jsonOff := len(c.arena)
	var err error
	c.arena, err = appendJSONRest(c.arena, &r.Profile, custom)
	if err != nil {
		c.arena = c.arena[:start]
		return fmt.Errorf("row %d: encoding profile: %w", r.Row, err)
	}
	c.keys = append(c.keys, sortKey{key: emailPrefix(r.Profile.Email), idx: uint32(len(c.entries))})
	c.entries = append(c.entries, entry{
		row:      r.Row,
		emailOff: uint32(start),
		emailLen: uint32(len(r.Profile.Email)),
		jsonOff:  uint32(jsonOff),
		jsonLen:  uint32(len(c.arena) - jsonOff),
		hash:     enc.hashCustom(&r.Profile, custom),
	})
	return nil
}

// reserve doubles the chunk's buffers ahead of need: append alone grows
// large slices by a quarter at a time, which would allocate and copy a
// chunk's arena five times over while it fills.
func (c *chunk) reserve() {
	const arenaSlack = 4 << 10 // more than most records take
	if cap(c.arena)-len(c.arena) < arenaSlack {
		// A chunk is handed off once its arena holds chunkBytes.
		want := max(min(2*cap(c.arena), chunkBytes+arenaSlack), len(c.arena)+arenaSlack, 64<<10)
		c.arena = slices.Grow(c.arena, want-len(c.arena))
	}
	if len(c.entries) == cap(c.entries) {
		c.entries = slices.Grow(c.entries, max(cap(c.entries), 1024))
		c.keys = slices.Grow(c.keys, cap(c.entries)-len(c.keys))
	}
}

// emailKey is an email's first 16 bytes as two big-endian words, zero
// padded: comparing keys orders as bytes.Compare does, except that a tie
// needs the full emails. Many emails share 8 bytes ("customer..."), few 16.
type emailKey struct{ hi, lo uint64 }

func emailPrefix[T string | []byte](email T) emailKey {
	var p [16]byte
	copy(p[:], email)
	return emailKey{binary.BigEndian.Uint64(p[:8]), binary.BigEndian.Uint64(p[8:])}
}

func (k emailKey) compare(o emailKey) int {
	if k.hi != o.hi {
		return cmp.Compare(k.hi, o.hi)
	}
	return cmp.Compare(k.lo, o.lo)
}

// sort orders the chunk by email, then row descending: bytewise email
// order is the snapshot's order, and within an email the winning (last)
// row comes first, so the merge knows it before the duplicates it beats. A radix
// sort on the 16-byte keys does nearly all the work; only runs of equal keys
// need their emails compared.
func (c *chunk) sort() {
	c.scratch = slices.Grow(c.scratch[:0], len(c.keys))[:len(c.keys)]
	c.sorted = radixSort(c.keys, c.scratch)
	for i := 0; i < len(c.sorted); {
		j := i + 1
		for j < len(c.sorted) && c.sorted[j].key == c.sorted[i].key {
			j++
		}
		if j-i > 1 {
			slices.SortFunc(c.sorted[i:j], func(a, b sortKey) int {
				ea, eb := &c.entries[a.idx], &c.entries[b.idx]
				if d := bytes.Compare(c.email(ea), c.email(eb)); d != 0 {
					return d
				}
				return cmp.Compare(eb.row, ea.row)
			})
		}
		i = j
	}
}

// radixSort sorts keys by key (LSD, a byte at a time, skipping bytes all
// keys share) using scratch, of the same length; it returns whichever of
// the two holds the result.
func radixSort(keys, scratch []sortKey) []sortKey {
	if len(keys) < 2 {
		return keys
	}
	var counts [16][256]uint32
	for i := range keys {
		k := &keys[i].key
		for b := range 8 {
			counts[b][byte(k.lo>>(8*b))]++
			counts[8+b][byte(k.hi>>(8*b))]++
		}
	}
	src, dst := keys, scratch
	for d := range 16 {
		c := &counts[d]
		if c[keyByte(&src[0].key, d)] == uint32(len(src)) {
			continue // every key has this byte
		}
		var sum uint32
		for i, n := range c {
			c[i] = sum
			sum += n
		}
		for i := range src {
			v := keyByte(&src[i].key, d)
			dst[c[v]] = src[i]
			c[v]++
		}
		src, dst = dst, src
	}
	return src
}

// keyByte is byte d of k counted from the least significant end.
func keyByte(k *emailKey, d int) byte {
	if d < 8 {
		return byte(k.lo >> (8 * d))
	}
	return byte(k.hi >> (8 * (d - 8)))
}

// spill writes the sorted chunk to a new temp file in dir and returns its path.
func (c *chunk) spill(dir string) (string, error) {
	return writeSpillFile(dir, "chunk-*.bin", func(w *bufio.Writer) error {
		for _, k := range c.sorted {
			e := &c.entries[k.idx]
			if err := writeSpillRecord(w, c.email(e), e.row, &e.hash, c.json(e)); err != nil {
				return err
			}
		}
		return nil
	})
}

// writeSpillFile creates a temp file in dir, lets write fill it through a
// buffer, and returns its path once flushed and closed.
func writeSpillFile(dir, pattern string, write func(*bufio.Writer) error) (path string, err error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", fmt.Errorf("creating spill file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing spill file: %w", cerr)
		}
	}()
	w := bufio.NewWriterSize(f, spillWriteBuf)
	if err := write(w); err != nil {
		return "", err
	}
	if err := w.Flush(); err != nil {
		return "", fmt.Errorf("writing spill file: %w", err)
	}
	return f.Name(), nil
}

// writeSpillRecord appends one record in the spill file format.
func writeSpillRecord(w *bufio.Writer, email []byte, row int, hash *[hashLen]byte, json []byte) error {
	var scratch [3*binary.MaxVarintLen64 + hashLen]byte
	b := binary.AppendUvarint(scratch[:0], uint64(len(email)))
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("writing spill file: %w", err)
	}
	if _, err := w.Write(email); err != nil {
		return fmt.Errorf("writing spill file: %w", err)
	}
	b = binary.AppendUvarint(scratch[:0], uint64(row))
	b = append(b, hash[:]...)
	b = binary.AppendUvarint(b, uint64(len(json)))
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("writing spill file: %w", err)
	}
	if _, err := w.Write(json); err != nil {
		return fmt.Errorf("writing spill file: %w", err)
	}
	return nil
}

// record is the merge's view of one entry; its slices belong to whoever
// filled it and are valid until the next fill.
type record struct {
	prefix emailKey
	email  []byte
	row    int
	hash   [hashLen]byte
	json   []byte // the profile's JSON after the email: see appendJSONEmail
}

func compareRecords(a, b *record) int {
	if d := a.prefix.compare(b.prefix); d != 0 {
		return d
	}
	if d := bytes.Compare(a.email, b.email); d != 0 {
		return d
	}
	return cmp.Compare(b.row, a.row) // the last row first: see chunk.sort
}

// run is one sorted input of the merge: a spill file or the in-memory last chunk.
type run struct {
	rec   record
	f     *os.File
	buf   []byte // spill file bytes read but not yet decoded: buf[pos:]
	spare []byte // the buffer before buf: the previous record still points into it
	pos   int
	eof   bool
	mem   *chunk
	next  int // index into mem.sorted
}

func openRun(path string) (*run, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening spill file: %w", err)
	}
	return &run{f: f, buf: make([]byte, 0, spillReadBuf), spare: make([]byte, 0, spillReadBuf)}, nil
}

// advance loads the run's next record; false at the end. A spill record is
// decoded in place: rec's slices stay valid until the second advance after
// it, so the merge need not copy the record it holds back.
func (r *run) advance() (bool, error) {
	if r.mem != nil {
		if r.next >= len(r.mem.sorted) {
			return false, nil
		}
		k := r.mem.sorted[r.next]
		e := &r.mem.entries[k.idx]
		r.next++
		r.rec = record{prefix: k.key, email: r.mem.email(e), row: e.row, hash: e.hash, json: r.mem.json(e)}
		return true, nil
	}
	for {
		n, err := r.decode(r.buf[r.pos:])
		if err != nil {
			return false, fmt.Errorf("reading spill file: %w", err)
		}
		if n > 0 {
			r.pos += n
			return true, nil
		}
		if r.eof {
			if r.pos < len(r.buf) {
				return false, fmt.Errorf("reading spill file: %w", io.ErrUnexpectedEOF)
			}
			return false, nil
		}
		if err := r.fill(); err != nil {
			return false, err
		}
	}
}

// decode reads one record from the front of b into r.rec and returns its
// length, or 0 when b does not hold a whole record.
func (r *run) decode(b []byte) (int, error) {
	emailLen, i := binary.Uvarint(b)
	if i <= 0 {
		return 0, varintError(i)
	}
	if emailLen > 1<<31 {
		return 0, fmt.Errorf("record length %d out of range", emailLen)
	}
	emailEnd := i + int(emailLen)
	if emailEnd > len(b) {
		return 0, nil
	}
	row, j := binary.Uvarint(b[emailEnd:])
	if j <= 0 {
		return 0, varintError(j)
	}
	hashEnd := emailEnd + j + hashLen
	if hashEnd > len(b) {
		return 0, nil
	}
	jsonLen, k := binary.Uvarint(b[hashEnd:])
	if k <= 0 {
		return 0, varintError(k)
	}
	if jsonLen > 1<<31 {
		return 0, fmt.Errorf("record length %d out of range", jsonLen)
	}
	end := hashEnd + k + int(jsonLen)
	if end > len(b) {
		return 0, nil
	}
	r.rec.email = b[i:emailEnd]
	r.rec.prefix = emailPrefix(r.rec.email)
	r.rec.row = int(row)
	copy(r.rec.hash[:], b[hashEnd-hashLen:hashEnd])
	r.rec.json = b[hashEnd+k : end]
	return end, nil
}

// varintError tells a varint cut short by the buffer's end (nil: read more)
// from a malformed one.
func varintError(n int) error {
	if n == 0 {
		return nil
	}
	return errors.New("malformed record length")
}

// fill moves the undecoded bytes to the front of the spare buffer, which
// becomes buf, and reads more, growing it when one record does not fit.
func (r *run) fill() error {
	next := slices.Grow(r.spare[:0], len(r.buf)-r.pos)
	next = append(next, r.buf[r.pos:]...)
	rest := len(next)
	r.buf, r.spare, r.pos = next, r.buf, 0
	if rest == cap(r.buf) {
		r.buf = slices.Grow(r.buf, cap(r.buf))
	}
	n, err := io.ReadAtLeast(r.f, r.buf[rest:cap(r.buf)], 1)
	r.buf = r.buf[:rest+n]
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		r.eof = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading spill file: %w", err)
	}
	return nil
}

func (r *run) close() error {
	if r.f == nil {
		return nil
	}
	return r.f.Close()
}

// runHeap is a binary min-heap of runs by their current record, written
// out rather than through container/heap: the merge calls it per record.
type runHeap []*run

func (h runHeap) less(i, j int) bool { return compareRecords(&h[i].rec, &h[j].rec) < 0 }

// down restores the heap below i.
func (h runHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// spilled is everything phase one produced: sorted spill files plus the
// last chunk, sorted but kept in memory.
type spilled struct {
	files []string
	mem   *chunk
}

// maxRuns bounds how many runs a merge reads at once: each open spill file
// takes a file descriptor and two read buffers.
const maxRuns = 128

// reduce merges spill files fanIn at a time into larger ones until the
// final merge has at most fanIn runs, which only inputs of millions of rows
// need. Every record is kept: the final merge resolves duplicates.
func (s *spilled) reduce(ctx context.Context, dir string, fanIn int) error {
	for len(s.files)+1 > fanIn { // +1: the in-memory chunk is a run too
		n := min(fanIn, len(s.files))
		path, err := mergeFiles(ctx, dir, s.files[:n])
		if err != nil {
			return err
		}
		s.files = append(s.files[n:], path)
	}
	return nil
}

// mergeFiles merges sorted spill files into a new one and removes them.
func mergeFiles(ctx context.Context, dir string, paths []string) (path string, err error) {
	h := make(runHeap, 0, len(paths))
	defer func() {
		for _, r := range h {
			if cerr := r.close(); cerr != nil && err == nil {
				err = fmt.Errorf("closing spill file: %w", cerr)
			}
		}
	}()
	for _, p := range paths {
		r, err := openRun(p)
		if err != nil {
			return "", err
		}
		h = append(h, r)
	}
	runs := h[:0:0]
	for _, r := range h {
		ok, err := r.advance()
		if err != nil {
			return "", err
		}
		if ok {
			runs = append(runs, r)
		}
	}
	merged, err := writeSpillFile(dir, "merged-*.bin", func(w *bufio.Writer) error {
		for i := len(runs)/2 - 1; i >= 0; i-- {
			runs.down(i)
		}
		for n := 0; len(runs) > 0; n++ {
			if n&4095 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			top := runs[0]
			if err := writeSpillRecord(w, top.rec.email, top.rec.row, &top.rec.hash, top.rec.json); err != nil {
				return err
			}
			ok, err := top.advance()
			if err != nil {
				return err
			}
			if !ok {
				runs[0] = runs[len(runs)-1]
				runs = runs[:len(runs)-1]
			}
			runs.down(0)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	for _, r := range h { // before removing: some systems cannot remove open files
		if err := r.close(); err != nil {
			return "", fmt.Errorf("closing spill file: %w", err)
		}
	}
	h = nil
	for _, p := range paths {
		if err := os.Remove(p); err != nil {
			return "", fmt.Errorf("removing spill file: %w", err)
		}
	}
	return merged, nil
}

// mergeUnique k-way merges the runs and calls fn once per email, in email
// order, with that email's last row, then dup (when not nil) for each other
// row of that email with the winning row's number. It returns how many rows
// lost to a later row of the same email. A record passed to fn or dup is
// valid only during the call.
func (s *spilled) mergeUnique(ctx context.Context, fn func(*record) error, dup func(r *record, winner int) error) (dups int, err error) {
	runs := make([]*run, 0, len(s.files)+1)
	defer func() {
		for _, r := range runs {
			if cerr := r.close(); cerr != nil && err == nil {
				err = fmt.Errorf("closing spill file: %w", cerr)
			}
		}
	}()
	for _, path := range s.files {
		r, err := openRun(path)
		if err != nil {
			return 0, err
		}
		runs = append(runs, r)
	}
	if s.mem != nil {
		runs = append(runs, &run{mem: s.mem})
	}
	h := make(runHeap, 0, len(runs))
	for _, r := range runs {
		ok, err := r.advance()
		if err != nil {
			return 0, err
		}
		if ok {
			h = append(h, r)
		}
	}
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}

	// The winner's email is copied: the run it came from may advance twice
	// while its duplicates go by.
	var email []byte
	winner, have := 0, false
	for n := 0; len(h) > 0; n++ {
		if n&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return dups, err
			}
		}
		top := h[0]
		if have && bytes.Equal(email, top.rec.email) {
			dups++
			if dup != nil {
				if err := dup(&top.rec, winner); err != nil {
					return dups, err
				}
			}
		} else {
			if err := fn(&top.rec); err != nil {
				return dups, err
			}
			email = append(email[:0], top.rec.email...)
			winner, have = top.rec.row, true
		}
		ok, err := top.advance()
		if err != nil {
			return dups, err
		}
		if !ok {
			h[0] = h[len(h)-1]
			h = h[:len(h)-1]
		}
		h.down(0)
	}
	return dups, nil
}
