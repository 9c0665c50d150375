package secrets

import (
	"context"
	"errors"
	"testing"
)

// Not parallel: t.Setenv changes the process environment.
func TestEnv(t *testing.T) {
	tests := []struct {
		name    string
		src     Env
		env     map[string]string
		want    string
		wantErr error
	}{
		{"default variable", Env{}, map[string]string{DefaultEnvVar: testSecret}, testSecret, nil},
		{"custom variable", Env{Var: "OTHER_KEY"}, map[string]string{"OTHER_KEY": "k2", DefaultEnvVar: "k1"}, "k2", nil},
		{"trailing newline trimmed", Env{}, map[string]string{DefaultEnvVar: testSecret + "\n"}, testSecret, nil},
		{"unset", Env{Var: "SEGPILOT_TEST_UNSET_KEY"}, nil, "", ErrNotFound},
		{"blank", Env{}, map[string]string{DefaultEnvVar: "  \n"}, "", ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(DefaultEnvVar, "")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := tt.src.Secret(context.Background(), "ignored-id")
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Fatalf("Secret = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestStatic(t *testing.T) {
	t.Parallel()
	s := Static{"a": "1"}
	if got, err := s.Secret(context.Background(), "a"); err != nil || got != "1" {
		t.Fatalf("Secret(a) = %q, %v", got, err)
	}
	if _, err := s.Secret(context.Background(), "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Secret(b): err = %v, want ErrNotFound", err)
	}
}
