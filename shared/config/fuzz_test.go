package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad checks that no input makes Load panic, and that what it accepts
// or refuses is self-consistent.
func FuzzLoad(f *testing.F) {
	for _, pattern := range []string{"testdata/*.yaml", "testdata/invalid/*.yaml"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Add([]byte("a: &a [*a]\nconnections: *a\nexports: {x: *a}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Load("fuzz.yaml", data)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("want a *ValidationError with problems, got %T %v", err, err)
			}
			if got, want := strings.Count(err.Error(), "\n")+1, len(ve.Problems); got != want || want > maxProblems+1 {
				t.Fatalf("error has %d lines for %d problems", got, want)
			}
			return
		}
		if len(cfg.Exports) == 0 || !strings.HasPrefix(cfg.Version, "sha256:") {
			t.Fatalf("accepted config without exports or version: %+v", cfg)
		}
		for name, e := range cfg.Exports {
			if e.Name != name || cfg.ConnectionOf(e) == nil || e.Match.Email == "" || e.MaxProfiles <= 0 {
				t.Fatalf("accepted inconsistent export %+v", e)
			}
			if !(e.MaxRemovalShare > 0 && e.MaxRemovalShare <= 1) {
				t.Fatalf("accepted maxRemovalShare %v", e.MaxRemovalShare)
			}
			if err := cfg.Runnable(e); err != nil {
				var nr *NotRunnableError
				if !errors.As(err, &nr) || (nr.Code != CodeDisabled && nr.Code != CodeNoConsent) {
					t.Fatalf("Runnable gave %T %v", err, err)
				}
			}
			if got := e.Mapping(); len(got.Custom) != len(e.Match.Custom) {
				t.Fatalf("mapping has %d custom fields, match %d", len(got.Custom), len(e.Match.Custom))
			}
		}
		for _, c := range cfg.Connections {
			if CheckBaseURL(c.BaseURL) != nil || !(c.RequestsPerSecond > 0 && c.RequestsPerSecond <= 100) {
				t.Fatalf("accepted inconsistent connection %+v", c)
			}
		}
	})
}
