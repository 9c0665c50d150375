package segment

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go/format"
	"github.com/pierrec/lz4/v4"
)

// The Parquet library trusts the sizes a file names. It decodes page
// headers and the footer (Thrift's compact protocol) making each list's
// slice and each value's buffer of the length claimed before it reads an
// element (a footer claiming two billion row groups is a fatal out of
// memory); its stream reader drops the end-of-data error of an 8-byte
// read, so a header claiming a list of two billion doubles is "read"
// element by element past the end of the data (seconds of a core for a
// 7 KB file); and it allocates a page's compressed size before reading
// the page (fuzzing found a 1.3 KB file asking for 1.9 GB) and a
// compressed page's uncompressed size before decompressing it. So before
// the library opens a file, checkFooter scans its footer, and before it
// reads a column chunk, pageChecker walks the chunk's page headers: a scan
// that reads Thrift as the library does and checks each list's, map's and
// value's claimed size against the bytes left (every element takes at
// least one byte), each page's size against what is left of the chunk,
// the chunk cut where the file ends, and its values against the most read
// in a page (maxPageValues); and it decodes each compressed page,
// streaming, to see that it decodes into the size its header names, as
// Arrow requires of every page. Such a file is then a damaged file at
// once, and a damaged file allocates no more than a valid one of its size
// could decode to.
//
// The library's LZ4_RAW codec, given a block that does not decode, takes
// any error for an output buffer too short and doubles the buffer until
// memory runs out (fuzzing found a 7 KB file that asked for 32 GiB): an
// LZ4_RAW page is decoded here first, into the size its header names.

// errOversized says a Thrift value claims more than the bytes left could hold.
var errOversized = errors.New("more than the bytes left can hold")

// errChunkLength says a column chunk's length is negative.
var errChunkLength = errors.New("a column chunk's length cannot be negative")

// errPageOversized says a page claims more bytes than its chunk has left.
var errPageOversized = errors.New("a page header claims more bytes than its column chunk has left")

// lz4MaxRatio bounds what an LZ4 block decodes to: a byte of a match's
// length extension stands for at most 255 bytes of output.
const lz4MaxRatio = 255

// maxPageValues is the most values segpilot reads in one page. The library
// allocates a page's levels, value offsets and fixed-size values by its
// num_values before decoding any (a header claiming two billion is 8 GB
// of offsets); writers put at most 20,000 rows in a page by default
// (parquet-mr, arrow-rs), Arrow C++ up to a million.
const maxPageValues = 1 << 22

// errPageValues says a page holds more values than segpilot reads in one.
var errPageValues = fmt.Errorf("more than the %d values segpilot reads in one page: write the file with smaller pages", maxPageValues)

// errBadPage says a compressed page does not decode into the size its header names.
var errBadPage = errors.New("a compressed page does not decode into the size its header names")

// zstdMaxWindow is the largest window the reference zstd decoder accepts
// unless told otherwise (ZSTD_WINDOWLOG_LIMIT_DEFAULT): a frame asking for
// more is damaged, not a reason to allocate it.
const zstdMaxWindow = 1 << 27

// thriftMaxDepth bounds nesting: page headers nest three or four levels,
// a footer's metadata under ten. Deeper is a damaged file: the library
// recurses a call a level, however deep (a fatal stack overflow, no
// error), and what it skips there the scan would not see.
const thriftMaxDepth = 32

// errNested says Thrift values nest deeper than thriftMaxDepth.
var errNested = fmt.Errorf("values nested more than %d deep", thriftMaxDepth)

// pageChecker checks column chunks before the library reads them; its
// buffer and decoders serve every chunk of a read.
type pageChecker struct {
	headers *bufio.Reader
	lz4src  []byte
	lz4dst  []byte
	gzip    *gzip.Reader
	zstd    *zstd.Decoder
	brotli  *brotli.Reader
}

func newPageChecker() *pageChecker {
	return &pageChecker{headers: bufio.NewReaderSize(nil, 4096)}
}

func (pc *pageChecker) close() {
	if pc.zstd != nil {
		pc.zstd.Close()
	}
}

