// Package store defines the object store port that every segpilot component
// reads and writes run data through: S3 in Lambda, a folder in local mode.
package store

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned (wrapped) when a key does not exist.
var ErrNotFound = errors.New("object not found")

// ErrExists is returned (wrapped) by Put with IfNoneMatch when the key is already there.
var ErrExists = errors.New("object already exists")

// ErrChanged is returned (wrapped) by Put with IfMatch when the key no longer
// holds the object with that ETag (or is gone): someone else wrote it first.
var ErrChanged = errors.New("object changed since it was read")

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key          string
	Size         int64
	ETag         string // without quotes
	VersionID    string // empty when the store is not versioned
	LastModified time.Time
}

// PutOptions tunes one Put.
type PutOptions struct {
	ContentType string
	// IfNoneMatch makes the put fail with ErrExists when the key already exists,
	// so concurrent writers of the same key agree on one winner.
	IfNoneMatch bool
	// IfMatch (an ETag) makes the put fail with ErrChanged unless the key
	// still holds that object: compare-and-swap for small state objects.
	IfMatch string
}

// ObjectStore is the bucket as segpilot sees it. Keys use '/' separators and
// are never URL-encoded.
type ObjectStore interface {
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)
	// GetRange reads length bytes of key from byte offset (S3: one ranged
	// GET). An object that ends sooner gives fewer bytes (none when it ends
	// before offset): the caller, which knows what it expects, tells a
	// changed object by the short read. A missing key is ErrNotFound.
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	Head(ctx context.Context, key string) (ObjectInfo, error)
	Put(ctx context.Context, key string, body io.Reader, opts PutOptions) (ObjectInfo, error)
	// List returns every object under prefix, in key order.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	Delete(ctx context.Context, key string) error
}
