package plan

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
)

// batchWorkers write batch files in parallel: a first run writes one file
// per 100 profiles, and creating files is latency-bound, not CPU-bound.
const batchWorkers = 2

// batchWriter assembles batch files as JSON text (the merge already holds
// every profile's JSON) and writes them on worker goroutines.
type batchWriter struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	outDir string
	size   int

	seq      int
	buf      []byte
	upserts  int
	removals int

	jobs chan batchJob
	free chan []byte
	wg   sync.WaitGroup
	mu   sync.Mutex
	refs []BatchRef
}

type batchJob struct {
	ref BatchRef
	buf []byte
}

func newBatchWriter(ctx context.Context, outDir string, size int) *batchWriter {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &batchWriter{
		ctx:    ctx,
		cancel: cancel,
		outDir: outDir,
		size:   size,
		jobs:   make(chan batchJob, 2*batchWorkers),
		free:   make(chan []byte, 3*batchWorkers),
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

// addUpsert appends one upsert; profileJSON is the profile encoded by appendJSON.
func (w *batchWriter) addUpsert(row int, hashHex, profileJSON []byte) error {
	if w.removals > 0 {
		if err := w.flush(); err != nil {
			return err
		}
	}
	if w.upserts == 0 {
		w.start(`,"upserts":[`)
	} else {
		w.buf = append(w.buf, ',')
	}
	w.buf = append(w.buf, `{"row":`...)
	w.buf = strconv.AppendInt(w.buf, int64(row), 10)
	w.buf = append(w.buf, `,"hash":"`...)
	w.buf = append(w.buf, hashHex...)
	w.buf = append(w.buf, `","profile":`...)
	w.buf = append(w.buf, profileJSON...)
	w.buf = append(w.buf, '}')
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
	if w.removals == 0 {
		w.start(`,"removals":[`)
	} else {
		w.buf = append(w.buf, ',')
	}
	w.buf = appendJSONString(w.buf, email)
	w.removals++
	if w.removals >= w.size {
		return w.flush()
	}
	return nil
}

func (w *batchWriter) start(field string) {
	w.seq++
	select {
	case w.buf = <-w.free:
	default:
		w.buf = nil
	}
	w.buf = append(w.buf[:0], `{"seq":`...)
	w.buf = strconv.AppendInt(w.buf, int64(w.seq), 10)
	w.buf = append(w.buf, field...)
}

// flush hands the open batch, if any, to a worker.
func (w *batchWriter) flush() error {
	if w.upserts == 0 && w.removals == 0 {
		return nil
	}
	w.buf = append(w.buf, "]}\n"...)
	job := batchJob{ref: BatchRef{Seq: w.seq, File: batchFile(w.seq), Upserts: w.upserts, Removals: w.removals}, buf: w.buf}
	w.buf, w.upserts, w.removals = nil, 0, 0
	select {
	case w.jobs <- job:
		return nil
	case <-w.ctx.Done():
		return context.Cause(w.ctx)
	}
}

func (w *batchWriter) work() {
	defer w.wg.Done()
	for job := range w.jobs {
		if w.ctx.Err() != nil {
			continue
		}
		path := filepath.Join(w.outDir, filepath.FromSlash(job.ref.File))
		if err := os.WriteFile(path, job.buf, 0o600); err != nil {
			w.cancel(fmt.Errorf("writing batch %d: %w", job.ref.Seq, err))
			continue
		}
		sum := sha256.Sum256(job.buf)
		job.ref.SHA256 = hex.EncodeToString(sum[:])
		w.mu.Lock()
		w.refs = append(w.refs, job.ref)
		w.mu.Unlock()
		select {
		case w.free <- job.buf:
		default:
		}
	}
}

// close flushes the open batch, waits for the workers and returns the
// written batches in sequence order.
func (w *batchWriter) close() ([]BatchRef, error) {
	err := w.flush()
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
// equals the hash it was planned with.
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