// check walks the page headers of the column chunk of file r (fileSize
// bytes) that starts at start and is length bytes long, and decodes each
// page compressed with codec. It returns, wrapped with where: a scan's
// damagedThrift error for a header that claims more than the chunk holds,
// runs past it or nests too deep; errPageOversized or errPageValues for a
// page claiming more bytes than are left or more values than are read in
// a page; errBadPage for a page that does not decode into the size its
// header names; and the caller's read errors as they are. Anything else
// that is wrong is left for the library to report.
func (pc *pageChecker) check(r io.ReaderAt, fileSize, start, length int64, codec format.CompressionCodec) error {
	if length < 0 {
		// The library's section of the chunk would then run to the
		// file's end (io.NewSectionReader takes off+n overflowing for
		// "no end"), its pages unchecked.
		return fmt.Errorf("column chunk at byte %d: %d bytes: %w", start, length, errChunkLength)
	}
	if start < 0 || length == 0 || start >= fileSize {
		return nil
	}
	// The library reads no further than the file's end, whatever the
	// chunk claims: a page that needs more bytes than that is damaged.
	length = min(length, fileSize-start)
	sr := io.NewSectionReader(r, start, length)
	br := pc.headers
	br.Reset(sr)
	for pos := int64(0); pos < length; {
		header := pos
		s := thriftScan{r: br, left: length - pos}
		page, err := s.pageHeader()
		var se *sourceError
		switch {
		case errors.As(err, &se):
			return err
		case damagedThrift(err):
			return fmt.Errorf("page header at byte %d of its column chunk: %w", header, err)
		case errors.Is(err, errPageOversized), errors.Is(err, errPageValues):
			return fmt.Errorf("page at byte %d of its column chunk: %w", header, err)
		case err != nil:
			return nil
		}
		pos += length - pos - s.left
		if err := pc.decodes(sr, pos, page, codec); err != nil {
			return fmt.Errorf("page at byte %d of its column chunk: %w", header, err)
		}
		pos += page.size
		if _, err := sr.Seek(pos, io.SeekStart); err != nil {
			return nil
		}
		br.Reset(sr)
	}
	return nil
}

