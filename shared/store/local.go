package store

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/segpilot/segpilot/shared/filelock"
)

// tmpDir holds in-flight writes inside the bucket folder so a rename into
// place is atomic; it is hidden from List.
const tmpDir = ".segpilot-tmp"

// Folder is an ObjectStore backed by a local directory laid out like the
// bucket (keys are relative paths). Local mode and tests use it.
type Folder struct {
	root string
	// mu and the bucket lock file make every change one step, between
	// goroutines and between processes sharing the folder: an IfMatch put
	// compares and swaps atomically, as S3 does.
	mu sync.Mutex
}

var _ ObjectStore = (*Folder)(nil)

// NewFolder returns a store rooted at dir, creating it if needed.
func NewFolder(dir string) (*Folder, error) {
	if err := os.MkdirAll(filepath.Join(dir, tmpDir), 0o755); err != nil {
		return nil, fmt.Errorf("creating bucket folder: %w", err)
	}
	return &Folder{root: dir}, nil
}

// change holds the folder's lock for one change and returns its release.
func (f *Folder) change() (release func() error, err error) {
	f.mu.Lock()
	held, err := filelock.Lock(filepath.Join(f.root, tmpDir, "bucket.lock"), true)
	if err != nil {
		f.mu.Unlock()
		return nil, err
	}
	return func() error {
		defer f.mu.Unlock()
		return held.Unlock()
	}, nil
}

// OpenFolder returns a store rooted at dir, which must exist, creating
// nothing: for commands that only read, such as segpilot runs. Changes
// need the temporary folder NewFolder makes.
func OpenFolder(dir string) (*Folder, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("opening bucket folder: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("opening bucket folder: %s is not a folder", dir)
	}
	return &Folder{root: dir}, nil
}

// Root is the folder standing in for the bucket.
func (f *Folder) Root() string { return f.root }

// Path maps a key to its file, refusing keys that would escape the root.
func (f *Folder) Path(key string) (string, error) {
	clean := path.Clean("/" + key)
	if key == "" || strings.HasSuffix(key, "/") || clean != "/"+key || strings.HasPrefix(key, tmpDir) {
		return "", fmt.Errorf("invalid object key %q", key)
	}
	return filepath.Join(f.root, filepath.FromSlash(key)), nil
}

func (f *Folder) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	file, info, err := f.open(ctx, key)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		file.Close()
		return nil, ObjectInfo{}, fmt.Errorf("reading %s: %w", key, err)
	}
	return file, info, nil
}

// open opens key's file and describes it from the open file, so that the
// ETag is the content's a reader then gets, even if a put replaces the file
// meanwhile. The file is read to its end.
func (f *Folder) open(ctx context.Context, key string) (*os.File, ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, ObjectInfo{}, err
	}
	p, err := f.Path(key)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	file, err := os.Open(p)
	if err != nil {
		return nil, ObjectInfo{}, f.notFound(key, err)
	}
	st, err := file.Stat()
	if err == nil && st.IsDir() {
		file.Close()
		return nil, ObjectInfo{}, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	var etag string
	if err == nil {
		etag, err = md5Hex(file, st.Size())
	}
	if err != nil {
		file.Close()
		return nil, ObjectInfo{}, fmt.Errorf("reading %s: %w", key, err)
	}
	return file, ObjectInfo{Key: key, Size: st.Size(), ETag: etag, LastModified: st.ModTime().UTC()}, nil
}

func (f *Folder) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if offset < 0 || length <= 0 {
		return nil, fmt.Errorf("reading %s: invalid range of %d bytes at %d", key, length, offset)
	}
	p, err := f.Path(key)
	if err != nil {
		return nil, err
	}
	file, err := os.Open(p)
	if err != nil {
		return nil, f.notFound(key, err)
	}
	if st, err := file.Stat(); err != nil || st.IsDir() {
		file.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", key, err)
		}
		return nil, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	return rangeReader{io.NewSectionReader(file, offset, length), file}, nil
}

// rangeReader reads a section of an open file and closes the file.
type rangeReader struct {
	*io.SectionReader
	io.Closer
}

func (f *Folder) Head(ctx context.Context, key string) (ObjectInfo, error) {
	file, info, err := f.open(ctx, key)
	if err != nil {
		return ObjectInfo{}, err
	}
	file.Close()
	return info, nil
}

func (f *Folder) Put(ctx context.Context, key string, body io.Reader, opts PutOptions) (_ ObjectInfo, err error) {
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, err
	}
	p, err := f.Path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	tmp, err := os.CreateTemp(filepath.Join(f.root, tmpDir), "put-*")
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("writing %s: %w", key, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful link/rename
	h := md5.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("writing %s: %w", key, err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return ObjectInfo{}, fmt.Errorf("writing %s: %w", key, err)
	}
	release, err := f.change()
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("writing %s: %w", key, err)
	}
	defer func() { err = errors.Join(err, release()) }()
	if opts.IfMatch != "" {
		current, err := fileMD5(p)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return ObjectInfo{}, fmt.Errorf("writing %s: %w", key, err)
		}
		if current != opts.IfMatch {
			return ObjectInfo{}, fmt.Errorf("%s: %w", key, ErrChanged)
		}
	}
	if opts.IfNoneMatch {
		// A hard link fails if the target exists: create-if-absent, atomically.
		if err := os.Link(tmp.Name(), p); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return ObjectInfo{}, fmt.Errorf("%s: %w", key, ErrExists)
			}
			return ObjectInfo{}, fmt.Errorf("writing %s: %w", key, err)
		}
	} else if err := os.Rename(tmp.Name(), p); err != nil {
		return ObjectInfo{}, fmt.Errorf("writing %s: %w", key, err)
	}
	st, err := os.Stat(p)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("writing %s: %w", key, err)
	}
	return ObjectInfo{Key: key, Size: n, ETag: hex.EncodeToString(h.Sum(nil)), LastModified: st.ModTime().UTC()}, nil
}

func (f *Folder) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Walk only the deepest folder the prefix names.
	dir := prefix
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		dir = prefix[:i]
	} else {
		dir = ""
	}
	start := filepath.Join(f.root, filepath.FromSlash(dir))
	var out []ObjectInfo
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return filepath.SkipAll
			}
			return err
		}
		rel, err := filepath.Rel(f.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			if key == tmpDir {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, ObjectInfo{Key: key, Size: info.Size(), LastModified: info.ModTime().UTC()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (f *Folder) Delete(ctx context.Context, key string) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := f.Path(key)
	if err != nil {
		return err
	}
	release, err := f.change()
	if err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	defer func() { err = errors.Join(err, release()) }()
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	return nil
}

func (f *Folder) notFound(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	return fmt.Errorf("reading %s: %w", key, err)
}

func fileMD5(p string) (string, error) {
	file, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return "", err
	}
	return md5Hex(file, st.Size())
}

// md5Hex is the hex MD5 of r, an object of about size bytes, read through a
// buffer no larger than the object: the 32 KB io.Copy took for every small
// state object read was a quarter of a local pacing run's allocations.
func md5Hex(r io.Reader, size int64) (string, error) {
	h := md5.New()
	buf := make([]byte, min(max(size, 512)+1, 32<<10))
	if _, err := io.CopyBuffer(h, onlyReader{r}, buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// onlyReader hides an *os.File's WriteTo, which would copy through a
// buffer of its own.
type onlyReader struct{ io.Reader }
