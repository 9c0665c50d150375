// Package secrets defines where API keys come from and caches them so a
// rotated secret takes effect within the cache's lifetime.
package secrets

import (
	"context"
	"errors"
)

// ErrNotFound is returned (wrapped) when the secret does not exist.
var ErrNotFound = errors.New("secret not found")

// Source returns the current value of a named secret.
type Source interface {
	Secret(ctx context.Context, id string) (string, error)
}
