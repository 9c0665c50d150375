package main

import (
	"context"
	"fmt"
)

// The bundled sample: examples/exports.yaml and a few thousand
// Customer-Insights-style profiles.
const (
	demoConfig = "examples/exports.yaml"
	demoFile   = "examples/segments/vip-customers.csv"
	demoExport = "vip-newsletter"
	demoBucket = ".segpilot/demo"
)

func cmdDemo(ctx context.Context, e *env, args []string) error {
	f := runFlags{}
	fs := e.runFlagSet("demo", &f, runFlags{configPath: demoConfig, export: demoExport, file: demoFile, bucketDir: demoBucket})
	if err := e.parse(fs, args); err != nil {
		return err
	}
	// The real API only when a key is given; else the embedded simulator.
	f.t.baseURL = e.getenv("AUTOPILOT_BASE_URL")
	f.t.useSim = f.t.useSim || e.getenv("AUTOPILOT_API_KEY") == ""
	if !e.json {
		fmt.Fprintf(e.stdout, "segpilot demo: exporting %s with %s (bucket folder %s)\n", f.file, f.configPath, f.bucketDir)
	}
	return e.runExport(ctx, f)
}
