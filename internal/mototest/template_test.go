//go:build unix

package mototest

import (
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The account and region the stack is "deployed" into: moto's default
// account, and a region of the project's sample events.
const (
	accountID = "123456789012"
	region    = "eu-west-1"
	partition = "aws"
	stackName = "segpilot"
	// stackID is what CloudFormation would give the stack; the template
	// builds the bucket's and the state machine's names from its UUID.
	stackID = "arn:aws:cloudformation:" + region + ":" + accountID + ":stack/" + stackName + "/5d1f3c2a-8b4e-11f0-9c3d-0a1b2c3d4e5f"
)

// repoRoot is the repository, two levels above this package.
var repoRoot = filepath.Join("..", "..")

// stack is template.yaml as CloudFormation (after the SAM transform) would
// deploy it into moto: its intrinsic functions evaluated with the stack's
// pseudo parameters, the parameters' defaults, and the physical names of
// the resources this test creates. It knows what the pipeline needs (the
// functions, the bucket and its notifications, the state machine) and
// refuses, naming it, anything else a value refers to, so a template change
// the test does not model fails here rather than deploying something else.
type stack struct {
	root, resources *yaml.Node
	params          map[string]string
	ref, arn        map[string]string // logical id -> Ref and Fn::GetAtt .Arn
}

// function is an AWS::Serverless::Function as deployed.
type function struct {
	logicalID, name, arn string
	source               string            // the functions/<source> package the Makefile builds it from
	env                  map[string]string // Environment.Variables and what Lambda adds from LoggingConfig
	timeout              int               // seconds
	memory               int               // MB
}

// notification is one of the bucket's LambdaConfigurations.
type notification struct {
	event          string // s3:ObjectCreated:*
	function       string // logical id
	prefix, suffix string
}

// stateMachine is the AWS::Serverless::StateMachine as deployed.
type stateMachine struct {
	name, arn  string
	definition string // DefinitionUri's file with DefinitionSubstitutions filled in
}

func readStack() (*stack, error) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "template.yaml"))
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("template.yaml: %w", err)
	}
	s := &stack{root: doc.Content[0], params: map[string]string{}, ref: map[string]string{}, arn: map[string]string{}}
	s.resources = child(s.root, "Resources")
	if s.resources == nil {
		return nil, fmt.Errorf("template.yaml has no Resources")
	}
	params := child(s.root, "Parameters")
	for i := 0; params != nil && i+1 < len(params.Content); i += 2 {
		if d := child(params.Content[i+1], "Default"); d != nil {
			s.params[params.Content[i].Value] = d.Value
		}
	}
	// Physical names first: values refer to each other's.
	for id, res := range s.each("AWS::Serverless::Function") {
		if name := child(child(res, "Properties"), "FunctionName"); name != nil {
			return nil, fmt.Errorf("%s sets FunctionName; the test names functions as CloudFormation does when none is set", id)
		}
		name := physicalName(id)
		s.ref[id] = name
		s.arn[id] = "arn:" + partition + ":lambda:" + region + ":" + accountID + ":function:" + name
	}
	for id, res := range s.each("AWS::Serverless::StateMachine") {
		name, err := s.str(child(child(res, "Properties"), "Name"))
		if err != nil {
			return nil, fmt.Errorf("%s.Name: %w", id, err)
		}
		s.ref[id] = "arn:" + partition + ":states:" + region + ":" + accountID + ":stateMachine:" + name
		s.arn[id] = s.ref[id]
	}
	for id, res := range s.each("AWS::S3::Bucket") {
		name, err := s.str(child(child(res, "Properties"), "BucketName"))
		if err != nil {
			return nil, fmt.Errorf("%s.BucketName: %w", id, err)
		}
		s.ref[id] = name
		s.arn[id] = "arn:" + partition + ":s3:::" + name
	}
	return s, nil
}

// physicalName is the name CloudFormation gives a function without a
// FunctionName: stack-LogicalId-SUFFIX (the suffix here is fixed per id).
func physicalName(logicalID string) string {
	h := fnv.New64a()
	h.Write([]byte(logicalID))
	return fmt.Sprintf("%s-%s-%012X", stackName, logicalID, h.Sum64()&0xFFFFFFFFFFFF)
}

// each yields the resources of type typ, in template order.
func (s *stack) each(typ string) func(func(string, *yaml.Node) bool) {
	return func(yield func(string, *yaml.Node) bool) {
		for i := 0; i+1 < len(s.resources.Content); i += 2 {
			res := s.resources.Content[i+1]
			if scalar(child(res, "Type")) == typ && !yield(s.resources.Content[i].Value, res) {
				return
			}
		}
	}
}

