package delivery

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"

	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/store"
)

// Getter reads an object: the store's Get.
type Getter interface {
	Get(ctx context.Context, key string) (io.ReadCloser, store.ObjectInfo, error)
}

// Read reads a whole delivery's parts in order, as one file: rows
// are numbered across the parts, and each rejected row's reason names its
// part and the row there. A part that fails validation fails the whole
// delivery, named by its key.
func Read(ctx context.Context, st Getter, d Decision, opts segment.Options,
	emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
	var total segment.Stats
	offset := 0
	for i, p := range d.Parts {
		if p.Size == 0 {
			continue // an empty part (a task that had no rows) is no file
		}
		rc, _, err := st.Get(ctx, p.Key)
		if err != nil {
			return total, fmt.Errorf("reading %s: %w", p.Key, err)
		}
		var body io.Reader = rc
		if columns := d.Columns[p.Key]; columns != nil {
			// A part without a header row, its columns named by the
			// manifest: read as if it had one.
			if body, err = withHeader(rc, columns); err != nil {
				rc.Close()
				return total, fmt.Errorf("reading %s: %w", p.Key, err)
			}
		}
		name, base := p.Key, path.Base(p.Key)
		o := opts
		o.Name = name
		stats, err := segment.Read(ctx, body, o,
			func(r segment.Record) error {
				r.Row += offset
				return emit(r)
			},
			func(j segment.Rejection) error {
				j.Reason = "part " + base + ", row " + strconv.Itoa(j.Row) + ": " + j.Reason
				j.Row += offset
				return reject(j)
			})
		rc.Close()
		if err != nil {
			return total, err
		}
		offset += stats.Rows
		total.Rows += stats.Rows
		total.Valid += stats.Valid
		total.Rejected += stats.Rejected
		total.Compressed = total.Compressed || stats.Compressed
		if i == 0 || total.Format == "" {
			total.Format, total.Delimiter = stats.Format, stats.Delimiter
		}
	}
	return total, nil
}

// withHeader puts a CSV header row of columns before r's rows, which may
// be gzipped.
func withHeader(r io.Reader, columns []string) (io.Reader, error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		r = zr
	} else {
		r = br
	}
	var line strings.Builder
	w := csv.NewWriter(&line)
	if err := w.Write(columns); err != nil {
		return nil, err
	}
	w.Flush()
	return io.MultiReader(strings.NewReader(line.String()), r), nil
}
