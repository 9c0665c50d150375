package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
)

// The bundled sample: examples/exports.yaml and a few thousand
// Customer-Insights-style profiles.
const (
	demoConfig = "examples/exports.yaml"
	demoFile   = "examples/segments/vip-customers.csv"
	demoBucket = ".segpilot/demo"
)

// demoExports are the sample's exports by destination (make run DEST=…):
// one segment, one export to each kind.
var demoExports = map[string]string{"autopilot": "vip-newsletter", "ortto": "vip-newsletter-ortto"}

func cmdDemo(ctx context.Context, e *env, args []string) error {
	f := runFlags{}
	fs := e.runFlagSet("demo", &f, runFlags{configPath: demoConfig, file: demoFile, bucketDir: demoBucket})
	destination := fs.String("dest", "autopilot", "the sample export to run: autopilot or ortto (--export overrides)")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if f.export == "" {
		if f.export = demoExports[*destination]; f.export == "" {
			return usageError{fmt.Sprintf("--dest %q: want autopilot or ortto%s", *destination, didYouMean(*destination, slices.Sorted(maps.Keys(demoExports))))}
		}
	}
	// The real API only when its key is given; else the built-in simulator.
	f.t.baseURLs = baseURLsFromEnv(e.getenv)
	f.t.useSim = f.t.useSim || e.getenv(envName(*destination, "API_KEY")) == ""
	if !e.json {
		fmt.Fprintf(e.stdout, "segpilot demo: exporting %s with %s (bucket folder %s)\n", f.file, f.configPath, f.bucketDir)
	}
	return e.runExport(ctx, f)
}