// functions are the template's functions, with the package each is built
// from (the Makefile's build-<LogicalId> target, which sam build runs).
func (s *stack) functions() ([]function, error) {
	sources, err := makefileSources()
	if err != nil {
		return nil, err
	}
	globals := child(child(s.root, "Globals"), "Function")
	var out []function
	for id, res := range s.each("AWS::Serverless::Function") {
		props := child(res, "Properties")
		fn := function{logicalID: id, name: s.ref[id], arn: s.arn[id], source: sources[id], env: map[string]string{},
			timeout: 3, memory: 128} // SAM's defaults
		if fn.source == "" {
			return nil, fmt.Errorf("the Makefile has no build-%s target naming ./functions/<name>", id)
		}
		for _, events := range []*yaml.Node{child(props, "Events")} {
			for i := 0; events != nil && i+1 < len(events.Content); i += 2 {
				if typ := scalar(child(events.Content[i+1], "Type")); typ == "S3" {
					return nil, fmt.Errorf("%s has a SAM S3 event (%s); the test delivers only the bucket's NotificationConfiguration", id, events.Content[i].Value)
				}
			}
		}
		for _, layer := range []*yaml.Node{globals, props} { // the function's own settings win
			for key, into := range map[string]*int{"Timeout": &fn.timeout, "MemorySize": &fn.memory} {
				if n := child(layer, key); n != nil {
					v, err := s.str(n)
					if err != nil {
						return nil, fmt.Errorf("%s.%s: %w", id, key, err)
					}
					if *into, err = strconv.Atoi(v); err != nil {
						return nil, fmt.Errorf("%s.%s: %q is not a number", id, key, v)
					}
				}
			}
			vars := child(child(layer, "Environment"), "Variables")
			for i := 0; vars != nil && i+1 < len(vars.Content); i += 2 {
				v, err := s.str(vars.Content[i+1])
				if err != nil {
					return nil, fmt.Errorf("%s: environment variable %s: %w", id, vars.Content[i].Value, err)
				}
				fn.env[vars.Content[i].Value] = v
			}
			// Lambda passes the logging configuration on as these.
			if logging := child(layer, "LoggingConfig"); logging != nil {
				for key, envName := range map[string]string{"LogFormat": "AWS_LAMBDA_LOG_FORMAT", "ApplicationLogLevel": "AWS_LAMBDA_LOG_LEVEL"} {
					if n := child(logging, key); n != nil {
						v, err := s.str(n)
						if err != nil {
							return nil, fmt.Errorf("%s.LoggingConfig.%s: %w", id, key, err)
						}
						fn.env[envName] = v
					}
				}
			}
		}
		out = append(out, fn)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("template.yaml has no AWS::Serverless::Function")
	}
	return out, nil
}

var buildTarget = regexp.MustCompile(`(?m)^build-(\w+):\s*\n\t.*\./functions/(\w+)\s*$`)

// makefileSources maps each function's logical id to the package its
// build-<LogicalId> target builds.
func makefileSources() (map[string]string, error) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, m := range buildTarget.FindAllStringSubmatch(string(raw), -1) {
		out[m[1]] = m[2]
	}
	return out, nil
}

// bucket returns the bucket's name, whether it is versioned, and the
// notifications it sends to functions.
func (s *stack) bucket() (name string, versioned bool, notes []notification, err error) {
	n := 0
	for id, res := range s.each("AWS::S3::Bucket") {
		n++
		name = s.ref[id]
		props := child(res, "Properties")
		versioned = scalar(child(child(props, "VersioningConfiguration"), "Status")) == "Enabled"
		conf := child(props, "NotificationConfiguration")
		for key := range mapKeys(conf) {
			if key != "LambdaConfigurations" {
				return "", false, nil, fmt.Errorf("%s.NotificationConfiguration.%s is not delivered by the test", id, key)
			}
		}
		for _, lc := range seq(child(conf, "LambdaConfigurations")) {
			arn, err := s.str(child(lc, "Function"))
			if err != nil {
				return "", false, nil, fmt.Errorf("%s notification: %w", id, err)
			}
			note := notification{event: scalar(child(lc, "Event"))}
			for fid, a := range s.arn {
				if a == arn && strings.Contains(a, ":function:") {
					note.function = fid
				}
			}
			if note.function == "" {
				return "", false, nil, fmt.Errorf("%s notifies %s, which is none of the template's functions", id, arn)
			}
			if !strings.HasPrefix(note.event, "s3:ObjectCreated:") {
				return "", false, nil, fmt.Errorf("%s notifies %s of %s; the test delivers s3:ObjectCreated:* only", id, note.function, note.event)
			}
			for _, rule := range seq(child(child(child(lc, "Filter"), "S3Key"), "Rules")) {
				v, err := s.str(child(rule, "Value"))
				if err != nil {
					return "", false, nil, err
				}
				switch strings.ToLower(scalar(child(rule, "Name"))) {
				case "prefix":
					note.prefix = v
				case "suffix":
					note.suffix = v
				}
			}
			notes = append(notes, note)
		}
	}
	if n != 1 {
		return "", false, nil, fmt.Errorf("template.yaml has %d AWS::S3::Bucket resources, want 1", n)
	}
	return name, versioned, notes, nil
}

