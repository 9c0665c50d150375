package segment

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/pierrec/lz4/v4"
)

// The Parquet library decodes each page header (Thrift's compact protocol)
// from a stream, and its stream reader drops the end-of-data error of an
// 8-byte read. A damaged header that claims a list of two billion doubles
// or UUIDs is then "read" element by element past the end of the data: a
// 7 KB file found by fuzzing kept a core busy for seconds, and the claim
// can be 20 times larger. Before the library reads a column chunk,
// checkPageHeaders walks its page headers with a scanner that checks each
// container's claimed size against the bytes left (every element takes at
// least one byte), so such a file is a damaged file at once.

// The library's LZ4_RAW codec, given a block that does not decode, takes
// any error for an output buffer too short and doubles the buffer until
// memory runs out (fuzzing found a 7 KB file that asked for 32 GiB). So
// the pages of an LZ4_RAW chunk are decoded here first, into the size
// their header names, and a page that does not decode is a damaged file.

// errOversized says a header claims more than its chunk could hold.
var errOversized = errors.New("a page header claims more elements than its column chunk has bytes")

// lz4MaxRatio bounds what an LZ4 block decodes to: a byte of a match's
// length extension stands for at most 255 bytes of output.
const lz4MaxRatio = 255

// errBadLZ4 says an LZ4_RAW page does not decode into the size its header names.
var errBadLZ4 = errors.New("an LZ4 page does not decode into the size its header names")

// thriftMaxDepth bounds nesting: page headers nest three or four levels.
const thriftMaxDepth = 32

// checkPageHeaders walks the page headers of the column chunk that starts
// at start and is length bytes long, and with lz4Pages decodes each compressed
// page. It returns errOversized (wrapped) for a header that claims more
// than the chunk holds, errBadLZ4 (wrapped) for a page that does not
// decode, and the caller's read errors; anything else that is wrong is
// left for the library to report.
func checkPageHeaders(r io.ReaderAt, start, length int64, br *bufio.Reader, lz4Pages bool) error {
	if start < 0 || length <= 0 {
		return nil
	}
	sr := io.NewSectionReader(r, start, length)
	br.Reset(sr)
	for pos := int64(0); pos < length; {
		s := thriftScan{r: br, left: length - pos}
		page, err := s.pageHeader()
		var se *sourceError
		switch {
		case errors.As(err, &se), errors.Is(err, errOversized):
			return err
		case err != nil:
			return nil
		}
		pos += length - pos - s.left
		if lz4Pages {
			if err := decodeLZ4Page(sr, pos, page); err != nil {
				return fmt.Errorf("page at byte %d of its column chunk: %w", pos, err)
			}
		}
		pos += page.size
		if _, err := sr.Seek(pos, io.SeekStart); err != nil {
			return nil
		}
		br.Reset(sr)
	}
	return nil
}

// thriftScan skips Thrift compact-protocol values, reading no more than
// left bytes.
type thriftScan struct {
	r     *bufio.Reader
	left  int64
	depth int
}

var errThriftEnd = errors.New("thrift value runs past its chunk")

// pageInfo is what a PageHeader says of the bytes that follow it.
type pageInfo struct {
	size         int64 // compressed_page_size: the page's bytes after its header
	uncompressed int64 // uncompressed_page_size
	levels       int64 // a v2 data page's levels, before its compressed values
	compressed   bool  // false: a v2 data page stored uncompressed
}

// pageHeader reads one PageHeader.
func (s *thriftScan) pageHeader() (pageInfo, error) {
	p := pageInfo{size: -1, compressed: true}
	err := s.structFields(func(id int16, t byte) error {
		switch {
		case id == 2 && t == 5: // uncompressed_page_size, an i32
			v, err := s.i32()
			p.uncompressed = v
			return err
		case id == 3 && t == 5: // compressed_page_size
			v, err := s.i32()
			p.size = v
			return err
		case id == 8 && t == 12: // data_page_header_v2
			return s.structFields(func(id int16, t byte) error {
				switch {
				case (id == 5 || id == 6) && t == 5: // definition and repetition levels' byte lengths
					v, err := s.i32()
					p.levels += max(v, 0)
					return err
				case id == 7 && (t == 1 || t == 2): // is_compressed: the value is in the type
					p.compressed = t == 1
					return nil
				}
				return s.value(t, false)
			})
		}
		return s.value(t, false)
	})
	if err != nil {
		return p, err
	}
	if p.size < 0 || p.size > s.left {
		return p, fmt.Errorf("page size %d: %w", p.size, errThriftEnd)
	}
	return p, nil
}

// i32 reads a compact-protocol i32 (zigzag varint).
func (s *thriftScan) i32() (int64, error) {
	v, err := s.uvarint()
	return int64(int32(v>>1) ^ -int32(v&1)), err
}

