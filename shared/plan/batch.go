package plan

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
)

// batchWorkers write batch files in parallel: a first run writes one file
// per 100 profiles, and creating files is latency-bound, not CPU-bound.
const batchWorkers = 2

// groupBytes is how much batch JSON is handed to a worker at once: one
// hand-off per file would cost more in goroutine wake-ups than the file.
const groupBytes = 256 << 10

// batchWriter assembles batch files as JSON text (the merge already holds
// every profile's JSON) and writes them on worker goroutines, a group of
// files at a time.
type batchWriter struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	outDir string
	size   int

	seq      int
	group    *batchGroup // batches being assembled; the open one last
	start    int         // offset of the open batch in group.buf
	upserts  int
	removals int

	jobs chan *batchGroup
	free chan *batchGroup
	wg   sync.WaitGroup
	mu   sync.Mutex
	refs []BatchRef
}

// batchGroup is consecutive batch files in one buffer: batch i is
// buf[ends[i-1]:ends[i]].
type batchGroup struct {
	buf  []byte
	refs []BatchRef
	ends []int
}

func newBatchWriter(ctx context.Context, outDir string, size int) *batchWriter {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &batchWriter{
		ctx:    ctx,
		cancel: cancel,
		outDir: outDir,
		size:   size,
		group:  &batchGroup{},
		jobs:   make(chan *batchGroup, 2*batchWorkers),
		free:   make(chan *batchGroup, 3*batchWorkers),
	}
	w.wg.Add(batchWorkers)
	for range batchWorkers {
		go w.work()
	}
	return w
}

func batchFile(seq int) string {
	return fmt.Sprintf("batches/%06d.json", seq)
}

// addUpsert appends one upsert; jsonRest is the profile's JSON after the
// email, as appendJSONRest wrote it.
func (w *batchWriter) addUpsert(row int, email, jsonRest []byte) error {
	if w.removals > 0 {
		if err := w.flush(); err != nil {
			return err
		}
	}
	b := w.group.buf
	if w.upserts == 0 {
		b = w.begin(b, `,"upserts":[`)
	} else {
		b = append(b, ',')
	}
	b = append(b, `{"row":`...)
	b = strconv.AppendInt(b, int64(row), 10)
	b = append(b, `,"profile":`...)
	b = appendJSONEmail(b, email)
	b = append(b, jsonRest...)
	b = append(b, '}')
	w.group.buf = b
	w.upserts++
	if w.upserts >= w.size {
		return w.flush()
	}
	return nil
}

// addRemoval appends one email to take off the list; a batch holds upserts
// or removals, never both.
func (w *batchWriter) addRemoval(email string) error {
	if w.upserts > 0 {
		if err := w.flush(); err != nil {
			return err
		}
	}
	b := w.group.buf
	if w.removals == 0 {
		b = w.begin(b, `,"removals":[`)
	} else {
		b = append(b, ',')
	}
	w.group.buf = appendJSONString(b, email)
	w.removals++
	if w.removals >= w.size {
		return w.flush()
	}
	return nil
}

// begin opens the next batch at the end of b.
func (w *batchWriter) begin(b []byte, field string) []byte {
	w.seq++
	w.start = len(b)
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, int64(w.seq), 10)
	return append(b, field...)
}

// flush closes the open batch, if any, and hands the group to a worker
// once it is large enough.
func (w *batchWriter) flush() error {
	if w.upserts == 0 && w.removals == 0 {
		return nil
	}
	g := w.group
	g.buf = append(g.buf, "]}\n"...)
	g.refs = append(g.refs, BatchRef{Seq: w.seq, File: batchFile(w.seq), Upserts: w.upserts, Removals: w.removals})
	g.ends = append(g.ends, len(g.buf))
	w.upserts, w.removals = 0, 0
	if len(g.buf) < groupBytes {
		return nil
	}
	return w.send()
}

// send hands the group of closed batches to a worker.
func (w *batchWriter) send() error {
	g := w.group
	if len(g.refs) == 0 {
		return nil
	}
	select {
	case w.group = <-w.free:
		w.group.buf, w.group.refs, w.group.ends = w.group.buf[:0], w.group.refs[:0], w.group.ends[:0]
	default:
		w.group = &batchGroup{}
	}
	select {
	case w.jobs <- g:
		return nil
	case <-w.ctx.Done():
		return context.Cause(w.ctx)
	}
}

func (w *batchWriter) work() {
	defer w.wg.Done()
	for g := range w.jobs {
		if w.ctx.Err() != nil {
			continue
		}
		start := 0
		for i := range g.refs {
			ref := &g.refs[i]
			data := g.buf[start:g.ends[i]]
			start = g.ends[i]
			path := filepath.Join(w.outDir, filepath.FromSlash(ref.File))
			if err := writeFile(path, data); err != nil {
				w.cancel(fmt.Errorf("writing batch %d: %w", ref.Seq, err))
				break
			}
			ref.CRC32C = CRC32C(data)
		}
		if w.ctx.Err() != nil {
			continue
		}
		w.mu.Lock()
		w.refs = append(w.refs, g.refs...)
		w.mu.Unlock()
		select {
		case w.free <- g:
		default:
		}
	}
}

// close flushes the open batch, waits for the workers and returns the
// written batches in sequence order.
func (w *batchWriter) close() ([]BatchRef, error) {
	err := w.flush()
	if err == nil {
		err = w.send()
	}
	close(w.jobs)
	w.wg.Wait()
	if err == nil && w.ctx.Err() != nil {
		err = context.Cause(w.ctx)
	}
	w.cancel(nil)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(w.refs, func(a, b BatchRef) int { return a.Seq - b.Seq })
	return w.refs, nil
}

// abort stops the workers without writing the open batch.
func (w *batchWriter) abort() {
	w.cancel(context.Canceled)
	close(w.jobs)
	w.wg.Wait()
}

// ReadBatch decodes a batch file. Numbers are kept as json.Number so custom
// values reach the API exactly as planned, and Hash of a decoded profile
// equals the hash the snapshot holds for it.
func ReadBatch(r io.Reader) (*Batch, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	var b Batch
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("decoding batch: %w", err)
	}
	switch _, err := dec.Token(); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, fmt.Errorf("decoding batch %d: %w", b.Seq, err)
	default:
		return nil, fmt.Errorf("decoding batch %d: unexpected data after the batch", b.Seq)
	}
	if b.Seq < 1 {
		return nil, fmt.Errorf("decoding batch: seq %d, want >= 1", b.Seq)
	}
	return &b, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C is a batch file's checksum as the manifest and the Map items carry
// it: base64 of the big-endian CRC-32C, the form S3 reports as
// x-amz-checksum-crc32c. CRC-32C is S3's own integrity check and runs in
// hardware; the batches are planned for tens of thousands of files, where
// a sha256 of every byte cost the planner 7 %.
func CRC32C(data []byte) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc32.Checksum(data, castagnoli))
	return base64.StdEncoding.EncodeToString(b[:])
}
