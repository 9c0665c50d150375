// Package templatetest checks template.yaml: the wiring SAM cannot check
// before a deploy (events, schedule, substitutions, log groups) and the
// security rules (least-privilege IAM, no secret values, a locked-down bucket).
//
// goformation's typed parse drops intrinsics, so most checks walk the template
// as plain maps with intrinsics kept as {"Ref": ...}, {"Fn::Sub": ...}.
// goformation's YAML processing shares state between calls, so these tests do
// not run in parallel.
package templatetest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"github.com/awslabs/goformation/v7/intrinsics"

	"github.com/segpilot/segpilot/internal/lambdaapp"
	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/run"
)

const (
	templatePath     = "../../template.yaml"
	makefilePath     = "../../Makefile"
	stateMachinePath = "../../statemachine/export.asl.json"
)

var functionIDs = []string{"IngestFunction", "SyncBatchFunction", "FinalizeFunction", "RefreshFunction"}

type obj = map[string]any

// rawTemplate returns template.yaml as maps, intrinsics unprocessed.
func rawTemplate(t *testing.T) obj {
	t.Helper()
	data, err := os.ReadFile(templatePath)
	if err != nil {
		t.Fatalf("reading template: %v", err)
	}
	js, err := intrinsics.ProcessYAML(data, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		t.Fatalf("parsing template: %v", err)
	}
	var tmpl obj
	if err := json.Unmarshal(js, &tmpl); err != nil {
		t.Fatalf("decoding template: %v", err)
	}
	return tmpl
}

// at follows keys through nested maps and returns nil when any is missing.
func at(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(obj)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func resource(t *testing.T, tmpl obj, id string) obj {
	t.Helper()
	r, ok := at(tmpl, "Resources", id).(obj)
	if !ok {
		t.Fatalf("resource %s is missing", id)
	}
	return r
}

func ref(id string) obj { return obj{"Ref": id} }

// getAtt normalises both spellings of Fn::GetAtt to "Resource.Attribute".
func getAtt(v any) string {
	switch a := at(v, "Fn::GetAtt").(type) {
	case string:
		return a
	case []any:
		parts := make([]string, len(a))
		for i, p := range a {
			parts[i] = fmt.Sprint(p)
		}
		return strings.Join(parts, ".")
	}
	return ""
}

// strings of a value that may be one string or a list of them.
func stringList(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, stringList(e)...)
		}
		return out
	}
	return nil
}

func asList(v any) []any {
	if l, ok := v.([]any); ok {
		return l
	}
	if v == nil {
		return nil
	}
	return []any{v}
}

// unmodelled lists Function properties goformation v7.14.9 does not know and
// rejects; they are removed before its typed parse and checked on the maps.
var unmodelled = []string{"LoggingConfig"}

// typedTemplate parses the template with goformation (as goformation.Open
// would) after removing the unmodelled properties.
func typedTemplate(t *testing.T) *cloudformation.Template {
	t.Helper()
	raw := rawTemplate(t)
	for _, r := range raw["Resources"].(obj) {
		if at(r, "Type") != "AWS::Serverless::Function" {
			continue
		}
		props, _ := at(r, "Properties").(obj)
		for _, field := range unmodelled {
			delete(props, field)
		}
	}
	js, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := goformation.ParseJSON(js)
	if err != nil {
		t.Fatalf("goformation: %v", err)
	}
	return tmpl
}

