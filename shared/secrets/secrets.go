// Package secrets defines where API keys come from and caches them so a
// rotated secret takes effect within the cache's lifetime.
package secrets

import (
	"context"
	"errors"
)

// ErrNotFound is returned (wrapped) when the secret does not exist.
var ErrNotFound = errors.New("secret not found")

// ErrEmpty is returned (wrapped) when the secret exists but holds no key:
// the deployed stack creates it so, for the user to fill in.
var ErrEmpty = errors.New("secret holds no key")

// Source returns the current value of a named secret.
type Source interface {
	Secret(ctx context.Context, id string) (string, error)
}
