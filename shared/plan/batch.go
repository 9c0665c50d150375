package plan

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
)

// handOff is how much batch JSON is handed to the background writer at
// once: one hand-off per batch would cost more in goroutine wake-ups than
// the batch.
const handOff = 256 << 10

// batchWriter assembles the batches as JSON text (the merge already holds
// every profile's JSON), one line of batches.jsonl each, and indexes them:
// each batch's byte range, CRC-32C and counts.
type batchWriter struct {
	out  *backgroundWriter
	size int

	seq      int
	buf      []byte // closed batches not yet handed off, then the open one
	start    int    // offset of the open batch in buf
	written  int64  // bytes handed off before buf
	upserts  int
	removals int
	refs     []BatchRef
}

func newBatchWriter(w io.Writer, size int) *batchWriter {
	return &batchWriter{out: newBackgroundWriter(w, handOff+maxBatchLine), size: size}
}

// maxBatchLine is room for the batch that crosses handOff: 100 profiles
// of a few KB each.
const maxBatchLine = 1 << 20

// addUpsert appends one upsert; jsonRest is the profile's JSON after the
// email, as appendJSONRest wrote it.
func (w *batchWriter) addUpsert(row int, email, jsonRest []byte) {
	if w.removals > 0 {
		w.flush()
	}
	b := w.buf
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
	w.buf = b
	w.upserts++
	if w.upserts >= w.size {
		w.flush()
	}
}

// addRemoval appends one email to take off the list; a batch holds upserts
// or removals, never both.
func (w *batchWriter) addRemoval(email string) {
	if w.upserts > 0 {
		w.flush()
	}
	b := w.buf
	if w.removals == 0 {
		b = w.begin(b, `,"removals":[`)
	} else {
		b = append(b, ',')
	}
	w.buf = appendJSONString(b, email)
	w.removals++
	if w.removals >= w.size {
		w.flush()
	}
}

// begin opens the next batch at the end of b.
func (w *batchWriter) begin(b []byte, field string) []byte {
	w.seq++
	w.start = len(b)
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, int64(w.seq), 10)
	return append(b, field...)
}

// flush closes the open batch, if any, indexes it, and hands the closed
// batches to the background writer once they are enough.
func (w *batchWriter) flush() {
	if w.upserts == 0 && w.removals == 0 {
		return
	}
	w.buf = append(w.buf, "]}\n"...)
	line := w.buf[w.start:]
	w.refs = append(w.refs, BatchRef{Seq: w.seq, Offset: w.written + int64(w.start), Length: int64(len(line)),
		Upserts: w.upserts, Removals: w.removals, CRC32C: CRC32C(line)})
	w.upserts, w.removals = 0, 0
	w.start = len(w.buf)
	if len(w.buf) >= handOff {
		w.handOff()
	}
}

func (w *batchWriter) handOff() {
	if len(w.buf) == 0 {
		return
	}
	if _, err := w.out.Write(w.buf); err != nil {
		return // the background writer keeps the first error for close
	}
	w.written += int64(len(w.buf))
	w.buf, w.start = w.buf[:0], 0
}

// close writes the open batch and everything not yet written, and returns
// the index of the batches, in sequence order. It must be called, also
// after an error, to stop the background writer.
func (w *batchWriter) close() ([]BatchRef, error) {
	w.flush()
	w.handOff()
	if err := w.out.close(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", BatchesFile, err)
	}
	return w.refs, nil
}

// ReadBatch decodes one batch (a line of batches.jsonl). Custom values
// keep their numbers as json.Number (Custom decodes them so), so they reach
// the API exactly as planned, and Hash of a decoded profile equals the hash
// the snapshot holds for it. It takes the line whole, as every reader has
// it in memory: a json.Decoder would copy it into buffers of its own.
func ReadBatch(line []byte) (*Batch, error) {
	var b Batch
	if err := json.Unmarshal(line, &b); err != nil {
		return nil, fmt.Errorf("decoding batch: %w", err)
	}
	if b.Seq < 1 {
		return nil, fmt.Errorf("decoding batch: seq %d, want >= 1", b.Seq)
	}
	return &b, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C is a batch's checksum as the index (the manifest and the Map
// items) carries it: base64 of the big-endian CRC-32C of the batch's line,
// the form S3 reports as x-amz-checksum-crc32c. CRC-32C is S3's own
// integrity check and runs in hardware; a sha256 of every byte cost the
// planner 7 %.
func CRC32C(data []byte) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc32.Checksum(data, castagnoli))
	return base64.StdEncoding.EncodeToString(b[:])
}