// stateMachine reads the state machine's DefinitionUri and fills in its
// DefinitionSubstitutions as CloudFormation does: every ${Name} of the
// substitutions is replaced by its value. A ${...} left over would reach
// Step Functions as written, so it is an error here.
func (s *stack) stateMachine() (stateMachine, error) {
	var out []stateMachine
	for id, res := range s.each("AWS::Serverless::StateMachine") {
		props := child(res, "Properties")
		uri := scalar(child(props, "DefinitionUri"))
		if uri == "" {
			return stateMachine{}, fmt.Errorf("%s has no DefinitionUri (a local file)", id)
		}
		raw, err := os.ReadFile(filepath.Join(repoRoot, uri))
		if err != nil {
			return stateMachine{}, fmt.Errorf("%s.DefinitionUri: %w", id, err)
		}
		def := string(raw)
		subs := child(props, "DefinitionSubstitutions")
		for i := 0; subs != nil && i+1 < len(subs.Content); i += 2 {
			v, err := s.str(subs.Content[i+1])
			if err != nil {
				return stateMachine{}, fmt.Errorf("%s.DefinitionSubstitutions.%s: %w", id, subs.Content[i].Value, err)
			}
			def = strings.ReplaceAll(def, "${"+subs.Content[i].Value+"}", v)
		}
		if left := regexp.MustCompile(`\$\{[^}]*\}`).FindString(def); left != "" {
			return stateMachine{}, fmt.Errorf("%s: %s in %s has no DefinitionSubstitutions entry", id, left, uri)
		}
		arn := s.ref[id]
		out = append(out, stateMachine{name: arn[strings.LastIndex(arn, ":")+1:], arn: arn, definition: def})
	}
	if len(out) != 1 {
		return stateMachine{}, fmt.Errorf("template.yaml has %d AWS::Serverless::StateMachine resources, want 1", len(out))
	}
	return out[0], nil
}

// str evaluates n and wants a string.
func (s *stack) str(n *yaml.Node) (string, error) {
	if n == nil {
		return "", fmt.Errorf("missing")
	}
	v, err := s.eval(n)
	if err != nil {
		return "", err
	}
	str, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%v is not a string", v)
	}
	return str, nil
}

