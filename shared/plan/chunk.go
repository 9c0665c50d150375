package plan

import (
	"bufio"
	"bytes"
	"cmp"
	"container/heap"
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
//	uvarint len(email) | email | uvarint row | 16-byte hash | uvarint len(json) | profile JSON
//
// Length prefixes keep any byte in an email or profile harmless, and there
// is nothing to parse or escape on the way back.

const (
	spillWriteBuf = 256 << 10
	spillReadBuf  = 64 << 10 // per open chunk during the merge
)

// entry is one record inside a chunk; strings live in the chunk's arena so a
// chunk is two slices however many records it holds.
type entry struct {
	prefix   uint64 // first 8 bytes of the email, big-endian: most comparisons stop here
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
	last    bool // the final, partial chunk: kept in memory instead of spilled
}

func (c *chunk) reset() {
	c.arena = c.arena[:0]
	c.entries = c.entries[:0]
	c.last = false
}

func (c *chunk) email(e *entry) []byte {
	return c.arena[e.emailOff : e.emailOff+e.emailLen]
}

func (c *chunk) json(e *entry) []byte {
	return c.arena[e.jsonOff : e.jsonOff+e.jsonLen]
}

// add encodes r (hash and JSON) into the chunk.
func (c *chunk) add(enc *encoder, r *segment.Record) error {
	start := len(c.arena)
	keys := enc.sortedKeys(r.Profile.Custom)
	c.arena = append(c.arena, r.Profile.Email...)
	jsonOff := len(c.arena)
	var err error
	c.arena, err = appendJSON(c.arena, &r.Profile, keys)
	if err != nil {
		c.arena = c.arena[:start]
		return fmt.Errorf("row %d: encoding profile: %w", r.Row, err)
	}
	c.entries = append(c.entries, entry{
		prefix:   emailPrefix(r.Profile.Email),
		row:      r.Row,
		emailOff: uint32(start),
		emailLen: uint32(len(r.Profile.Email)),
		jsonOff:  uint32(jsonOff),
		jsonLen:  uint32(len(c.arena) - jsonOff),
		hash:     enc.hashKeys(&r.Profile, keys),
	})
	return nil
}

func emailPrefix[T string | []byte](email T) uint64 {
	var p [8]byte
	copy(p[:], email)
	return binary.BigEndian.Uint64(p[:])
}

// sort orders the chunk by (email, row): bytewise email order is the
// snapshot's order, and within an email the last row comes last.
func (c *chunk) sort() {
	slices.SortFunc(c.entries, func(a, b entry) int {
		if a.prefix != b.prefix {
			return cmp.Compare(a.prefix, b.prefix)
		}
		if d := bytes.Compare(c.email(&a), c.email(&b)); d != 0 {
			return d
		}
		return cmp.Compare(a.row, b.row)
	})
}

// spill writes the sorted chunk to a new temp file in dir and returns its path.
func (c *chunk) spill(dir string) (path string, err error) {
	f, err := os.CreateTemp(dir, "chunk-*.bin")
	if err != nil {
		return "", fmt.Errorf("creating spill file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing spill file: %w", cerr)
		}
	}()
	w := bufio.NewWriterSize(f, spillWriteBuf)
	var scratch [3*binary.MaxVarintLen64 + hashLen]byte
	for i := range c.entries {
		e := &c.entries[i]
		b := binary.AppendUvarint(scratch[:0], uint64(e.emailLen))
		if _, err := w.Write(b); err != nil {
			return "", fmt.Errorf("writing spill file: %w", err)
		}
		if _, err := w.Write(c.email(e)); err != nil {
			return "", fmt.Errorf("writing spill file: %w", err)
		}
		b = binary.AppendUvarint(scratch[:0], uint64(e.row))
		b = append(b, e.hash[:]...)
		b = binary.AppendUvarint(b, uint64(e.jsonLen))
		if _, err := w.Write(b); err != nil {
			return "", fmt.Errorf("writing spill file: %w", err)
		}
		if _, err := w.Write(c.json(e)); err != nil {
			return "", fmt.Errorf("writing spill file: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return "", fmt.Errorf("writing spill file: %w", err)
	}
	return f.Name(), nil
}

// record is the merge's view of one entry; its slices belong to whoever
// filled it and are valid until the next fill.
type record struct {
	prefix uint64
	email  []byte
	row    int
	hash   [hashLen]byte
	json   []byte
}

func (r *record) copyFrom(o *record) {
	r.prefix = o.prefix
	r.email = append(r.email[:0], o.email...)
	r.row = o.row
	r.hash = o.hash
	r.json = append(r.json[:0], o.json...)
}

func compareRecords(a, b *record) int {
	if a.prefix != b.prefix {
		return cmp.Compare(a.prefix, b.prefix)
	}
	if d := bytes.Compare(a.email, b.email); d != 0 {
		return d
	}
	return cmp.Compare(a.row, b.row)
}

// run is one sorted input of the merge: a spill file or the in-memory last chunk.
type run struct {
	rec  record
	f    *os.File
	br   *bufio.Reader
	mem  *chunk
	next int // index into mem.entries
}

func openRun(path string) (*run, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening spill file: %w", err)
	}
	return &run{f: f, br: bufio.NewReaderSize(f, spillReadBuf)}, nil
}

// advance loads the run's next record; false at the end.
func (r *run) advance() (bool, error) {
	if r.mem != nil {
		if r.next >= len(r.mem.entries) {
			return false, nil
		}
		e := &r.mem.entries[r.next]
		r.next++
		r.rec = record{prefix: e.prefix, email: r.mem.email(e), row: e.row, hash: e.hash, json: r.mem.json(e)}
		return true, nil
	}
	n, err := binary.ReadUvarint(r.br)
	if err == io.EOF {
		return false, nil
	}
	if err == nil {
		r.rec.email, err = readN(r.br, r.rec.email, n)
	}
	var row uint64
	if err == nil {
		row, err = binary.ReadUvarint(r.br)
	}
	if err == nil {
		_, err = io.ReadFull(r.br, r.rec.hash[:])
	}
	if err == nil {
		n, err = binary.ReadUvarint(r.br)
	}
	if err == nil {
		r.rec.json, err = readN(r.br, r.rec.json, n)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return false, fmt.Errorf("reading spill file: %w", err)
	}
	r.rec.row = int(row)
	r.rec.prefix = emailPrefix(r.rec.email)
	return true, nil
}

func readN(br *bufio.Reader, buf []byte, n uint64) ([]byte, error) {
	if n > 1<<31 {
		return buf, fmt.Errorf("record length %d out of range", n)
	}
	buf = slices.Grow(buf[:0], int(n))[:n]
	_, err := io.ReadFull(br, buf)
	return buf, err
}

func (r *run) close() error {
	if r.f == nil {
		return nil
	}
	return r.f.Close()
}

// runHeap orders runs by their current record; container/heap keeps the
// merge at O(log k) per record.
type runHeap []*run

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return compareRecords(&h[i].rec, &h[j].rec) < 0 }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)        { *h = append(*h, x.(*run)) }
func (h *runHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// spilled is everything phase one produced: sorted spill files plus the
// last chunk, sorted but kept in memory.
type spilled struct {
	files []string
	mem   *chunk
}

// mergeUnique k-way merges the runs and calls fn once per email, in email
// order, with that email's last row. It returns how many rows lost to a later
// row of the same email.
func (s *spilled) mergeUnique(ctx context.Context, fn func(*record) error) (dups int, err error) {
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
	heap.Init(&h)

	var pending record
	have := false
	for n := 0; len(h) > 0; n++ {
		if n&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return dups, err
			}
		}
		top := h[0]
		if have {
			if bytes.Equal(pending.email, top.rec.email) {
				dups++
			} else if err := fn(&pending); err != nil {
				return dups, err
			}
		}
		pending.copyFrom(&top.rec)
		have = true
		ok, err := top.advance()
		if err != nil {
			return dups, err
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	if have {
		if err := fn(&pending); err != nil {
			return dups, err
		}
	}
	return dups, nil
}
