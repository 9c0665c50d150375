package secrets

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// DefaultEnvVar is the variable Env reads when Var is empty.
const DefaultEnvVar = "AUTOPILOT_API_KEY"

// Env reads one secret from an environment variable, for local mode. It
// ignores the id: a laptop run has a single API key.
type Env struct {
	Var    string              // defaults to DefaultEnvVar
	Getenv func(string) string // defaults to os.Getenv
}

var _ Source = Env{}

// Secret returns the variable's value with surrounding white space removed
// (keys pasted from files often end in a newline). Unset or blank wraps
// ErrNotFound.
func (e Env) Secret(ctx context.Context, _ string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	name := e.Var
	if name == "" {
		name = DefaultEnvVar
	}
	getenv := e.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	value := strings.TrimSpace(getenv(name))
	if value == "" {
		return "", fmt.Errorf("environment variable %s is not set or blank: %w", name, ErrNotFound)
	}
	return value, nil
}

// Static is a fixed set of secrets by id, for tests.
type Static map[string]string

var _ Source = Static{}

// Secret returns the value stored under id, or an error wrapping ErrNotFound.
func (s Static) Secret(ctx context.Context, id string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	value, ok := s[id]
	if !ok {
		return "", fmt.Errorf("secret %s: %w", id, ErrNotFound)
	}
	return value, nil
}
