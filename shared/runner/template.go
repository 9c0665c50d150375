package runner

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// samDefaultTimeout is AWS::Serverless::Function's Timeout when neither the
// function nor Globals set one (SAM specification: default 3 seconds).
const samDefaultTimeout = 3 * time.Second

// FunctionTimeouts reads a SAM template (template.yaml) and returns, for
// each DefinitionSubstitutions name of its state machine that is a
// function's ARN ("SyncBatchFunctionArn": !GetAtt SyncBatchFunction.Arn),
// that function's Timeout: what Lambda enforces, so what the runner must.
func FunctionTimeouts(template []byte) (map[string]time.Duration, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(template))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parsing template: %w", err)
	}
	if len(doc.Content) != 1 {
		return nil, fmt.Errorf("parsing template: not a YAML document")
	}
	root := doc.Content[0]
	resources := child(root, "Resources")
	if resources == nil {
		return nil, fmt.Errorf("template has no Resources")
	}
	def := samDefaultTimeout
	if g := child(child(child(root, "Globals"), "Function"), "Timeout"); g != nil {
		d, err := seconds(g)
		if err != nil {
			return nil, fmt.Errorf("Globals.Function.Timeout: %w", err)
		}
		def = d
	}
	out := map[string]time.Duration{}
	machines := 0
	for i := 0; i+1 < len(resources.Content); i += 2 {
		res := resources.Content[i+1]
		if scalar(child(res, "Type")) != "AWS::Serverless::StateMachine" {
			continue
		}
		machines++
		subs := child(child(res, "Properties"), "DefinitionSubstitutions")
		for j := 0; subs != nil && j+1 < len(subs.Content); j += 2 {
			name, value := subs.Content[j].Value, subs.Content[j+1]
			fn, ok := getAttArn(value)
			if !ok {
				continue
			}
			r := child(resources, fn)
			if scalar(child(r, "Type")) != "AWS::Serverless::Function" {
				continue
			}
			d := def
			if t := child(child(r, "Properties"), "Timeout"); t != nil {
				var err error
				if d, err = seconds(t); err != nil {
					return nil, fmt.Errorf("%s.Timeout: %w", fn, err)
				}
			}
			out[name] = d
		}
	}
	if machines != 1 {
		return nil, fmt.Errorf("template has %d AWS::Serverless::StateMachine resources, want 1", machines)
	}
	return out, nil
}

// getAttArn recognises "!GetAtt X.Arn" and {"Fn::GetAtt": [X, Arn]}.
func getAttArn(n *yaml.Node) (string, bool) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!GetAtt" {
		fn, attr, ok := strings.Cut(n.Value, ".")
		return fn, ok && attr == "Arn"
	}
	if a := child(n, "Fn::GetAtt"); a != nil && a.Kind == yaml.SequenceNode && len(a.Content) == 2 {
		return a.Content[0].Value, a.Content[1].Value == "Arn"
	}
	return "", false
}

func seconds(n *yaml.Node) (time.Duration, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, fmt.Errorf("not a literal number of seconds (a !Ref cannot be enforced locally)")
	}
	s, err := strconv.Atoi(n.Value)
	if err != nil || s <= 0 {
		return 0, fmt.Errorf("%q is not a whole number of seconds", n.Value)
	}
	return time.Duration(s) * time.Second, nil
}

func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}
