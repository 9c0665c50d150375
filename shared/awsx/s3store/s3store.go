// Package s3store implements store.ObjectStore on an S3 bucket.
package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/segpilot/segpilot/shared/store"
)

// DefaultMemoryLimit is the largest non-seekable Put body held in memory;
// larger bodies are spooled to a temporary file. S3 needs the length (and,
// without TLS, a payload hash) before sending, so a stream must be buffered
// somewhere; Lambda's ephemeral storage is cheaper than its memory.
const DefaultMemoryLimit = 1 << 20

// Store is one S3 bucket seen as a store.ObjectStore.
type Store struct {
	client      *s3.Client
	bucket      string
	maxKeys     int32
	tempDir     string
	memoryLimit int64
}

var _ store.ObjectStore = (*Store)(nil)

// Option tunes a Store.
type Option func(*Store)

// WithMaxKeys sets the page size of List requests (S3's default is 1000).
func WithMaxKeys(n int32) Option {
	return func(s *Store) { s.maxKeys = n }
}

// WithTempDir sets where large non-seekable Put bodies are spooled (default
// os.TempDir(), which is /tmp in Lambda).
func WithTempDir(dir string) Option {
	return func(s *Store) { s.tempDir = dir }
}

// WithMemoryLimit sets the largest non-seekable Put body kept in memory
// (default DefaultMemoryLimit).
func WithMemoryLimit(n int64) Option {
	return func(s *Store) { s.memoryLimit = n }
}

// New returns a store over bucket.
func New(client *s3.Client, bucket string, opts ...Option) *Store {
	s := &Store{client: client, bucket: bucket, memoryLimit: DefaultMemoryLimit}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// Get opens key for reading; the caller closes the body.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, store.ObjectInfo, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return nil, store.ObjectInfo{}, s.wrap("getting", key, err)
	}
	return out.Body, store.ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         unquote(out.ETag),
		VersionID:    aws.ToString(out.VersionId),
		LastModified: aws.ToTime(out.LastModified),
	}, nil
}

// GetRange reads length bytes of key from offset with one ranged GET. A
// range that starts past the object's end (S3 answers 416 InvalidRange)
// reads as empty, as a range the object ends inside reads short: the
// caller tells a changed object by what it did not get.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 || length <= 0 {
		return nil, fmt.Errorf("getting %s: invalid range of %d bytes at %d", s.uri(key), length, offset)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))})
	if err != nil {
		var apiErr smithy.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidRange" {
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, s.wrap("getting", key, err)
	}
	return out.Body, nil
}

// Head describes key without reading it.
func (s *Store) Head(ctx context.Context, key string) (store.ObjectInfo, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return store.ObjectInfo{}, s.wrap("reading metadata of", key, err)
	}
	return store.ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         unquote(out.ETag),
		VersionID:    aws.ToString(out.VersionId),
		LastModified: aws.ToTime(out.LastModified),
	}, nil
}

// Put writes body to key. A seekable body is sent as is; any other body is
// buffered in memory up to the memory limit and spooled to a temporary file
// beyond it, so large streams never sit whole in memory. The returned
// LastModified is zero: PutObject does not report it.
func (s *Store) Put(ctx context.Context, key string, body io.Reader, opts store.PutOptions) (store.ObjectInfo, error) {
	rs, size, cleanup, err := s.seekable(body)
	if err != nil {
		return store.ObjectInfo{}, fmt.Errorf("buffering %s: %w", s.uri(key), err)
	}
	defer cleanup()

	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(key),
		Body:          rs,
		ContentLength: aws.Int64(size),
	}
	if opts.ContentType != "" {
		in.ContentType = aws.String(opts.ContentType)
	}
	if opts.IfNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	if opts.IfMatch != "" {
		in.IfMatch = aws.String(`"` + opts.IfMatch + `"`)
	}
	out, err := s.client.PutObject(ctx, in)
	if err != nil {
		err = s.wrap("writing", key, err)
		if opts.IfMatch != "" && (errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrNotFound)) {
			// With If-Match, 412 (or 409 for a racing conditional write)
			// means the ETag no longer matches, and 404 NoSuchKey that the
			// object is gone (S3 and moto answer so; gofakes3 answers 412):
			// either way someone else changed it.
			return store.ObjectInfo{}, fmt.Errorf("writing %s: %w", s.uri(key), store.ErrChanged)
		}
		return store.ObjectInfo{}, err
	}
	return store.ObjectInfo{
		Key:       key,
		Size:      size,
		ETag:      unquote(out.ETag),
		VersionID: aws.ToString(out.VersionId),
	}, nil
}

