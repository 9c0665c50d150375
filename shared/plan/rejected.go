package plan

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/segpilot/segpilot/shared/segment"
)

// rejectHeader is rejected.csv's header. Its first column says what a row
// number counts: the data row, as segment.Record.Row (the n-th record; for
// CSV the header is row 0), not the file's line.
var rejectHeader = []string{"row (data row: 1 = first after the header)", "email", "reason"}

// rejectWriter writes rejected.csv under rejectHeader, one line per
// rejection in the order the Source reports them (row order).
type rejectWriter struct {
	f   *os.File
	bw  *bufio.Writer
	w   *csv.Writer
	rec [3]string
}

func newRejectWriter(path string) (*rejectWriter, error) {
	r, err := openRejectWriter(path, os.O_TRUNC)
	if err != nil {
		return nil, err
	}
	if err := r.w.Write(rejectHeader); err != nil {
		return nil, fmt.Errorf("writing rejected.csv: %w", errJoinClose(err, r.f))
	}
	return r, nil
}

// appendRejectWriter adds lines to a rejected.csv newRejectWriter wrote.
func appendRejectWriter(path string) (*rejectWriter, error) {
	return openRejectWriter(path, os.O_APPEND)
}

func openRejectWriter(path string, mode int) (*rejectWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|mode, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating rejected.csv: %w", err)
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	return &rejectWriter{f: f, bw: bw, w: csv.NewWriter(bw)}, nil
}

func (r *rejectWriter) write(rej segment.Rejection) error {
	r.rec[0] = strconv.Itoa(rej.Row)
	r.rec[1] = segment.SafeCSVCell(rej.Email)
	r.rec[2] = segment.SafeCSVCell(rej.Reason)
	if err := r.w.Write(r.rec[:]); err != nil {
		return fmt.Errorf("writing rejected.csv: %w", err)
	}
	return nil
}

func (r *rejectWriter) close() error {
	r.w.Flush()
	err := r.w.Error()
	if err == nil {
		err = r.bw.Flush()
	}
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing rejected.csv: %w", err)
	}
	return nil
}

func errJoinClose(err error, f *os.File) error {
	return errors.Join(err, f.Close())
}
