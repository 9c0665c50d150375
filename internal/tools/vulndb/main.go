// Command vulndb turns a golang.org/x/vulndb module snapshot into a Go
// vulnerability database in the v1 layout that `govulncheck -db file://DIR`
// reads (index/db.json, index/modules.json, index/vulns.json, ID/<id>.json),
// so govulncheck works where only the Go module proxy is reachable. It does
// what the vulndb repo's gendb does, without its git clone and dependencies.
//
// Usage:
//
//	go mod download -json golang.org/x/vulndb@VERSION | go run ./internal/tools/vulndb -out DIR
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

func main() {
	out := flag.String("out", "", "directory to write the database into (created if missing)")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: go mod download -json golang.org/x/vulndb@VERSION | vulndb -out DIR")
		os.Exit(2)
	}
	if err := run(os.Stdin, *out, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "vulndb: %v\n", err)
		os.Exit(1)
	}
}

func run(download io.Reader, out string, log io.Writer) error {
	snap, err := readSnapshot(download)
	if err != nil {
		return err
	}
	// The snapshot's OSV files carry no modified times (gendb takes them from
	// git history), so the snapshot's commit time stands in: an upper bound.
	db, err := build(filepath.Join(snap.Dir, "data", "osv"), filepath.Join(out, "ID"), snap.Time)
	if err != nil {
		return err
	}
	if err := db.writeIndex(filepath.Join(out, "index")); err != nil {
		return err
	}
	_, err = fmt.Fprintf(log, "vulndb: %d entries for %d modules from golang.org/x/vulndb@%s (snapshot %s) in %s\n",
		len(db.vulns), len(db.modules), snap.Version, snap.Time.Format(time.RFC3339), out)
	return err
}

// snapshot is the part of `go mod download -json` output this tool needs.
type snapshot struct {
	Version string
	Dir     string
	Time    time.Time
}

func readSnapshot(r io.Reader) (snapshot, error) {
	var dl struct {
		Version, Dir, Info, Error string
	}
	if err := json.NewDecoder(r).Decode(&dl); err != nil {
		return snapshot{}, fmt.Errorf("decoding go mod download -json output: %w", err)
	}
	if dl.Error != "" {
		return snapshot{}, fmt.Errorf("go mod download: %s", dl.Error)
	}
	if dl.Dir == "" || dl.Info == "" {
		return snapshot{}, errors.New("go mod download -json output lacks Dir or Info")
	}
	b, err := os.ReadFile(dl.Info)
	if err != nil {
		return snapshot{}, fmt.Errorf("reading module info: %w", err)
	}
	var info struct{ Time time.Time }
	if err := json.Unmarshal(b, &info); err != nil {
		return snapshot{}, fmt.Errorf("decoding module info %s: %w", dl.Info, err)
	}
	if info.Time.IsZero() {
		return snapshot{}, fmt.Errorf("module info %s has no time", dl.Info)
	}
	return snapshot{Version: dl.Version, Dir: dl.Dir, Time: info.Time.UTC()}, nil
}

