package testutil

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"
)

// ExampleConfig is the shipped examples/exports.yaml with only the
// connections of the given kinds and the exports sending to them: tests
// that drive one destination (against its simulator alone) use it; the
// example's one-segment-to-both move is tested in internal/e2e.
func ExampleConfig(t testing.TB, kinds ...string) []byte {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", "examples", "exports.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	root := doc.Content[0]
	kept := map[string]bool{}
	conns := value(root, "connections")
	for i := 0; i+1 < len(conns.Content); {
		if k := value(conns.Content[i+1], "kind"); k != nil && slices.Contains(kinds, k.Value) {
			kept[conns.Content[i].Value] = true
			i += 2
			continue
		}
		conns.Content = slices.Delete(conns.Content, i, i+2)
	}
	exports := value(root, "exports")
	for i := 0; i+1 < len(exports.Content); {
		if c := value(exports.Content[i+1], "connection"); c != nil && kept[c.Value] {
			i += 2
			continue
		}
		exports.Content = slices.Delete(exports.Content, i, i+2)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// value is a mapping's value under key, or nil.
func value(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}
