// Package buildinfo names the build a binary came from: its version and
// commit. The Makefile stamps them (-ldflags -X): a build without Go's own
// VCS stamp (-buildvcs=false, or source copied without .git, as sam build
// does) has no other way to know them. Otherwise they come from Go's stamp,
// when the build has one.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set by the Makefile's builds with -ldflags -X; modified is "true" when
// the working tree had changes.
var version, commit, modified string

// Info is what a build knows of itself; Commit is "" when it knows none.
type Info struct {
	Version string `json:"version"`
	Commit  string `json:"commit,omitempty"`
	Go      string `json:"go"`
}

// Read returns this binary's Info.
func Read() Info {
	i := Info{Version: version, Commit: commit, Go: runtime.Version()}
	dirty := modified == "true"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if i.Version == "" {
			i.Version = bi.Main.Version
		}
		if i.Commit == "" {
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					i.Commit = s.Value
				case "vcs.modified":
					dirty = s.Value == "true"
				}
			}
		}
	}
	if i.Version == "" {
		i.Version = "(devel)"
	}
	if i.Commit != "" && dirty {
		i.Commit += " (modified)"
	}
	return i
}