// entry is the part of an OSV entry the indexes are built from.
type entry struct {
	ID       string   `json:"id"`
	Aliases  []string `json:"aliases,omitempty"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
		Ranges []osvRange `json:"ranges"`
	} `json:"affected"`
}

type osvRange struct {
	Type   string `json:"type"`
	Events []struct {
		Introduced string `json:"introduced,omitempty"`
		Fixed      string `json:"fixed,omitempty"`
	} `json:"events"`
}

// The index types mirror golang.org/x/vulndb/internal/database.
type dbMeta struct {
	Modified time.Time `json:"modified"`
}

type module struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

type vuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
}

type database struct {
	modified time.Time
	modules  map[string]*module
	vulns    map[string]*vuln
}

// build copies every OSV entry in src unchanged to idDir/<id>.json and
// returns the indexes over them.
func build(src, idDir string, modified time.Time) (*database, error) {
	files, err := filepath.Glob(filepath.Join(src, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", src, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no OSV entries in %s", src)
	}
	if err := os.MkdirAll(idDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", idDir, err)
	}
	db := &database{modified: modified, modules: map[string]*module{}, vulns: map[string]*vuln{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading entry: %w", err)
		}
		var e entry
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", f, err)
		}
		// govulncheck fetches ID/<id>.json, so the name must match the id.
		if e.ID == "" || filepath.Base(f) != e.ID+".json" {
			return nil, fmt.Errorf("%s: entry id %q does not match the file name", f, e.ID)
		}
		if err := db.add(e); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(idDir, e.ID+".json"), b, 0o644); err != nil {
			return nil, fmt.Errorf("writing entry %s: %w", e.ID, err)
		}
	}
	return db, nil
}

func (db *database) add(e entry) error {
	if _, ok := db.vulns[e.ID]; ok {
		return fmt.Errorf("entry %s appears twice", e.ID)
	}
	db.vulns[e.ID] = &vuln{ID: e.ID, Modified: db.modified, Aliases: e.Aliases}
	for _, a := range e.Affected {
		m, ok := db.modules[a.Package.Name]
		if !ok {
			m = &module{Path: a.Package.Name, Vulns: []moduleVuln{}}
			db.modules[a.Package.Name] = m
		}
		m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: db.modified, Fixed: latestFixed(a.Ranges)})
	}
	return nil
}

func (db *database) writeIndex(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	modules := make([]*module, 0, len(db.modules))
	for _, m := range db.modules {
		slices.SortFunc(m.Vulns, func(a, b moduleVuln) int { return strings.Compare(a.ID, b.ID) })
		modules = append(modules, m)
	}
	slices.SortFunc(modules, func(a, b *module) int { return strings.Compare(a.Path, b.Path) })
	vulns := make([]*vuln, 0, len(db.vulns))
	for _, v := range db.vulns {
		vulns = append(vulns, v)
	}
	slices.SortFunc(vulns, func(a, b *vuln) int { return strings.Compare(a.ID, b.ID) })

	for name, v := range map[string]any{
		"db.json":      dbMeta{Modified: db.modified},
		"modules.json": modules,
		"vulns.json":   vulns,
	} {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

// latestFixed is the version from which no SEMVER range is affected any more,
// or "" if there is none; a copy of vulndb's osvutils.LatestFixed, because a
// too-early answer would make govulncheck skip a real vulnerability.
func latestFixed(ranges []osvRange) string {
	var latest string
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, e := range r.Events {
			if e.Fixed != "" && compareSemver(latest, e.Fixed) < 0 {
				latest = e.Fixed
			}
		}
		// Re-introduced after the latest fix: nothing is fixed for good.
		for _, e := range r.Events {
			if e.Introduced != "" && e.Introduced != "0" && compareSemver(latest, e.Introduced) < 0 {
				latest = ""
				break
			}
		}
	}
	return latest
}

// compareSemver compares unprefixed semantic versions the way
// golang.org/x/mod/semver.Compare does with a "v" added: invalid versions
// sort before valid ones and equal to each other; build metadata is ignored.
func compareSemver(a, b string) int {
	pa, okA := parseSemver(a)
	pb, okB := parseSemver(b)
	switch {
	case !okA && !okB:
		return 0
	case !okA:
		return -1
	case !okB:
		return 1
	}
	for i := range pa.nums {
		if c := compareNum(pa.nums[i], pb.nums[i]); c != 0 {
			return c
		}
	}
	return comparePrerelease(pa.pre, pb.pre)
}

type semver struct {
	nums [3]string // major, minor, patch
	pre  []string  // prerelease identifiers
}

func parseSemver(v string) (semver, bool) {
	var s semver
	core, tail := v, ""
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		core, tail = v[:i], v[i:]
	}
	parts := strings.Split(core, ".")
	if len(parts) > 3 || (len(parts) < 3 && tail != "") {
		return s, false // "1" and "1.2" are shorthands only without suffixes
	}
	s.nums = [3]string{"0", "0", "0"}
	for i, p := range parts {
		if !isNum(p) {
			return s, false
		}
		s.nums[i] = p
	}
	tail, build, hasBuild := strings.Cut(tail, "+")
	if hasBuild && !validIdents(build, false) {
		return s, false
	}
	if pre, ok := strings.CutPrefix(tail, "-"); ok {
		if !validIdents(pre, true) {
			return s, false
		}
		s.pre = strings.Split(pre, ".")
	}
	return s, true
}

func isNum(s string) bool {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	return strings.Trim(s, "0123456789") == ""
}

func validIdents(s string, prerelease bool) bool {
	for id := range strings.SplitSeq(s, ".") {
		if id == "" || strings.Trim(id, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-") != "" {
			return false
		}
		if prerelease && len(id) > 1 && id[0] == '0' && strings.Trim(id, "0123456789") == "" {
			return false // numeric prerelease identifiers have no leading zeros
		}
	}
	return true
}

// compareNum compares decimal strings without leading zeros.
func compareNum(a, b string) int {
	if c := len(a) - len(b); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func comparePrerelease(a, b []string) int {
	switch {
	case len(a) == 0 && len(b) == 0:
		return 0
	case len(a) == 0:
		return 1 // a release sorts after its prereleases
	case len(b) == 0:
		return -1
	}
	for i := 0; i < len(a) && i < len(b); i++ {
		na, nb := isNum(a[i]), isNum(b[i])
		var c int
		switch {
		case na && nb:
			c = compareNum(a[i], b[i])
		case na:
			c = -1
		case nb:
			c = 1
		default:
			c = strings.Compare(a[i], b[i])
		}
		if c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}
