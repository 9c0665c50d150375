// Command gen writes a sample segment file: go run ./internal/sample/gen -rows 3000 > file.csv
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/segpilot/segpilot/internal/sample"
)

func main() {
	var o sample.Options
	flag.IntVar(&o.Rows, "rows", 3000, "profiles")
	flag.Uint64Var(&o.Seed, "seed", 7, "seed")
	flag.IntVar(&o.Invalid, "invalid", 0, "every N-th row broken")
	flag.IntVar(&o.Dupes, "dupes", 0, "every N-th row duplicated")
	flag.IntVar(&o.Changed, "changed", 0, "per mille changed")
	flag.IntVar(&o.Removed, "removed", 0, "per mille removed")
	flag.IntVar(&o.Added, "added", 0, "profiles added")
	flag.Parse()
	if _, err := sample.Write(os.Stdout, o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
