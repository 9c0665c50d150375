package runner

import (
	"encoding/json"
	"fmt"
	"strings"
)

// contextObject is what "$$" paths read: the Map item being processed.
type contextObject struct {
	Map struct {
		Item struct {
			Index int `json:"Index"`
			Value any `json:"Value"`
		} `json:"Item"`
	} `json:"Map"`
}

// lookup resolves a reference path ("$", "$.a.b", "$$.Map.Item.Value.x").
func lookup(path string, input any, ctxObj *contextObject) (any, error) {
	var root any = input
	rest := path
	switch {
	case strings.HasPrefix(path, "$$"):
		if ctxObj == nil {
			return nil, fmt.Errorf("path %s: no context object here", path)
		}
		b, err := json.Marshal(ctxObj)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &root); err != nil {
			return nil, err
		}
		rest = path[2:]
	case strings.HasPrefix(path, "$"):
		rest = path[1:]
	default:
		return nil, fmt.Errorf("path %q must start with $", path)
	}
	cur := root
	for _, part := range strings.Split(strings.TrimPrefix(rest, "."), ".") {
		if part == "" {
			continue
		}
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("path %s: %q is not an object", path, part)
		}
		if cur, ok = m[part]; !ok {
			return nil, fmt.Errorf("path %s: no field %q", path, part)
		}
	}
	return cur, nil
}

// applyParameters builds a Parameters (or BatchInput) object: keys ending in
// ".$" are paths, others are copied (recursing into objects).
func applyParameters(tmpl json.RawMessage, input any, ctxObj *contextObject, subst func(string) (any, bool)) (any, error) {
	var t any
	if err := json.Unmarshal(tmpl, &t); err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	return expand(t, input, ctxObj, subst)
}

func expand(t any, input any, ctxObj *contextObject, subst func(string) (any, bool)) (any, error) {
	switch v := t.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, val := range v {
			if name, ok := strings.CutSuffix(k, ".$"); ok {
				p, isStr := val.(string)
				if !isStr {
					return nil, fmt.Errorf("parameter %s: path must be a string", k)
				}
				res, err := lookup(p, input, ctxObj)
				if err != nil {
					return nil, fmt.Errorf("parameter %s: %w", k, err)
				}
				out[name] = res
				continue
			}
			res, err := expand(val, input, ctxObj, subst)
			if err != nil {
				return nil, err
			}
			out[k] = res
		}
		return out, nil
	case string:
		if name, ok := Placeholder(v); ok && subst != nil {
			if res, ok := subst(name); ok {
				return res, nil
			}
		}
		return v, nil
	default:
		return v, nil
	}
}

// setResult places result into input at a ResultPath ("$" replaces, "$.x" sets a field).
func setResult(input any, path string, result any) (any, error) {
	if path == "$" {
		return result, nil
	}
	parts := strings.Split(strings.TrimPrefix(path, "$."), ".")
	root, ok := cloneObject(input)
	if !ok {
		return nil, fmt.Errorf("result path %s: input is not an object", path)
	}
	cur := root
	for _, part := range parts[:len(parts)-1] {
		next, ok := cloneObject(cur[part])
		if !ok {
			next = map[string]any{}
		}
		cur[part] = next
		cur = next
	}
	cur[parts[len(parts)-1]] = result
	return root, nil
}

func cloneObject(v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	out := make(map[string]any, len(m))
	for k, val := range m {
		out[k] = val
	}
	return out, true
}