// List returns every object under prefix in key order (S3 lists keys in
// UTF-8 binary order, which is Go's string order), following every page.
func (s *Store) List(ctx context.Context, prefix string) ([]store.ObjectInfo, error) {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(prefix)}
	if s.maxKeys > 0 {
		in.MaxKeys = aws.Int32(s.maxKeys)
	}
	var out []store.ObjectInfo
	pages := s3.NewListObjectsV2Paginator(s.client, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", s.uri(prefix), err)
		}
		for _, obj := range page.Contents {
			out = append(out, store.ObjectInfo{
				Key:          aws.ToString(obj.Key),
				Size:         aws.ToInt64(obj.Size),
				ETag:         unquote(obj.ETag),
				LastModified: aws.ToTime(obj.LastModified),
			})
		}
	}
	return out, nil
}

// Delete removes key; deleting a missing key succeeds, as in S3.
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return s.wrap("deleting", key, err)
	}
	return nil
}

// seekable returns body as a ReadSeeker with its remaining length, and a
// function releasing whatever buffering that took.
func (s *Store) seekable(body io.Reader) (io.ReadSeeker, int64, func(), error) {
	noop := func() {}
	if rs, ok := body.(io.ReadSeeker); ok {
		// Pipes are *os.File too but cannot seek: those fall through to buffering.
		if pos, err := rs.Seek(0, io.SeekCurrent); err == nil {
			end, err := rs.Seek(0, io.SeekEnd)
			if err != nil {
				return nil, 0, noop, err
			}
			if _, err := rs.Seek(pos, io.SeekStart); err != nil {
				return nil, 0, noop, err
			}
			return rs, end - pos, noop, nil
		}
	}

	var head bytes.Buffer
	n, err := head.ReadFrom(io.LimitReader(body, s.memoryLimit+1))
	if err != nil {
		return nil, 0, noop, err
	}
	if n <= s.memoryLimit {
		return bytes.NewReader(head.Bytes()), n, noop, nil
	}

	f, err := os.CreateTemp(s.tempDir, "segpilot-put-*")
	if err != nil {
		return nil, 0, noop, err
	}
	// Unlinked at once, the spool file disappears with its descriptor, even
	// when the process dies mid-put, so Lambda's /tmp never fills with leftovers.
	if err := os.Remove(f.Name()); err != nil {
		return nil, 0, noop, errors.Join(err, f.Close())
	}
	// The file has no name left, so closing frees it; a close error cannot
	// undo data S3 has already received.
	cleanup := func() { f.Close() }
	size, err := io.Copy(f, io.MultiReader(&head, body))
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		return nil, 0, noop, errors.Join(err, f.Close())
	}
	return f, size, cleanup, nil
}

// wrap maps S3's "missing" and "precondition" answers to the store's typed
// errors, and adds the operation and object to every error.
func (s *Store) wrap(op, key string, err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return fmt.Errorf("%s %s: %w", op, s.uri(key), store.ErrNotFound)
		case "PreconditionFailed", "ConditionalRequestConflict":
			return fmt.Errorf("%s %s: %w", op, s.uri(key), store.ErrExists)
		}
	}
	return fmt.Errorf("%s %s: %w", op, s.uri(key), err)
}

func (s *Store) uri(key string) string { return "s3://" + s.bucket + "/" + key }

func unquote(etag *string) string { return strings.Trim(aws.ToString(etag), `"`) }