// eval evaluates a template value: literals, and the intrinsic functions
// in their short (!Ref) and long ({"Ref": ...}) forms that this template
// uses. Anything else is an error naming it.
func (s *stack) eval(n *yaml.Node) (any, error) {
	if n.Kind == yaml.MappingNode && len(n.Content) == 2 && (n.Content[0].Value == "Ref" || strings.HasPrefix(n.Content[0].Value, "Fn::")) {
		return s.intrinsic(strings.TrimPrefix(n.Content[0].Value, "Fn::"), n.Content[1])
	}
	if strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
		return s.intrinsic(n.Tag[1:], n)
	}
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Value, nil
	case yaml.SequenceNode:
		out := make([]any, len(n.Content))
		for i, c := range n.Content {
			v, err := s.eval(c)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	case yaml.MappingNode:
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, err := s.eval(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			out[n.Content[i].Value] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("line %d: cannot evaluate this node", n.Line)
}

func (s *stack) intrinsic(fn string, arg *yaml.Node) (any, error) {
	// The argument without the short form's tag.
	plain := *arg
	plain.Tag = ""
	args := func(n int) ([]any, error) {
		v, err := s.eval(&plain)
		if err != nil {
			return nil, err
		}
		list, ok := v.([]any)
		if !ok || len(list) != n {
			return nil, fmt.Errorf("line %d: %s wants %d arguments", arg.Line, fn, n)
		}
		return list, nil
	}
	switch fn {
	case "Ref":
		return s.lookup(arg.Value)
	case "GetAtt":
		if plain.Kind == yaml.SequenceNode {
			list, err := args(2)
			if err != nil {
				return nil, err
			}
			return s.lookup(fmt.Sprint(list[0]) + "." + fmt.Sprint(list[1]))
		}
		return s.lookup(arg.Value)
	case "Sub":
		if plain.Kind == yaml.ScalarNode {
			return s.sub(arg.Value, nil)
		}
		list, err := args(2)
		if err != nil {
			return nil, err
		}
		vars, ok := list[1].(map[string]any)
		format, isStr := list[0].(string)
		if !ok || !isStr {
			return nil, fmt.Errorf("line %d: Sub wants a string and a map", arg.Line)
		}
		return s.sub(format, vars)
	case "Select":
		list, err := args(2)
		if err != nil {
			return nil, err
		}
		i, err := strconv.Atoi(fmt.Sprint(list[0]))
		items, ok := list[1].([]any)
		if err != nil || !ok || i < 0 || i >= len(items) {
			return nil, fmt.Errorf("line %d: Select %v of %v", arg.Line, list[0], list[1])
		}
		return items[i], nil
	case "Split":
		list, err := args(2)
		if err != nil {
			return nil, err
		}
		var out []any
		for _, p := range strings.Split(fmt.Sprint(list[1]), fmt.Sprint(list[0])) {
			out = append(out, p)
		}
		return out, nil
	case "Join":
		list, err := args(2)
		if err != nil {
			return nil, err
		}
		items, ok := list[1].([]any)
		if !ok {
			return nil, fmt.Errorf("line %d: Join wants a list", arg.Line)
		}
		parts := make([]string, len(items))
		for i, it := range items {
			parts[i] = fmt.Sprint(it)
		}
		return strings.Join(parts, fmt.Sprint(list[0])), nil
	case "FindInMap":
		list, err := args(3)
		if err != nil {
			return nil, err
		}
		v := child(child(child(child(s.root, "Mappings"), fmt.Sprint(list[0])), fmt.Sprint(list[1])), fmt.Sprint(list[2]))
		if v == nil {
			return nil, fmt.Errorf("line %d: FindInMap %v: no such entry", arg.Line, list)
		}
		return s.eval(v)
	}
	return nil, fmt.Errorf("line %d: intrinsic function %s is not evaluated by this test", arg.Line, fn)
}

// lookup resolves a Ref or a GetAtt (name with a dot).
func (s *stack) lookup(name string) (string, error) {
	switch name {
	case "AWS::AccountId":
		return accountID, nil
	case "AWS::Region":
		return region, nil
	case "AWS::Partition":
		return partition, nil
	case "AWS::StackId":
		return stackID, nil
	case "AWS::StackName":
		return stackName, nil
	case "AWS::URLSuffix":
		return "amazonaws.com", nil
	}
	if res, attr, ok := strings.Cut(name, "."); ok {
		if v, ok := s.arn[res]; ok && attr == "Arn" {
			return v, nil
		}
		return "", fmt.Errorf("!GetAtt %s: not among what the test deploys", name)
	}
	if v, ok := s.params[name]; ok {
		return v, nil
	}
	if v, ok := s.ref[name]; ok {
		return v, nil
	}
	return "", fmt.Errorf("!Ref %s: not among what the test deploys", name)
}

var subVar = regexp.MustCompile(`\$\{([^}]*)\}`)

// sub is Fn::Sub: ${Var} from vars, else a Ref or GetAtt; ${!Literal}
// stays ${Literal}.
func (s *stack) sub(format string, vars map[string]any) (string, error) {
	var firstErr error
	out := subVar.ReplaceAllStringFunc(format, func(m string) string {
		name := m[2 : len(m)-1]
		if strings.HasPrefix(name, "!") {
			return "${" + name[1:] + "}"
		}
		if v, ok := vars[name]; ok {
			return fmt.Sprint(v)
		}
		v, err := s.lookup(name)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return v
	})
	return out, firstErr
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

func seq(n *yaml.Node) []*yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	return n.Content
}

func mapKeys(n *yaml.Node) func(func(string) bool) {
	return func(yield func(string) bool) {
		for i := 0; n != nil && n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
			if !yield(n.Content[i].Value) {
				return
			}
		}
	}
}