// decodeLZ4Page decodes the LZ4_RAW page at off in r into the size its
// header names (less a v2 page's levels, stored as they are), as the
// library will.
func decodeLZ4Page(r io.ReaderAt, off int64, p pageInfo) error {
	if !p.compressed || p.size == 0 {
		return nil
	}
	if p.levels > p.size || p.levels > p.uncompressed {
		return fmt.Errorf("levels of %d bytes in a page of %d: %w", p.levels, p.size, errBadLZ4)
	}
	if p.uncompressed-p.levels > lz4MaxRatio*(p.size-p.levels)+lz4MaxRatio {
		// No LZ4 block expands more: a header that says so is damaged,
		// and the buffer it names is not allocated.
		return fmt.Errorf("%d bytes said to decode to %d: %w", p.size-p.levels, p.uncompressed-p.levels, errBadLZ4)
	}
	src := make([]byte, p.size-p.levels)
	if _, err := r.ReadAt(src, off+p.levels); err != nil {
		var se *sourceError
		if errors.As(err, &se) {
			return err
		}
		return nil // the chunk ends early: the library says so
	}
	dst := make([]byte, p.uncompressed-p.levels)
	if _, err := lz4.UncompressBlock(src, dst); err != nil {
		return fmt.Errorf("%d bytes to %d: %w", len(src), len(dst), errBadLZ4)
	}
	return nil
}

func (s *thriftScan) byte() (byte, error) {
	if s.left <= 0 {
		return 0, errThriftEnd
	}
	b, err := s.r.ReadByte()
	if err != nil {
		return 0, err
	}
	s.left--
	return b, nil
}

func (s *thriftScan) uvarint() (uint64, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		b, err := s.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, errors.New("varint too long")
}

func (s *thriftScan) skip(n uint64) error {
	if n > uint64(s.left) {
		return errThriftEnd
	}
	if _, err := s.r.Discard(int(n)); err != nil {
		return err
	}
	s.left -= int64(n)
	return nil
}

// value skips one value of compact type t; inContainer, a boolean takes a
// byte (in a struct's field header it takes none).
func (s *thriftScan) value(t byte, inContainer bool) error {
	switch t {
	case 1, 2: // true, false
		if inContainer {
			_, err := s.byte()
			return err
		}
		return nil
	case 3: // i8
		_, err := s.byte()
		return err
	case 4, 5, 6: // i16, i32, i64
		_, err := s.uvarint()
		return err
	case 7: // double
		return s.skip(8)
	case 8: // binary
		n, err := s.uvarint()
		if err != nil {
			return err
		}
		return s.skip(n)
	case 9, 10: // list, set
		return s.list()
	case 11:
		return s.mapValue()
	case 12:
		return s.structFields(func(_ int16, t byte) error { return s.value(t, false) })
	case 13: // uuid
		return s.skip(16)
	}
	return fmt.Errorf("thrift type %d", t)
}

func (s *thriftScan) nest() error {
	if s.depth++; s.depth > thriftMaxDepth {
		return errors.New("thrift values nested too deep")
	}
	return nil
}

func (s *thriftScan) list() error {
	if err := s.nest(); err != nil {
		return err
	}
	defer func() { s.depth-- }()
	h, err := s.byte()
	if err != nil {
		return err
	}
	n := uint64(h >> 4)
	if n == 0xf {
		if n, err = s.uvarint(); err != nil {
			return err
		}
	}
	if n > uint64(s.left) {
		return errOversized
	}
	for range n {
		if err := s.value(h&0xf, true); err != nil {
			return err
		}
	}
	return nil
}

func (s *thriftScan) mapValue() error {
	if err := s.nest(); err != nil {
		return err
	}
	defer func() { s.depth-- }()
	n, err := s.uvarint()
	if err != nil || n == 0 {
		return err
	}
	kv, err := s.byte()
	if err != nil {
		return err
	}
	if n > uint64(s.left) {
		return errOversized
	}
	for range n {
		if err := s.value(kv>>4, true); err != nil {
			return err
		}
		if err := s.value(kv&0xf, true); err != nil {
			return err
		}
	}
	return nil
}

// structFields hands each field's id and type to field, which must consume
// its value, up to the struct's end.
func (s *thriftScan) structFields(field func(id int16, t byte) error) error {
	if err := s.nest(); err != nil {
		return err
	}
	defer func() { s.depth-- }()
	var id int16
	for {
		h, err := s.byte()
		if err != nil {
			return err
		}
		if h == 0 { // stop
			return nil
		}
		if delta := h >> 4; delta != 0 {
			id += int16(delta)
		} else {
			v, err := s.uvarint()
			if err != nil {
				return err
			}
			id = int16(int64(v>>1) ^ -int64(v&1))
		}
		if err := field(id, h&0xf); err != nil {
			return err
		}
	}
}