// checkFooter scans the file's metadata, its footer, as check scans page
// headers: the library's Thrift decoder allocates a value's or a list's
// claimed length before it reads the elements (a list of two billion row
// groups is a fatal out of memory, not an error). It returns a scan's
// damagedThrift error, wrapped, and the caller's read errors; anything
// else that is wrong with the footer is left for the library to report.
func checkFooter(r io.ReaderAt, size int64) error {
	var tail [8]byte
	if _, err := r.ReadAt(tail[:], size-int64(len(tail))); err != nil && err != io.EOF {
		return err
	}
	n := int64(binary.LittleEndian.Uint32(tail[:4]))
	if n > size-12 {
		return nil
	}
	s := thriftScan{r: bufio.NewReader(io.NewSectionReader(r, size-8-n, n)), left: n}
	err := s.value(12, false)
	var se *sourceError
	switch {
	case errors.As(err, &se):
		return err
	case damagedThrift(err):
		return fmt.Errorf("the file's metadata (its footer): %w", err)
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

// errThriftEnd says a value runs past the bytes left: the library reads
// on past them, taking an 8-byte read's end of data for a double (a list
// of doubles in a map of lists is seconds of a core for 1.5 KB).
var errThriftEnd = errors.New("a value runs past the bytes left")

// damagedThrift says whether a scan's error makes the file damaged; any
// other (an unknown type, a varint too long) the library stops at too,
// and reports.
func damagedThrift(err error) bool {
	return errors.Is(err, errOversized) || errors.Is(err, errNested) || errors.Is(err, errThriftEnd)
}

// pageInfo is what a PageHeader says of the bytes that follow it.
type pageInfo struct {
	size         int64 // compressed_page_size: the page's bytes after its header
	uncompressed int64 // uncompressed_page_size
	levels       int64 // a v2 data page's levels, before its compressed values
	values       int64 // num_values: the library allocates buffers of this many levels and values
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
		case (id == 5 || id == 7) && t == 12: // data_page_header, dictionary_page_header
			return s.structFields(func(id int16, t byte) error {
				if id == 1 && t == 5 { // num_values
					v, err := s.i32()
					p.values = v
					return err
				}
				return s.value(t, false)
			})
		case id == 8 && t == 12: // data_page_header_v2
			return s.structFields(func(id int16, t byte) error {
				switch {
				case id == 1 && t == 5: // num_values
					v, err := s.i32()
					p.values = v
					return err
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
	if p.size < 0 {
		return p, fmt.Errorf("page size %d: %w", p.size, errThriftEnd)
	}
	if p.size > s.left {
		return p, fmt.Errorf("%d bytes, %d left: %w", p.size, s.left, errPageOversized)
	}
	if p.values > maxPageValues {
		return p, fmt.Errorf("%d values: %w", p.values, errPageValues)
	}
	return p, nil
}

// i32 reads a compact-protocol i32 (zigzag varint).
func (s *thriftScan) i32() (int64, error) {
	v, err := s.uvarint()
	return int64(int32(v>>1) ^ -int32(v&1)), err
}

// decodes checks that the page at off in r, compressed with codec,
// decodes into the size its header names (less a v2 page's levels, stored
// as they are), as the library will decode it. An LZ4_RAW page is decoded
// in memory (its block has no stream), a Snappy page's size read from its
// first bytes; the others stream through their decoder, nothing kept.
func (pc *pageChecker) decodes(r io.ReaderAt, off int64, p pageInfo, codec format.CompressionCodec) error {
	if codec == format.Uncompressed || !p.compressed {
		return nil
	}
	if p.levels > p.size || p.levels > p.uncompressed {
		return fmt.Errorf("levels of %d bytes in a page of %d: %w", p.levels, p.size, errBadPage)
	}
	body := io.NewSectionReader(r, off+p.levels, p.size-p.levels)
	n, want := body.Size(), p.uncompressed-p.levels
	if n == 0 {
		if want == 0 {
			return nil // nothing to decode, nothing claimed: the library decides
		}
		return fmt.Errorf("%s, no bytes to %d: %w", codec, want, errBadPage)
	}
	var err error
	switch codec {
	case format.Lz4Raw:
		err = pc.decodeLZ4(body, want)
	case format.Snappy:
		err = snappyDecodes(body, want)
	case format.Gzip:
		if pc.gzip == nil {
			pc.gzip = new(gzip.Reader)
		}
		if err = pc.gzip.Reset(body); err == nil {
			err = streamDecodes(pc.gzip, want)
		}
	case format.Zstd:
		if pc.zstd == nil {
			pc.zstd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(zstdMaxWindow))
			if err != nil {
				return fmt.Errorf("a zstd decoder: %w", err)
			}
		}
		if err = pc.zstd.Reset(body); err == nil {
			err = streamDecodes(pc.zstd, want)
		}
	case format.Brotli:
		if pc.brotli == nil {
			pc.brotli = brotli.NewReader(nil)
		}
		if err = pc.brotli.Reset(body); err == nil {
			err = streamDecodes(pc.brotli, want)
		}
	default:
		return nil // a codec the library does not read: it says so
	}
	var se *sourceError
	if err == nil || errors.As(err, &se) {
		return err
	}
	return fmt.Errorf("%s, %d bytes to %d: %w (%v)", codec, n, want, errBadPage, err)
}

// streamDecodes reads what dec decodes, no more than want and a byte.
func streamDecodes(dec io.Reader, want int64) error {
	got, err := io.Copy(io.Discard, io.LimitReader(dec, want+1))
	if err != nil {
		return err
	}
	switch {
	case got > want:
		return errors.New("it decodes to more")
	case got < want:
		return fmt.Errorf("it decodes to %d", got)
	}
	return nil
}

// snappyDecodes checks the size a Snappy block says it decodes to, its
// first bytes: the decoder allocates that much (up to 4 GiB) before it
// decodes, and checks the block against it as it does.
func snappyDecodes(body *io.SectionReader, want int64) error {
	var head [binary.MaxVarintLen32]byte
	n, err := body.ReadAt(head[:min(int64(len(head)), body.Size())], 0)
	if err != nil && err != io.EOF {
		return err
	}
	size, err := snappy.DecodedLen(head[:n])
	if err != nil {
		return err
	}
	if int64(size) != want {
		return fmt.Errorf("it says it decodes to %d", size)
	}
	return nil
}

// decodeLZ4 decodes the LZ4 block body into want bytes, in buffers kept
// for the read's next page.
func (pc *pageChecker) decodeLZ4(body *io.SectionReader, want int64) error {
	if want > lz4MaxRatio*body.Size()+lz4MaxRatio {
		// No LZ4 block expands more: a header that says so is damaged,
		// and the buffer it names is not allocated.
		return fmt.Errorf("LZ4 expands %d bytes to %d at most", body.Size(), lz4MaxRatio*body.Size()+lz4MaxRatio)
	}
	pc.lz4src = slices.Grow(pc.lz4src[:0], int(body.Size()))[:body.Size()]
	if _, err := body.ReadAt(pc.lz4src, 0); err != nil && err != io.EOF {
		return err
	}
	pc.lz4dst = slices.Grow(pc.lz4dst[:0], int(want))[:want]
	n, err := lz4.UncompressBlock(pc.lz4src, pc.lz4dst)
	if err != nil {
		return errors.New("a damaged block") // the package's one error says no more
	}
	if int64(n) != want {
		return fmt.Errorf("it decodes to %d", n)
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
		return errNested
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
		return fmt.Errorf("a list of %d elements, %d bytes left: %w", n, s.left, errOversized)
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
		return fmt.Errorf("a map of %d entries, %d bytes left: %w", n, s.left, errOversized)
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
		if h&0xf == 0 { // stop: the type says so, whatever delta the byte holds (as the library reads it)
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
