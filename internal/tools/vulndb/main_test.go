package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompareSemver(t *testing.T) {
	t.Parallel()
	// Each version sorts strictly before the next (semver.org's example order
	// plus Go pseudo-versions); invalid versions sort first.
	ordered := []string{
		"", "1.07", "1.2.3-", "01.0.0",
		"0.0.0-20200101000000-abcdefabcdef", "0.0.0-20250721152936-fe86ceb2c3fa",
		"0.3.5", "0.3.7",
		"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
		"1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0",
		"1.2", "1.2.1", "1.26.9", "1.26.10", "1.27.0-0", "1.27.0", "10.0.0",
	}
	for i, a := range ordered {
		for j, b := range ordered {
			want := 0
			switch {
			case i < j:
				want = -1
			case i > j:
				want = 1
			}
			_, okA := parseSemver(a)
			_, okB := parseSemver(b)
			if !okA && !okB {
				want = 0
			}
			if got := sign(compareSemver(a, b)); got != want {
				t.Errorf("compareSemver(%q, %q) = %d, want %d", a, b, got, want)
			}
		}
	}
	if got := compareSemver("2.0.0+incompatible", "2.0.0"); got != 0 {
		t.Errorf("build metadata changed the order: %d", got)
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

func TestLatestFixed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		ranges string
		want   string
	}{
		{"one fix", `[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"0.3.7"}]}]`, "0.3.7"},
		{"later branch fix wins", `[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.26.10"},{"introduced":"1.27.0-0"},{"fixed":"1.27.3"}]}]`, "1.27.3"},
		{"numeric not lexical", `[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.26.9"},{"fixed":"1.26.10"}]}]`, "1.26.10"},
		{"reintroduced, unfixed", `[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.2.0"},{"introduced":"1.3.0"}]}]`, ""},
		{"never fixed", `[{"type":"SEMVER","events":[{"introduced":"0"}]}]`, ""},
		{"non-semver ignored", `[{"type":"GIT","events":[{"introduced":"0"},{"fixed":"1.0.0"}]}]`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ranges []osvRange
			if err := json.Unmarshal([]byte(tt.ranges), &ranges); err != nil {
				t.Fatal(err)
			}
			if got := latestFixed(ranges); got != tt.want {
				t.Errorf("latestFixed = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	mod := t.TempDir()
	osvDir := filepath.Join(mod, "data", "osv")
	entries := map[string]string{
		"GO-2021-0113": `{"id":"GO-2021-0113","modified":"0001-01-01T00:00:00Z","aliases":["CVE-2021-38561"],"affected":[{"package":{"name":"golang.org/x/text"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"0.3.7"}]}]}]}`,
		"GO-2026-6809": `{"id":"GO-2026-6809","affected":[{"package":{"name":"stdlib"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.26.10"}]}]},{"package":{"name":"golang.org/x/text"},"ranges":[]}]}`,
	}
	writeFiles(t, osvDir, entries)
	info := filepath.Join(mod, "v1.info")
	writeFiles(t, mod, map[string]string{"v1": `{"Version":"v1","Time":"2026-11-05T23:49:57Z"}`})
	download := fmt.Sprintf(`{"Version":"v1","Dir":%q,"Info":%q}`, mod, info)

	out := filepath.Join(t.TempDir(), "db")
	var log bytes.Buffer
	if err := run(strings.NewReader(download), out, &log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "2 entries for 2 modules") || !strings.Contains(log.String(), "snapshot 2026-11-05T23:49:57Z") {
		t.Errorf("log = %q", log.String())
	}
	const when = `"modified":"2026-11-05T23:49:57Z"`
	wantIndex := map[string]string{
		"db.json": `{` + when + `}`,
		"modules.json": `[{"path":"golang.org/x/text","vulns":[{"id":"GO-2021-0113",` + when + `,"fixed":"0.3.7"},{"id":"GO-2026-6809",` + when + `}]},` +
			`{"path":"stdlib","vulns":[{"id":"GO-2026-6809",` + when + `,"fixed":"1.26.10"}]}]`,
		"vulns.json": `[{"id":"GO-2021-0113",` + when + `,"aliases":["CVE-2021-38561"]},{"id":"GO-2026-6809",` + when + `}]`,
	}
	for name, want := range wantIndex {
		if got := readFile(t, filepath.Join(out, "index", name)); got != want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
	for id, want := range entries {
		if got := readFile(t, filepath.Join(out, "ID", id+".json")); got != want {
			t.Errorf("ID/%s.json changed:\n got %s\nwant %s", id, got, want)
		}
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		download string
		entries  map[string]string
		want     string
	}{
		{"download failed", `{"Error":"not found"}`, nil, "go mod download: not found"},
		{"no entries", "", map[string]string{}, "no OSV entries"},
		{"id mismatch", "", map[string]string{"GO-2020-0001": `{"id":"GO-2020-0002"}`}, "does not match"},
		{"bad json", "", map[string]string{"GO-2020-0001": `{`}, "decoding"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mod := t.TempDir()
			writeFiles(t, filepath.Join(mod, "data", "osv"), tt.entries)
			writeFiles(t, mod, map[string]string{"v1": `{"Time":"2026-11-05T23:49:57Z"}`})
			download := tt.download
			if download == "" {
				download = fmt.Sprintf(`{"Dir":%q,"Info":%q}`, mod, filepath.Join(mod, "v1.info"))
			}
			err := run(strings.NewReader(download), filepath.Join(t.TempDir(), "db"), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		ext := ".json"
		if name == "v1" {
			ext = ".info"
		}
		if err := os.WriteFile(filepath.Join(dir, name+ext), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