func TestFunctionsBuildWithMakefile(t *testing.T) {
	tmpl := typedTemplate(t)
	fns := tmpl.GetAllServerlessFunctionResources()
	var names []string
	for name := range fns {
		names = append(names, name)
	}
	sort.Strings(names)
	want := slices.Clone(functionIDs)
	sort.Strings(want)
	if !slices.Equal(names, want) {
		t.Fatalf("functions = %v, want %v", names, want)
	}
	makefile, err := os.ReadFile(makefilePath)
	if err != nil {
		t.Fatalf("reading Makefile: %v", err)
	}
	for _, id := range functionIDs {
		fn := fns[id]
		if got := deref(fn.Runtime); got != "provided.al2023" {
			t.Errorf("%s Runtime = %q, want provided.al2023", id, got)
		}
		if !slices.Equal(fn.Architectures, []string{"arm64"}) {
			t.Errorf("%s Architectures = %v, want [arm64]", id, fn.Architectures)
		}
		if got := deref(fn.Handler); got != "bootstrap" {
			t.Errorf("%s Handler = %q, want bootstrap", id, got)
		}
		if fn.CodeUri == nil || deref(fn.CodeUri.String) != "." {
			t.Errorf("%s CodeUri is not \".\"", id)
		}
		if got := fn.AWSCloudFormationMetadata["BuildMethod"]; got != "makefile" {
			t.Errorf("%s Metadata.BuildMethod = %v, want makefile", id, got)
		}
		if mem := deref(fn.MemorySize); mem < 512 || mem > 1024 {
			t.Errorf("%s MemorySize = %d, want 512..1024", id, mem)
		}
		target := regexp.MustCompile(`(?m)^build-` + id + `:`)
		if !target.Match(makefile) {
			t.Errorf("Makefile has no target build-%s: (sam build calls it)", id)
		}
	}
	wantTimeouts := map[string]int{"IngestFunction": 900, "RefreshFunction": 900, "SyncBatchFunction": 300}
	for id, want := range wantTimeouts {
		if got := deref(fns[id].Timeout); got != want {
			t.Errorf("%s Timeout = %d, want %d", id, got, want)
		}
	}
	for _, id := range []string{"IngestFunction", "RefreshFunction"} {
		if es := fns[id].EphemeralStorage; es == nil || es.Size < 2048 {
			t.Errorf("%s needs EphemeralStorage >= 2048 MB for spill files", id)
		}
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// samTranslated is template.yaml as CloudFormation deploys it: expanded by
// the AWS SAM translator (the image's python3 with aws-sam-translator).
func samTranslated(t *testing.T) obj {
	t.Helper()
	python := testutil.NeedTool(t, "python3", "the image's pyenv python3 with aws-sam-translator (pip install aws-sam-translator)")
	if python == "" {
		return nil
	}
	if err := exec.Command(python, "-c", "import samtranslator").Run(); err != nil {
		testutil.MissingTool(t, "the python module samtranslator", "pip install aws-sam-translator")
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "testdata/sam_translate.py", templatePath)
	cmd.Env = append(os.Environ(), "AWS_DEFAULT_REGION=us-east-1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("SAM translation: %v\n%s", err, stderr.String())
	}
	var cfn obj
	if err := json.Unmarshal(out, &cfn); err != nil {
		t.Fatalf("SAM translation output: %v", err)
	}
	return cfn
}

// TestIngestS3EventOnSegmentsPrefix: objects created under segments/ (a
// segment file) and kicks/ (a run ended: drain its export's queue) invoke
// ingest, and only this bucket may invoke it. SAM's S3 event grants S3
// the invoke with SourceAccount alone (any bucket of the account could
// invoke ingest); the notification and the permission are therefore
// written out, the permission scoped to the bucket by SourceArn. Checked on
// the CloudFormation the SAM translator makes, which is what deploys.
func TestIngestS3EventOnSegmentsPrefix(t *testing.T) {
	raw := rawTemplate(t)
	name, vars := bucketName(t, raw)
	bucketARN := obj{"Fn::Sub": []any{"arn:${AWS::Partition}:s3:::" + name, vars}}
	cfn := samTranslated(t)
	var s3Permissions []string
	for id, r := range cfn["Resources"].(obj) {
		if at(r, "Type") != "AWS::Lambda::Permission" || at(r, "Properties", "Principal") != "s3.amazonaws.com" {
			continue
		}
		s3Permissions = append(s3Permissions, id)
		props := at(r, "Properties")
		if !reflect.DeepEqual(at(props, "SourceArn"), bucketARN) {
			t.Errorf("%s SourceArn = %v, want the bucket's ARN %v", id, at(props, "SourceArn"), bucketARN)
		}
		if !reflect.DeepEqual(at(props, "SourceAccount"), ref("AWS::AccountId")) {
			t.Errorf("%s SourceAccount = %v, want !Ref AWS::AccountId", id, at(props, "SourceAccount"))
		}
		if !reflect.DeepEqual(at(props, "FunctionName"), ref("IngestFunction")) && getAtt(at(props, "FunctionName")) != "IngestFunction.Arn" {
			t.Errorf("%s lets S3 invoke %v, want IngestFunction", id, at(props, "FunctionName"))
		}
	}
	if len(s3Permissions) != 1 {
		t.Fatalf("S3 may invoke functions through %v, want one permission", s3Permissions)
	}
	bucket := at(cfn, "Resources", "Bucket")
	if deps := stringList(at(bucket, "DependsOn")); !slices.Contains(deps, s3Permissions[0]) {
		t.Errorf("Bucket DependsOn %v: S3 checks the permission when the notification is set, so it must exist first", deps)
	}
	configs := asList(at(bucket, "Properties", "NotificationConfiguration", "LambdaConfigurations"))
	var prefixes []string
	for _, nc := range configs {
		if getAtt(at(nc, "Function")) != "IngestFunction.Arn" || !strings.HasPrefix(fmt.Sprint(at(nc, "Event")), "s3:ObjectCreated:") {
			t.Errorf("notification %v; want s3:ObjectCreated:* to IngestFunction", nc)
		}
		for _, rule := range asList(at(nc, "Filter", "S3Key", "Rules")) {
			if strings.EqualFold(fmt.Sprint(at(rule, "Name")), "prefix") {
				prefixes = append(prefixes, fmt.Sprint(at(rule, "Value")))
			}
		}
	}
	if !slices.Equal(prefixes, []string{"segments/", run.KicksPrefix}) {
		t.Errorf("notification prefix filters = %v, want [segments/ %s], one notification each", prefixes, run.KicksPrefix)
	}
}

// TestStateMachineUsesThePartition: the definition names its service
// integrations with the stack's partition, so it deploys in aws-cn and
// aws-us-gov too.
func TestStateMachineUsesThePartition(t *testing.T) {
	asl, err := os.ReadFile(stateMachinePath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(asl), "arn:aws:") {
		t.Error("the definition hard-codes arn:aws:; use arn:${Partition}:")
	}
	resources := regexp.MustCompile(`"Resource":\s*"([^"]*)"`).FindAllSubmatch(asl, -1)
	if len(resources) < 3 {
		t.Fatalf("found %d Resource fields; the search is broken", len(resources))
	}
	for _, m := range resources {
		if !strings.HasPrefix(string(m[1]), "arn:${Partition}:states:::") {
			t.Errorf("Resource %s does not start with arn:${Partition}:states:::", m[1])
		}
	}
	sub := at(resource(t, rawTemplate(t), "ExportStateMachine"), "Properties", "DefinitionSubstitutions", "Partition")
	if !reflect.DeepEqual(sub, ref("AWS::Partition")) {
		t.Errorf("DefinitionSubstitutions.Partition = %v, want !Ref AWS::Partition", sub)
	}
}

func TestRefreshScheduleRetriesAndDeadLetters(t *testing.T) {
	tmpl := rawTemplate(t)
	resources := tmpl["Resources"].(obj)
	var found int
	for id, r := range resources {
		if at(r, "Type") != "AWS::Scheduler::Schedule" || getAtt(at(r, "Properties", "Target", "Arn")) != "RefreshFunction.Arn" ||
			id == "SweepScheduleRule" { // TestSweepScheduleOnlySweeps
			continue
		}
		found++
		props := at(r, "Properties")
		if !reflect.DeepEqual(at(props, "ScheduleExpression"), ref("RefreshSchedule")) {
			t.Errorf("%s ScheduleExpression = %v, want !Ref RefreshSchedule", id, at(props, "ScheduleExpression"))
		}
		if n, _ := at(props, "Target", "RetryPolicy", "MaximumRetryAttempts").(float64); n < 1 {
			t.Errorf("%s has no RetryPolicy with MaximumRetryAttempts >= 1", id)
		}
		dlq := getAtt(at(props, "Target", "DeadLetterConfig", "Arn"))
		if dlq != "RefreshDeadLetterQueue.Arn" || at(resources["RefreshDeadLetterQueue"], "Type") != "AWS::SQS::Queue" {
			t.Errorf("%s DeadLetterConfig = %q, want the RefreshDeadLetterQueue SQS queue", id, dlq)
		}
		role := getAtt(at(props, "Target", "RoleArn"))
		roleID, _, _ := strings.Cut(role, ".")
		actions := allowedActions(t, at(resources[roleID], "Properties", "Policies"))
		if !reflect.DeepEqual(actions, []string{"lambda:InvokeFunction", "sqs:SendMessage"}) {
			t.Errorf("%s role %s may %v, want exactly invoke + dead-letter", id, roleID, actions)
		}
	}
	if found != 1 {
		t.Fatalf("found %d schedules targeting RefreshFunction, want 1", found)
	}
	if def := at(tmpl, "Parameters", "RefreshSchedule", "Default"); def != "rate(1 day)" {
		t.Errorf("RefreshSchedule default = %v, want rate(1 day)", def)
	}
}

func TestStateMachineSubstitutionsMatchDefinition(t *testing.T) {
	tmpl := rawTemplate(t)
	props := at(resource(t, tmpl, "ExportStateMachine"), "Properties")
	if uri := at(props, "DefinitionUri"); uri != "statemachine/export.asl.json" {
		t.Fatalf("DefinitionUri = %v, want statemachine/export.asl.json", uri)
	}
	asl, err := os.ReadFile(stateMachinePath)
	if os.IsNotExist(err) {
		t.Skip("statemachine/export.asl.json does not exist yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(asl) {
		t.Fatal("statemachine/export.asl.json is not valid JSON")
	}
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(`\$\{([A-Za-z0-9_]+)\}`).FindAllSubmatch(asl, -1) {
		used[string(m[1])] = true
	}
	subs, _ := at(props, "DefinitionSubstitutions").(obj)
	for name := range used {
		if _, ok := subs[name]; !ok {
			t.Errorf("definition uses ${%s} but DefinitionSubstitutions does not set it", name)
		}
	}
	for name := range subs {
		if !used[name] {
			t.Errorf("DefinitionSubstitutions sets %s, which the definition never uses", name)
		}
	}
	if getAtt(subs["SyncBatchFunctionArn"]) != "SyncBatchFunction.Arn" || getAtt(subs["FinalizeFunctionArn"]) != "FinalizeFunction.Arn" {
		t.Errorf("function substitutions = %v / %v, want the functions' ARNs", subs["SyncBatchFunctionArn"], subs["FinalizeFunctionArn"])
	}
}

// statements returns every IAM statement in the template (role policies,
// SAM inline policies, bucket policies...), with where it was found.
func statements(v any, path string, out map[string]obj) {
	switch x := v.(type) {
	case obj:
		for k, child := range x {
			if k == "Statement" {
				for i, st := range asList(child) {
					if m, ok := st.(obj); ok {
						out[fmt.Sprintf("%s/Statement[%d]", path, i)] = m
					}
				}
				continue
			}
			statements(child, path+"/"+k, out)
		}
	case []any:
		for i, child := range x {
			statements(child, fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
}

// TestNoWildcardActions: no Allow statement may grant a wildcard action
// ("*", "s3:*", "s3:Get*") or use NotAction. Deny statements may: denying
// everything over plain HTTP is the point of the bucket policy.
func TestNoWildcardActions(t *testing.T) {
	all := map[string]obj{}
	statements(rawTemplate(t), "", all)
	var allows int
	for where, st := range all {
		if at(st, "Effect") == "Deny" {
			continue
		}
		allows++
		if st["NotAction"] != nil {
			t.Errorf("%s: Allow with NotAction", where)
		}
		actions := stringList(st["Action"])
		if len(actions) == 0 {
			t.Errorf("%s: Allow without a literal Action list", where)
		}
		for _, a := range actions {
			if strings.Contains(a, "*") {
				t.Errorf("%s: wildcard action %q", where, a)
			}
		}
	}
	if allows < 10 {
		t.Fatalf("found only %d Allow statements; the walk is broken", allows)
	}
}

// allowedActions lists, sorted and de-duplicated, the actions every Allow
// statement under v grants.
func allowedActions(t *testing.T, v any) []string {
	t.Helper()
	found := map[string]obj{}
	statements(v, "", found)
	set := map[string]bool{}
	for _, st := range found {
		if at(st, "Effect") != "Deny" {
			for _, a := range stringList(st["Action"]) {
				set[a] = true
			}
		}
	}
	var out []string
	for a := range set {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

func TestFunctionPermissionsAreLeast(t *testing.T) {
	tmpl := rawTemplate(t)
	want := map[string][]string{
		"IngestFunction":    {"s3:DeleteObject", "s3:GetObject", "s3:ListBucket", "s3:PutObject", "secretsmanager:GetSecretValue", "states:DescribeExecution", "states:StartExecution"},
		"RefreshFunction":   {"s3:DeleteObject", "s3:GetObject", "s3:ListBucket", "s3:PutObject", "secretsmanager:GetSecretValue", "sqs:SendMessage", "states:DescribeExecution", "states:StartExecution"},
		"SyncBatchFunction": {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "secretsmanager:GetSecretValue"},
		// Finalize ends an attempt and starts nothing: it reads results,
		// writes the report and state, and kicks the queue.
		"FinalizeFunction": {"s3:GetObject", "s3:ListBucket", "s3:PutObject"},
	}
	for id, wantActions := range want {
		props := at(resource(t, tmpl, id), "Properties")
		for _, p := range asList(at(props, "Policies")) {
			if _, ok := p.(obj); !ok {
				t.Errorf("%s has a managed policy %v; use inline statements", id, p)
			}
		}
		if got := allowedActions(t, at(props, "Policies")); !slices.Equal(got, wantActions) {
			t.Errorf("%s may %v, want exactly %v", id, got, wantActions)
		}
	}

	// Each connection's key is its own secret, named segpilot/…: the
	// functions read those and no other (not "*", not all of the account's).
	secretARN := obj{"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:segpilot/*"}
	for _, id := range []string{"IngestFunction", "RefreshFunction", "SyncBatchFunction"} {
		found := map[string]obj{}
		statements(at(resource(t, tmpl, id), "Properties", "Policies"), "", found)
		reads := 0
		for where, st := range found {
			if !slices.Contains(stringList(st["Action"]), "secretsmanager:GetSecretValue") {
				continue
			}
			reads++
			if len(stringList(st["Action"])) != 1 || !reflect.DeepEqual(st["Resource"], secretARN) {
				t.Errorf("%s%s reads secrets %v %v, want only secretsmanager:GetSecretValue on %v", id, where, st["Action"], st["Resource"], secretARN)
			}
		}
		if reads != 1 {
			t.Errorf("%s has %d statements reading secrets, want 1 (it resolves lists or sends batches)", id, reads)
		}
	}
	executionsARN := executionsARNByName(t, tmpl)
	machineARN := map[string]any{
		"IngestFunction":  ref("ExportStateMachine"),
		"RefreshFunction": ref("ExportStateMachine"),
	}
	for id, wantARN := range machineARN {
		found := map[string]obj{}
		statements(at(resource(t, tmpl, id), "Properties", "Policies"), "", found)
		for where, st := range found {
			actions := stringList(st["Action"])
			if slices.Contains(actions, "states:StartExecution") && !reflect.DeepEqual(st["Resource"], wantARN) {
				t.Errorf("%s%s starts %v, want only ExportStateMachine", id, where, st["Resource"])
			}
			// Describing is for the state machine's own executions, as
			// sfnstarter names them: execution:<machine name>:<run>.
			if slices.Contains(actions, "states:DescribeExecution") && (len(actions) != 1 || !reflect.DeepEqual(st["Resource"], executionsARN)) {
				t.Errorf("%s%s describes %v %v, want only states:DescribeExecution on %v", id, where, actions, st["Resource"], executionsARN)
			}
			if slices.Contains(actions, "secretsmanager:GetSecretValue") && !reflect.DeepEqual(st["Resource"], secretARN) {
				t.Errorf("%s%s reads secrets %v, want only the API key secret", id, where, st["Resource"])
			}
			// Deleting is only for handled queue entries and the waiting
			// records of folders now whole.
			if slices.Contains(actions, "s3:DeleteObject") {
				var deletes []string
				resources, _ := st["Resource"].([]any)
				for _, r := range resources {
					sub, _ := at(r, "Fn::Sub").([]any)
					if len(sub) == 2 {
						deletes = append(deletes, fmt.Sprint(sub[0])[strings.LastIndex(fmt.Sprint(sub[0]), "}")+1:])
					}
				}
				if want := []string{"/state/*/queue/*", "/state/*/pending/*"}; len(actions) != 1 || !slices.Equal(deletes, want) {
					t.Errorf("%s%s deletes %v %v, want only s3:DeleteObject on %v", id, where, actions, deletes, want)
				}
			}
		}
	}
}

// stateMachineARNByName is the state machine's ARN built from its fixed
// name, as finalize must name it (a !Ref would be circular: the state
// machine invokes finalize).
func stateMachineARNByName(t *testing.T, tmpl obj) any {
	t.Helper()
	sub, ok := at(resource(t, tmpl, "ExportStateMachine"), "Properties", "Name", "Fn::Sub").([]any)
	if !ok || len(sub) != 2 {
		t.Fatalf("ExportStateMachine.Name is not a two-argument !Sub")
	}
	return obj{"Fn::Sub": []any{"arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:" + fmt.Sprint(sub[0]), sub[1]}}
}

// executionsARNByName is the ARN pattern of the state machine's executions.
func executionsARNByName(t *testing.T, tmpl obj) any {
	t.Helper()
	sub := at(stateMachineARNByName(t, tmpl), "Fn::Sub").([]any)
	return obj{"Fn::Sub": []any{strings.Replace(fmt.Sprint(sub[0]), ":stateMachine:", ":execution:", 1) + ":*", sub[1]}}
}

// TestStateMachinePolicies checks the Distributed Map's needs: invoke both
// functions, read the item list, and run its own child executions.
func TestStateMachinePolicies(t *testing.T) {
	props := at(resource(t, rawTemplate(t), "ExportStateMachine"), "Properties")
	invoked := map[string]bool{}
	for _, p := range asList(at(props, "Policies")) {
		if fn := at(p, "LambdaInvokePolicy", "FunctionName"); fn != nil {
			invoked[fmt.Sprint(at(fn, "Ref"))] = true
		}
	}
	if !invoked["SyncBatchFunction"] || !invoked["FinalizeFunction"] || len(invoked) != 2 {
		t.Errorf("state machine may invoke %v, want SyncBatchFunction and FinalizeFunction", invoked)
	}
	got := allowedActions(t, at(props, "Policies"))
	// The ResultWriter's needs (Step Functions developer guide, "IAM
	// policies for ResultWriter"): put, get, and multipart upload clean-up.
	want := []string{"s3:AbortMultipartUpload", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:PutObject",
		"states:DescribeExecution", "states:StartExecution", "states:StopExecution"}
	if !slices.Equal(got, want) {
		t.Errorf("state machine may %v, want %v", got, want)
	}
	// Every S3 action is on runs/, where the items are read and the
	// Map's results written (the ResultWriter's Prefix is under the run's).
	found := map[string]obj{}
	statements(at(props, "Policies"), "", found)
	for where, st := range found {
		for _, a := range stringList(st["Action"]) {
			sub, _ := at(st["Resource"], "Fn::Sub").([]any)
			if strings.HasPrefix(a, "s3:") && (len(sub) != 2 || !strings.HasSuffix(fmt.Sprint(sub[0]), "/runs/*")) {
				t.Errorf("state machine%s: %s on %v, want only runs/*", where, a, st["Resource"])
			}
		}
	}
}

// TestMapWritesItsResultsToTheRun: a Distributed Map without a ResultWriter
// returns the array of every child's output, and past 256 KiB fails with
// States.DataLimitExceeded, which no Catch handles: finalize never runs and
// the export's lock stays held. Its results go to the run's prefix instead.
func TestMapWritesItsResultsToTheRun(t *testing.T) {
	asl, err := os.ReadFile(stateMachinePath)
	if err != nil {
		t.Fatal(err)
	}
	var def struct {
		States map[string]struct {
			Type         string
			ResultWriter struct {
				Resource   string
				Parameters map[string]string
			}
			ItemProcessor *struct {
				ProcessorConfig struct{ Mode string }
			}
		}
	}
	if err := json.Unmarshal(asl, &def); err != nil {
		t.Fatal(err)
	}
	var maps int
	for name, st := range def.States {
		if st.Type != "Map" || st.ItemProcessor == nil || st.ItemProcessor.ProcessorConfig.Mode != "DISTRIBUTED" {
			continue
		}
		maps++
		w := st.ResultWriter
		if !strings.HasSuffix(w.Resource, ":states:::s3:putObject") || w.Parameters["Bucket"] != "${BucketName}" ||
			w.Parameters["Prefix.$"] != "$.mapResultsPrefix" {
			t.Errorf("Map %s ResultWriter = %+v; want s3:putObject to ${BucketName} under $.mapResultsPrefix", name, w)
		}
	}
	if maps == 0 {
		t.Fatal("no Distributed Map in the definition")
	}
}

// bucketName is the expression building the bucket's name.
func bucketName(t *testing.T, tmpl obj) (string, any) {
	t.Helper()
	sub, ok := at(resource(t, tmpl, "Bucket"), "Properties", "BucketName", "Fn::Sub").([]any)
	if !ok || len(sub) != 2 {
		t.Fatalf("Bucket.BucketName is not a two-argument !Sub")
	}
	return sub[0].(string), sub[1]
}

// TestBucketNameCopiesMatch: everything the bucket's S3 event depends on must
// name the bucket without !Ref (a circular dependency otherwise), so the name
// is rebuilt in many places; each copy must be the bucket's own.
func TestBucketNameCopiesMatch(t *testing.T) {
	tmpl := rawTemplate(t)
	name, vars := bucketName(t, tmpl)
	if strings.ContainsAny(strings.NewReplacer("${AWS::AccountId}", "", "${AWS::Region}", "", "${StackSuffix}", "").Replace(name), "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") {
		t.Errorf("bucket name %q may contain characters S3 refuses", name)
	}
	want := at(resource(t, tmpl, "Bucket"), "Properties", "BucketName")
	for _, id := range functionIDs {
		if got := at(resource(t, tmpl, id), "Properties", "Environment", "Variables", "BUCKET"); !reflect.DeepEqual(got, want) {
			t.Errorf("%s BUCKET = %v, want the bucket's name expression", id, got)
		}
	}
	if got := at(resource(t, tmpl, "ExportStateMachine"), "Properties", "DefinitionSubstitutions", "BucketName"); !reflect.DeepEqual(got, want) {
		t.Errorf("state machine BucketName = %v, want the bucket's name expression", got)
	}

	var arns int
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case obj:
			if sub, ok := x["Fn::Sub"].([]any); ok && len(sub) == 2 {
				if s, _ := sub[0].(string); strings.Contains(s, ":s3:::") {
					arns++
					prefix := "arn:${AWS::Partition}:s3:::" + name
					if rest, ok := strings.CutPrefix(s, prefix); !ok || (rest != "" && !strings.HasPrefix(rest, "/")) {
						t.Errorf("S3 ARN %q does not name the bucket %q", s, name)
					}
					if !reflect.DeepEqual(sub[1], vars) {
						t.Errorf("S3 ARN %q builds its name from %v, want %v", s, sub[1], vars)
					}
				}
			}
			for _, child := range x {
				walk(child)
			}
		case []any:
			for _, child := range x {
				walk(child)
			}
		}
	}
	walk(tmpl["Resources"])
	if arns < 10 {
		t.Fatalf("found only %d built S3 ARNs; the walk is broken", arns)
	}
}

// TestEnvironmentHoldsNoSecretValues: no function's environment holds a
// secret's value, nor anything else that looks like a credential; the keys'
// secrets are named in the config (each connection's apiKeySecret), and the
// stack makes none.
func TestEnvironmentHoldsNoSecretValues(t *testing.T) {
	tmpl := rawTemplate(t)
	wantVars := map[string][]string{
		"IngestFunction":    {"BUCKET", "STATE_MACHINE_ARN"},
		"RefreshFunction":   {"BUCKET", "STATE_MACHINE_ARN"},
		"SyncBatchFunction": {"BUCKET"},
		"FinalizeFunction":  {"BUCKET"},
	}
	credentialName := regexp.MustCompile(`(?i)key|secret|token|password|credential`)
	for id, want := range wantVars {
		vars, _ := at(resource(t, tmpl, id), "Properties", "Environment", "Variables").(obj)
		var names []string
		for name, value := range vars {
			names = append(names, name)
			js, err := json.Marshal(value)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(js), "resolve:secretsmanager") || strings.Contains(string(js), "resolve:ssm-secure") ||
				strings.Contains(string(js), "SecretString") {
				t.Errorf("%s %s = %s resolves a secret value into the environment", id, name, js)
			}
			if _, literal := value.(string); literal && credentialName.MatchString(name) {
				t.Errorf("%s %s is a literal; credentials never go in the template", id, name)
			}
		}
		sort.Strings(names)
		if !slices.Equal(names, want) {
			t.Errorf("%s environment = %v, want %v", id, names, want)
		}
		wantARN := any(ref("ExportStateMachine"))
		if sm, ok := vars["STATE_MACHINE_ARN"]; ok && !reflect.DeepEqual(sm, wantARN) {
			t.Errorf("%s STATE_MACHINE_ARN = %v, want %v", id, sm, wantARN)
		}
	}
	resources, _ := tmpl["Resources"].(obj)
	for id, r := range resources {
		if at(r, "Type") == "AWS::SecretsManager::Secret" {
			t.Errorf("%s: the stack makes a secret; each connection's key is a segpilot/… secret of its own", id)
		}
	}
}

func TestBucketIsLockedDown(t *testing.T) {
	tmpl := rawTemplate(t)
	props := at(resource(t, tmpl, "Bucket"), "Properties")

	var algos []string
	for _, rule := range asList(at(props, "BucketEncryption", "ServerSideEncryptionConfiguration")) {
		algos = append(algos, fmt.Sprint(at(rule, "ServerSideEncryptionByDefault", "SSEAlgorithm")))
	}
	if len(algos) == 0 || !slices.ContainsFunc(algos, func(a string) bool { return a == "AES256" || strings.HasPrefix(a, "aws:kms") }) {
		t.Errorf("bucket encryption = %v, want AES256 or aws:kms", algos)
	}
	for _, flag := range []string{"BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"} {
		if v := at(props, "PublicAccessBlockConfiguration", flag); v != true && v != "true" {
			t.Errorf("PublicAccessBlockConfiguration.%s = %v, want true", flag, v)
		}
	}
	if v := at(props, "VersioningConfiguration", "Status"); v != "Enabled" {
		t.Errorf("versioning = %v, want Enabled", v)
	}
	var runsExpire bool
	for _, rule := range asList(at(props, "LifecycleConfiguration", "Rules")) {
		prefix := at(rule, "Prefix")
		if prefix == nil {
			prefix = at(rule, "Filter", "Prefix")
		}
		if prefix == "runs/" && at(rule, "Status") == "Enabled" && reflect.DeepEqual(at(rule, "ExpirationInDays"), ref("RunsRetentionDays")) {
			runsExpire = true
		}
	}
	if !runsExpire {
		t.Error("no enabled lifecycle rule expires runs/ after RunsRetentionDays")
	}
	if def := at(tmpl, "Parameters", "RunsRetentionDays", "Default"); def != float64(90) {
		t.Errorf("RunsRetentionDays default = %v, want 90", def)
	}

	var denies bool
	for id, r := range tmpl["Resources"].(obj) {
		if at(r, "Type") != "AWS::S3::BucketPolicy" || !reflect.DeepEqual(at(r, "Properties", "Bucket"), ref("Bucket")) {
			continue
		}
		for _, st := range asList(at(r, "Properties", "PolicyDocument", "Statement")) {
			insecure := at(st, "Condition", "Bool", "aws:SecureTransport")
			resources := asList(at(st, "Resource"))
			if at(st, "Effect") == "Deny" && (insecure == "false" || insecure == false) &&
				slices.Contains(stringList(at(st, "Action")), "s3:*") && len(resources) == 2 {
				denies = true
			}
		}
		if !denies {
			t.Errorf("%s does not deny every action on the bucket and its objects without TLS", id)
		}
	}
	if !denies {
		t.Error("no bucket policy denies requests without TLS")
	}
}

func TestEveryFunctionLogsToARetainedGroup(t *testing.T) {
	tmpl := rawTemplate(t)
	for _, id := range functionIDs {
		logging := at(resource(t, tmpl, id), "Properties", "LoggingConfig")
		if at(logging, "LogFormat") != "JSON" {
			t.Errorf("%s LogFormat = %v, want JSON", id, at(logging, "LogFormat"))
		}
		group, _ := at(logging, "LogGroup", "Ref").(string)
		lg, _ := at(tmpl, "Resources", group).(obj)
		if at(lg, "Type") != "AWS::Logs::LogGroup" {
			t.Errorf("%s LogGroup = %v, want !Ref to an AWS::Logs::LogGroup", id, at(logging, "LogGroup"))
			continue
		}
		if !reflect.DeepEqual(at(lg, "Properties", "RetentionInDays"), ref("LogRetentionDays")) {
			t.Errorf("%s log group %s RetentionInDays = %v, want !Ref LogRetentionDays", id, group, at(lg, "Properties", "RetentionInDays"))
		}
	}
	if def := at(tmpl, "Parameters", "LogRetentionDays", "Default"); def != float64(30) {
		t.Errorf("LogRetentionDays default = %v, want 30", def)
	}
}

// alarms returns every CloudWatch alarm of the template by id.
func alarms(t *testing.T, tmpl obj) map[string]obj {
	t.Helper()
	out := map[string]obj{}
	for id, r := range tmpl["Resources"].(obj) {
		if at(r, "Type") == "AWS::CloudWatch::Alarm" {
			out[id] = at(r, "Properties").(obj)
		}
	}
	return out
}

// emitted is the EMF record finalize (or ingest) writes for a failed run:
// the metric names and dimension sets the alarms can watch.
func emitted(t *testing.T) (namespace string, names []string, dimensionSets [][]string) {
	t.Helper()
	var b strings.Builder
	if err := run.EmitMetrics(&b, &run.Report{Export: "e", RunID: "r", Status: run.StatusFailed}); err != nil {
		t.Fatal(err)
	}
	var rec struct {
		AWS struct {
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name string }
			}
		} `json:"_aws"`
	}
	if err := json.Unmarshal([]byte(b.String()), &rec); err != nil || len(rec.AWS.CloudWatchMetrics) != 1 {
		t.Fatalf("EMF record %s: %v", b.String(), err)
	}
	cw := rec.AWS.CloudWatchMetrics[0]
	for _, m := range cw.Metrics {
		names = append(names, m.Name)
	}
	return cw.Namespace, names, cw.Dimensions
}

// TestAlarmsSeeEveryFailedRun: finalize writes a failed report and the
// execution still ends SUCCEEDED, and a run refused at ingest has no
// execution at all, so an alarm on Step Functions' ExecutionsFailed alone
// is blind to them. Runs' outcomes are metrics (EMF, namespace segpilot),
// alarmed on deployment-wide; the four functions' errors are alarmed too;
// every alarm tells one SNS topic.
func TestAlarmsSeeEveryFailedRun(t *testing.T) {
	tmpl := rawTemplate(t)
	all := alarms(t, tmpl)
	namespace, names, dimensionSets := emitted(t)
	if !slices.ContainsFunc(dimensionSets, func(d []string) bool { return len(d) == 0 }) {
		t.Fatalf("the metrics are published with dimension sets %v: without an empty one, no dimensionless alarm sees them", dimensionSets)
	}
	wantOutcome := map[string]string{"FailedRunsAlarm": "RunsFailed", "HeldRunsAlarm": "RunsHeld", "InvalidRunsAlarm": "RunsInvalid"}
	for id, metric := range wantOutcome {
		a, ok := all[id]
		if !ok {
			t.Errorf("alarm %s is missing", id)
			continue
		}
		if at(a, "Namespace") != namespace || at(a, "MetricName") != metric || at(a, "Dimensions") != nil ||
			at(a, "Statistic") != "Sum" || at(a, "Threshold") != float64(1) || at(a, "ComparisonOperator") != "GreaterThanOrEqualToThreshold" ||
			at(a, "TreatMissingData") != "notBreaching" {
			t.Errorf("%s = %v; want Sum of %s/%s (no dimension) >= 1, missing data not breaching", id, a, namespace, metric)
		}
		if !slices.Contains(names, metric) {
			t.Errorf("%s watches %s, which the code does not emit (it emits %v)", id, metric, names)
		}
	}
	// A finalize that fails for good (or an execution that times out)
	// fails the execution: no report says so, Step Functions does.
	executions := all["FailedExecutionsAlarm"]
	var statesMetrics []string
	for _, q := range asList(at(executions, "Metrics")) {
		if at(q, "MetricStat", "Metric", "Namespace") == "AWS/States" {
			statesMetrics = append(statesMetrics, fmt.Sprint(at(q, "MetricStat", "Metric", "MetricName")))
			dims := asList(at(q, "MetricStat", "Metric", "Dimensions"))
			if len(dims) != 1 || at(dims[0], "Name") != "StateMachineArn" || !reflect.DeepEqual(at(dims[0], "Value"), ref("ExportStateMachine")) {
				t.Errorf("FailedExecutionsAlarm metric dimensions %v, want StateMachineArn = !Ref ExportStateMachine", dims)
			}
		}
	}
	sort.Strings(statesMetrics)
	if !slices.Equal(statesMetrics, []string{"ExecutionsFailed", "ExecutionsTimedOut"}) {
		t.Errorf("FailedExecutionsAlarm watches %v; want ExecutionsFailed and ExecutionsTimedOut", statesMetrics)
	}
	// Each function's errors: ingest's and refresh's events are retried
	// and then dropped (or dead-lettered), finalize's fail the execution,
	// syncbatch's are retried by the state machine (so its alarm waits
	// for errors that persist).
	errorAlarms := map[string]string{}
	for id, a := range all {
		if at(a, "Namespace") == "AWS/Lambda" && at(a, "MetricName") == "Errors" {
			dims := asList(at(a, "Dimensions"))
			if len(dims) == 1 && at(dims[0], "Name") == "FunctionName" {
				fn, _ := at(dims[0], "Value", "Ref").(string)
				errorAlarms[fn] = id
			}
		}
	}
	for _, fn := range functionIDs {
		if errorAlarms[fn] == "" {
			t.Errorf("no Errors alarm for %s", fn)
		}
	}
	// One topic for all: every alarm tells it, whether or not an e-mail
	// is subscribed (others may subscribe to it: output AlarmTopicArn).
	if topic := resource(t, tmpl, "AlarmTopic"); at(topic, "Condition") != nil || at(topic, "Type") != "AWS::SNS::Topic" {
		t.Errorf("AlarmTopic must be an unconditional AWS::SNS::Topic")
	}
	if c := at(resource(t, tmpl, "AlarmEmailSubscription"), "Condition"); c != "HasAlarmEmail" {
		t.Errorf("AlarmEmailSubscription Condition = %v, want HasAlarmEmail", c)
	}
	if at(tmpl, "Outputs", "AlarmTopicArn", "Value") == nil {
		t.Error("output AlarmTopicArn is missing")
	}
	for id, a := range all {
		if actions := asList(at(a, "AlarmActions")); len(actions) != 1 || !reflect.DeepEqual(actions[0], ref("AlarmTopic")) {
			t.Errorf("%s AlarmActions = %v; want [!Ref AlarmTopic]", id, at(a, "AlarmActions"))
		}
	}
}

// TestCfnLint runs cfn-lint, which expands the SAM transform and so also
// catches circular dependencies and invalid property values.
func TestCfnLint(t *testing.T) {
	lint := testutil.NeedTool(t, "cfn-lint", "pip install cfn-lint")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, lint, "template.yaml")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cfn-lint template.yaml: %v\n%s", err, out)
	}
}

func TestParametersAndOutputs(t *testing.T) {
	tmpl := rawTemplate(t)
	params, _ := tmpl["Parameters"].(obj)
	for _, name := range []string{"RefreshSchedule", "RunsRetentionDays", "LogRetentionDays", "AlarmEmail"} {
		if params[name] == nil {
			t.Errorf("parameter %s is missing", name)
		}
	}
	for name, p := range params {
		if d, _ := at(p, "Description").(string); strings.TrimSpace(d) == "" {
			t.Errorf("parameter %s has no Description", name)
		}
	}
	for _, name := range []string{"AlarmEmail"} {
		if def := at(params, name, "Default"); def != "" {
			t.Errorf("parameter %s Default = %v, want empty", name, def)
		}
	}
	outputs, _ := tmpl["Outputs"].(obj)
	for _, name := range []string{"BucketName", "StateMachineArn", "RefreshFunctionName"} {
		if at(outputs, name, "Value") == nil {
			t.Errorf("output %s is missing", name)
		}
	}
}

// TestLogLevelReachesTheFunctions: the functions log with aws-lambda-go's
// lambdacontext logger, which takes its level from AWS_LAMBDA_LOG_LEVEL,
// which Lambda sets from LoggingConfig.ApplicationLogLevel (upper case).
// The LogLevel parameter must end there, not in a variable nothing reads.
func TestLogLevelReachesTheFunctions(t *testing.T) {
	tmpl := rawTemplate(t)
	param := at(tmpl, "Parameters", "LogLevel")
	levels := stringList(at(param, "AllowedValues"))
	if len(levels) == 0 {
		t.Fatal("parameter LogLevel has no AllowedValues")
	}
	want := obj{"Fn::FindInMap": []any{"LogLevels", ref("LogLevel"), "Application"}}
	for _, id := range functionIDs {
		logging := at(resource(t, tmpl, id), "Properties", "LoggingConfig")
		if got := at(logging, "ApplicationLogLevel"); !reflect.DeepEqual(got, want) {
			t.Errorf("%s LoggingConfig.ApplicationLogLevel = %v, want %v", id, got, want)
		}
		if v := at(resource(t, tmpl, id), "Properties", "Environment", "Variables", "LOG_LEVEL"); v != nil {
			t.Errorf("%s sets LOG_LEVEL, which no code reads", id)
		}
	}
	// The upper-case names lambdacontext understands (others mean INFO).
	understood := []string{"DEBUG", "INFO", "WARN", "ERROR"}
	for _, l := range levels {
		got, _ := at(tmpl, "Mappings", "LogLevels", l, "Application").(string)
		if got != strings.ToUpper(l) || !slices.Contains(understood, got) {
			t.Errorf("LogLevels mapping of %q = %q, want %q", l, got, strings.ToUpper(l))
		}
	}
}

// TestScheduleIsRecordedAsScheduled: what the schedule sends must be what
// the refresh handler takes for the schedule, or every scheduled run's
// report says "manual".
func TestScheduleIsRecordedAsScheduled(t *testing.T) {
	tmpl := rawTemplate(t)
	input, _ := at(resource(t, tmpl, "RefreshScheduleRule"), "Properties", "Target", "Input").(string)
	var ev lambdaapp.RefreshEvent
	if err := json.Unmarshal([]byte(input), &ev); err != nil {
		t.Fatalf("schedule Input %q: %v", input, err)
	}
	if got := lambdaapp.TriggerOf(ev); got != run.TriggerSchedule {
		t.Fatalf("the schedule's Input %s is taken for trigger %q, want %q", input, got, run.TriggerSchedule)
	}
	if ev.Export != "" || ev.DryRun || ev.AllowLargeRemoval || ev.Sweep {
		t.Fatalf("the schedule's Input %s narrows the refresh; it must re-run every enabled export", input)
	}
}

// TestSweepScheduleOnlySweeps: the sweep schedule's input is taken for a
// sweep (drain every queue), never for a refresh, which would re-run every
// export every five minutes; and it comes back within the grace's order.
func TestSweepScheduleOnlySweeps(t *testing.T) {
	tmpl := rawTemplate(t)
	rule := resource(t, tmpl, "SweepScheduleRule")
	input, _ := at(rule, "Properties", "Target", "Input").(string)
	var ev lambdaapp.RefreshEvent
	if err := json.Unmarshal([]byte(input), &ev); err != nil {
		t.Fatalf("sweep Input %q: %v", input, err)
	}
	if !ev.Sweep || ev.Export != "" || ev.Trigger != "" {
		t.Fatalf("the sweep schedule's Input %s is not a sweep", input)
	}
	if expr := at(rule, "Properties", "ScheduleExpression"); expr != "rate(5 minutes)" {
		t.Fatalf("sweep schedule %v; want rate(5 minutes)", expr)
	}
	if target := at(rule, "Properties", "Target", "Arn"); !reflect.DeepEqual(target, obj{"Fn::GetAtt": "RefreshFunction.Arn"}) {
		t.Fatalf("the sweep schedule targets %v, want the refresh function", target)
	}
}
