// Package kinds is the registry of destinations: a connection's kind
// names one of them. Adding a destination is an adapter package
// implementing shared/dest, its simulator, and one line here.
package kinds

import (
	"slices"

	"github.com/segpilot/segpilot/shared/autopilot"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/ortto"
)

var registry = []dest.Kind{
	autopilot.Kind(),
	ortto.Kind(),
}

// Lookup returns the kind called name.
func Lookup(name string) (dest.Kind, bool) {
	i := slices.IndexFunc(registry, func(k dest.Kind) bool { return k.Name == name })
	if i < 0 {
		return dest.Kind{}, false
	}
	return registry[i], true
}

// Names lists the kinds, in registry order.
func Names() []string {
	names := make([]string, len(registry))
	for i, k := range registry {
		names[i] = k.Name
	}
	return names
}
