// Package kinds is the registry of destinations: a connection's kind
// names one of them. Adding a destination is an adapter package
// implementing shared/dest, its simulator (on shared/simkit), and one line
// here.
package kinds

import (
	"fmt"
	"slices"
	"strings"

	"github.com/segpilot/segpilot/shared/autopilot"
	autopilotsim "github.com/segpilot/segpilot/shared/autopilot/sim"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/ortto"
	orttosim "github.com/segpilot/segpilot/shared/ortto/sim"
	"github.com/segpilot/segpilot/shared/simkit"
)

type entry struct {
	kind dest.Kind
	sim  func(simkit.Config) simkit.Simulator
}

var registry = []entry{
	{autopilot.Kind(), autopilotsim.Simulator},
	{ortto.Kind(), orttosim.Simulator},
}

// Lookup returns the kind called name.
func Lookup(name string) (dest.Kind, bool) {
	i := slices.IndexFunc(registry, func(e entry) bool { return e.kind.Name == name })
	if i < 0 {
		return dest.Kind{}, false
	}
	return registry[i].kind, true
}

// Names lists the kinds, in registry order.
func Names() []string {
	names := make([]string, len(registry))
	for i, e := range registry {
		names[i] = e.kind.Name
	}
	return names
}

// Simulator builds the simulator of the kind called name.
func Simulator(name string, c simkit.Config) (simkit.Simulator, error) {
	i := slices.IndexFunc(registry, func(e entry) bool { return e.kind.Name == name })
	if i < 0 {
		return nil, fmt.Errorf("no destination kind %q (kinds: %s)", name, strings.Join(Names(), ", "))
	}
	return registry[i].sim(c), nil
}
