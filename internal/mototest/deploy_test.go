//go:build unix

package mototest

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	sfntypes "github.com/aws/aws-sdk-go-v2/service/sfn/types"

	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

// deployment is template.yaml deployed into moto: the bucket, the
// functions (each run by the test's lambdaService), the state machine,
// and S3's notifications delivered to the functions they name.
type deployment struct {
	t       testing.TB
	moto    *motoServer
	lambda  *lambdaService
	bucket  string
	machine stateMachine
	s3      *s3.Client
	store   *s3store.Store
	sfn     *sfn.Client
	secrets *secretsmanager.Client
	notify  *notifier

	// What checkHealthy has reported already.
	reported                     map[string]bool // execution ARNs
	notifyChecked, lambdaChecked int
	deathsLogged                 int
}

// deploy does what sam deploy would, in moto, with the test standing in
// for Lambda's execution environments.
func deploy(t *testing.T) *deployment {
	t.Helper()
	st, err := readStack()
	if err != nil {
		t.Fatalf("reading template.yaml: %v", err)
	}
	fns, err := st.functions()
	if err != nil {
		t.Fatalf("template.yaml's functions: %v", err)
	}
	bucket, versioned, notes, err := st.bucket()
	if err != nil {
		t.Fatalf("template.yaml's bucket: %v", err)
	}
	machine, err := st.stateMachine()
	if err != nil {
		t.Fatalf("template.yaml's state machine: %v", err)
	}

	ls := newLambdaService(t)
	python := needMoto(t)

	// The bootstraps build while moto starts.
	var sources []string
	for _, fn := range fns {
		sources = append(sources, "functions/"+fn.source)
	}
	type built struct {
		paths map[string]string
		err   error
	}
	building := make(chan built, 1)
	buildDir := t.TempDir()
	go func() {
		paths, err := buildBootstraps(buildDir, slices.Compact(slices.Sorted(slices.Values(sources))))
		building <- built{paths, err}
	}()
	t.Cleanup(func() { <-building }) // before buildDir is removed

	m := startMoto(t, python, ls.srv.URL)
	cfg := awsConfig()
	d := &deployment{t: t, moto: m, lambda: ls, bucket: bucket, machine: machine,
		s3:       awsx.NewS3Client(cfg, m.url),
		sfn:      awsx.NewSFNClient(cfg, m.url),
		secrets:  awsx.NewSecretsClient(cfg, m.url),
		reported: map[string]bool{},
	}
	d.store = s3store.New(d.s3, bucket)
	ctx := context.Background()

	if _, err := d.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(region)}}); err != nil {
		t.Fatalf("creating bucket %s: %v", bucket, err)
	}
	if versioned { // then S3 events carry a versionId
		if _, err := d.s3.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: aws.String(bucket),
			VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled}}); err != nil {
			t.Fatalf("enabling versioning: %v", err)
		}
	}

	// One role for every function and the state machine: IAM is not what
	// this test checks (internal/templatetest does), and moto enforces none.
	roleDoc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":["lambda.amazonaws.com","states.amazonaws.com"]},"Action":"sts:AssumeRole"}]}`
	form := url.Values{"Action": {"CreateRole"}, "Version": {"2010-05-08"}, "RoleName": {stackName + "-role"}, "AssumeRolePolicyDocument": {roleDoc}}
	if _, err := m.call(ctx, "iam", "POST", "/", "application/x-www-form-urlencoded", []byte(form.Encode())); err != nil {
		t.Fatalf("creating the role: %v", err)
	}
	role := "arn:" + partition + ":iam::" + accountID + ":role/" + stackName + "-role"

	b := <-building
	building <- b // for the cleanup
	if b.err != nil {
		t.Fatal(b.err)
	}
	for _, fn := range fns {
		d.createFunction(ctx, fn, role, b.paths["functions/"+fn.source])
	}

	out, err := d.sfn.CreateStateMachine(ctx, &sfn.CreateStateMachineInput{Name: aws.String(machine.name),
		Definition: aws.String(machine.definition), RoleArn: aws.String(role), Type: sfntypes.StateMachineTypeStandard})
	if err != nil {
		t.Fatalf("moto refused the state machine template.yaml deploys: %v\n%s", err, m.logs)
	}
	if got := aws.ToString(out.StateMachineArn); got != machine.arn {
		t.Fatalf("state machine ARN %s; the functions are given %s", got, machine.arn)
	}

	d.notify = startNotifier(d, notes)
	return d
}

// createFunction creates fn in moto's Lambda (so Step Functions' and S3's
// invocations find it) and deploys it to the test's lambdaService, which
// runs it with the environment Lambda would give it: the template's
// variables, Lambda's own, and the endpoints of moto.
func (d *deployment) createFunction(ctx context.Context, fn function, role, bootstrap string) {
	d.t.Helper()
	// moto keeps the code and never runs it; the bootstrap runs from disk.
	var zipped bytes.Buffer
	zw := zip.NewWriter(&zipped)
	w, _ := zw.Create("bootstrap")
	fmt.Fprintf(w, "#!/bin/sh\n# %s: run by internal/mototest's lambdaService from %s\nexit 1\n", fn.name, bootstrap)
	zw.Close()
	req, _ := json.Marshal(map[string]any{
		"FunctionName": fn.name, "Runtime": "provided.al2023", "Handler": "bootstrap", "Role": role,
		"Code": map[string]any{"ZipFile": zipped.Bytes()}, "Timeout": fn.timeout, "MemorySize": fn.memory,
		"Environment": map[string]any{"Variables": fn.env},
	})
	out, err := d.moto.call(ctx, "lambda", "POST", "/2015-03-31/functions", "application/json", req)
	if err != nil {
		d.t.Fatalf("creating function %s: %v", fn.logicalID, err)
	}
	var created struct{ FunctionArn string }
	if err := json.Unmarshal(out, &created); err != nil || created.FunctionArn != fn.arn {
		d.t.Fatalf("function %s created as %s (%v); the template's values name %s", fn.logicalID, created.FunctionArn, err, fn.arn)
	}
	home, tmp := d.t.TempDir(), d.t.TempDir()
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"TMPDIR=" + tmp,
		"AWS_ACCESS_KEY_ID=AKIDMOTOTEST",
		"AWS_SECRET_ACCESS_KEY=not-a-secret",
		"AWS_REGION=" + region,
		"AWS_DEFAULT_REGION=" + region,
		"AWS_CONFIG_FILE=" + filepath.Join(home, "none"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "none"),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_LAMBDA_FUNCTION_NAME=" + fn.name,
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + strconv.Itoa(fn.memory),
		"AWS_LAMBDA_FUNCTION_TIMEOUT=" + strconv.Itoa(fn.timeout),
		awsx.EnvS3Endpoint + "=" + d.moto.url,
		awsx.EnvSecretsEndpoint + "=" + d.moto.url,
		awsx.EnvSFNEndpoint + "=" + d.moto.url,
	}
	for _, k := range slices.Sorted(maps.Keys(fn.env)) {
		env = append(env, k+"="+fn.env[k])
	}
	d.lambda.add(fn, bootstrap, env)
}

// put writes an object to the bucket, as an upstream job would.
func (d *deployment) put(t testing.TB, key string, body []byte) store.ObjectInfo {
	t.Helper()
	info, err := d.store.Put(context.Background(), key, bytes.NewReader(body), store.PutOptions{})
	if err != nil {
		t.Fatalf("putting %s: %v", key, err)
	}
	return info
}

// putSecret creates a secret in moto's Secrets Manager.
func (d *deployment) putSecret(t testing.TB, id, value string) {
	t.Helper()
	ctx := context.Background()
	_, err := d.secrets.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(id), SecretString: aws.String(value)})
	if err != nil {
		t.Fatalf("creating secret %s: %v", id, err)
	}
}

// invoke runs a function synchronously (as a person with aws lambda invoke
// would) and decodes its response into v.
func (d *deployment) invoke(t testing.TB, logicalID string, event []byte, v any) {
	t.Helper()
	fn := d.lambda.function(logicalID)
	if fn == nil {
		t.Fatalf("template.yaml has no function %s", logicalID)
	}
	body, failed, err := d.lambda.invoke(context.Background(), fn, event)
	if err != nil || failed {
		t.Fatalf("invoking %s: %v %s\n%s", logicalID, err, body, d.diagnose())
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("decoding %s's response %s: %v", logicalID, body, err)
	}
}

// notifier is S3's event notifications for the bucket: every object
// version created under a notification's prefix (and suffix) becomes an
// ObjectCreated event, in the shape of events/s3-put.json, delivered to the
// function the notification names, asynchronously as S3 does. moto reports
// each object created (moto_pipeline.py's report_object_created), so this
// sees the objects the functions write too: a prefix the lifecycle adds
// later is delivered as soon as template.yaml names it.
type notifier struct {
	d        *deployment
	notes    []notification
	received atomic.Int64 // events read from moto
	inFlight atomic.Int64 // events being delivered
	mu       sync.Mutex
	errs     []string
}

// createdObject is one S3EVENT line.
type createdObject struct {
	EventName    string  `json:"eventName"`
	Bucket       string  `json:"bucket"`
	Key          string  `json:"key"`
	VersionID    *string `json:"versionId"`
	ETag         string  `json:"eTag"`
	Size         int64   `json:"size"`
	LastModified string  `json:"lastModified"`
}

func startNotifier(d *deployment, notes []notification) *notifier {
	n := &notifier{d: d, notes: notes}
	go func() {
		for line := range d.moto.events {
			n.received.Add(1)
			var obj createdObject
			if err := json.Unmarshal(line, &obj); err != nil {
				n.fail("moto reported %s: %v", line, err)
				continue
			}
			for _, note := range notes {
				if obj.Bucket == d.bucket && strings.HasPrefix(obj.Key, note.prefix) && strings.HasSuffix(obj.Key, note.suffix) {
					n.inFlight.Add(1)
					go n.deliver(note, obj)
				}
			}
		}
	}()
	return n // the reader ends when moto does, at the test's cleanup
}

func (n *notifier) fail(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.errs = append(n.errs, fmt.Sprintf(format, args...))
}

func (n *notifier) failures() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.errs)
}

// deliver invokes the notified function with the object's event. An
// error is recorded (Lambda would retry an asynchronous invocation twice,
// then drop it: either way a scenario that meets one is wrong).
func (n *notifier) deliver(note notification, obj createdObject) {
	defer n.inFlight.Add(-1)
	ev, err := s3Event(obj)
	if err != nil {
		n.fail("building the event for %s: %v", obj.Key, err)
		return
	}
	body, failed, err := n.d.lambda.invoke(context.Background(), n.d.lambda.function(note.function), ev)
	if err != nil || failed {
		n.fail("%s on s3://%s/%s: %v %s", note.function, obj.Bucket, obj.Key, err, body)
	}
}

// s3Event is events/s3-put.json with the object's identity: its key
// URL-encoded as S3 sends it (a space as +, the slashes kept), its ETag
// without quotes, its size and version.
func s3Event(obj createdObject) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "events", "s3-put.json"))
	if err != nil {
		return nil, err
	}
	var ev map[string]any
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, err
	}
	at, err := time.Parse(time.RFC3339, obj.LastModified)
	if err != nil {
		return nil, err
	}
	rec := ev["Records"].([]any)[0].(map[string]any)
	rec["awsRegion"] = region
	rec["eventName"] = obj.EventName
	rec["eventTime"] = at.UTC().Format("2006-01-02T15:04:05.000Z")
	s3part := rec["s3"].(map[string]any)
	b := s3part["bucket"].(map[string]any)
	b["name"], b["arn"] = obj.Bucket, "arn:"+partition+":s3:::"+obj.Bucket
	o := s3part["object"].(map[string]any)
	o["key"] = strings.ReplaceAll(url.QueryEscape(obj.Key), "%2F", "/")
	o["size"] = obj.Size
	o["eTag"] = obj.ETag
	o["sequencer"] = fmt.Sprintf("%016X", time.Now().UnixNano())
	if obj.VersionID != nil {
		o["versionId"] = *obj.VersionID
	} else {
		delete(o, "versionId")
	}
	return json.Marshal(ev)
}

// executions lists the state machine's executions.
func (d *deployment) executions() ([]sfntypes.ExecutionListItem, error) {
	var out []sfntypes.ExecutionListItem
	p := sfn.NewListExecutionsPaginator(d.sfn, &sfn.ListExecutionsInput{StateMachineArn: aws.String(d.machine.arn)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			return nil, err
		}
		out = append(out, page.Executions...)
	}
	return out, nil
}

// notFinal are the report statuses a run passes through: a report with
// any other status is the run's record of how it ended.
var notFinal = map[string]bool{"": true, run.StatusRunning: true, run.StatusQueued: true}

// settle waits until the run of the object at key (version info) has a
// final report and the deployment is quiet: no event undelivered or in
// flight, no function running, no execution RUNNING. It returns that
// report and fails the test, saying why and with every function's logs,
// if that takes longer than within.
func (d *deployment) settle(t testing.TB, export string, info store.ObjectInfo, within time.Duration) *run.Report {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		rep, why := d.quiet(export, info)
		if why == "" {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run of %s was not over within %v: %s\n%s", info.Key, within, why, d.diagnose())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// quiet returns the final report of the object's run, or why not yet.
func (d *deployment) quiet(export string, info store.ObjectInfo) (*run.Report, string) {
	if why := d.idle(); why != "" {
		return nil, why
	}
	reports, err := run.ListReports(context.Background(), d.store, export)
	if err != nil {
		return nil, "listing reports: " + err.Error()
	}
	for _, r := range reports {
		if r.Source.Key == info.Key && (info.VersionID == "" || r.Source.VersionID == info.VersionID) {
			if notFinal[r.Status] {
				return nil, fmt.Sprintf("its report says %q", r.Status)
			}
			return r, ""
		}
	}
	return nil, "it has no report yet"
}

// idle says why the deployment is still busy, or "" when nothing runs and
// nothing is about to: no S3 event undelivered or being delivered, no
// invocation running, no execution RUNNING, and none of these began while
// it looked. (An execution is started only by an invocation, an
// invocation only by an event or a RUNNING execution, and an event is
// read by the second sync if its object was written before it.)
func (d *deployment) idle() string {
	events, invokes := d.notify.received.Load(), d.lambda.started.Load()
	for round := range 2 {
		if err := d.moto.sync(10 * time.Second); err != nil {
			return err.Error()
		}
		if n := d.notify.inFlight.Load(); n > 0 {
			return fmt.Sprintf("%d S3 events being delivered", n)
		}
		for _, fn := range d.lambda.functions() {
			if n := fn.inFlight.Load(); n > 0 {
				return fmt.Sprintf("%s running %d invocations", fn.logicalID, n)
			}
		}
		if round > 0 {
			break
		}
		execs, err := d.executions()
		if err != nil {
			return "listing executions: " + err.Error()
		}
		for _, e := range execs {
			if e.Status == sfntypes.ExecutionStatusRunning {
				return "an execution is RUNNING"
			}
		}
	}
	if events != d.notify.received.Load() || invokes != d.lambda.started.Load() {
		return "functions were invoked meanwhile"
	}
	return ""
}

// checkHealthy fails the test if the deployment misbehaved since the last
// check: an execution that did not succeed (every path of the definition
// ends in Finalize), a notification whose function failed, or an
// invocation the test's Lambda could not complete.
func (d *deployment) checkHealthy(t testing.TB) {
	t.Helper()
	var problems []string
	execs, err := d.executions()
	if err != nil {
		problems = append(problems, "listing executions: "+err.Error())
	}
	for _, e := range execs {
		if e.Status == sfntypes.ExecutionStatusSucceeded || d.reported[aws.ToString(e.ExecutionArn)] {
			continue
		}
		d.reported[aws.ToString(e.ExecutionArn)] = true
		desc, err := d.sfn.DescribeExecution(context.Background(), &sfn.DescribeExecutionInput{ExecutionArn: e.ExecutionArn})
		if err != nil {
			problems = append(problems, fmt.Sprintf("execution %s %s", aws.ToString(e.Name), e.Status))
			continue
		}
		problems = append(problems, fmt.Sprintf("execution %s %s: %s: %s", aws.ToString(e.Name), e.Status,
			aws.ToString(desc.Error), aws.ToString(desc.Cause)))
	}
	problems = append(problems, d.notify.failures()[d.notifyChecked:]...)
	problems = append(problems, d.lambda.failures()[d.lambdaChecked:]...)
	d.notifyChecked, d.lambdaChecked = len(d.notify.failures()), len(d.lambda.failures())
	for _, how := range d.lambda.buried()[d.deathsLogged:] {
		t.Logf("an execution environment died between invocations; its next invocation ran in another, as in Lambda: %s", how)
		d.deathsLogged++
	}
	if len(problems) > 0 {
		t.Fatalf("the deployment misbehaved:\n  %s\n%s", strings.Join(problems, "\n  "), d.diagnose())
	}
}

// diagnose is what a failure prints: the executions and their states,
// then the end of every function's and moto's logs.
func (d *deployment) diagnose() string {
	var b strings.Builder
	execs, err := d.executions()
	if err != nil {
		fmt.Fprintf(&b, "listing executions: %v\n", err)
	}
	fmt.Fprintf(&b, "executions (%d):\n", len(execs))
	for _, e := range execs {
		fmt.Fprintf(&b, "  %s %s\n", e.Status, aws.ToString(e.Name))
	}
	for _, f := range d.notify.failures() {
		fmt.Fprintf(&b, "S3 notification failed: %s\n", f)
	}
	for _, f := range d.lambda.failures() {
		fmt.Fprintf(&b, "Lambda could not complete: %s\n", f)
	}
	for _, how := range d.lambda.buried() {
		fmt.Fprintf(&b, "an execution environment died between invocations: %s\n", how)
	}
	for _, fn := range d.lambda.functions() {
		fmt.Fprintf(&b, "--- %s (%d invocations) ---\n%s\n", fn.logicalID, fn.invokes.Load(), tail(fn.logs.String(), 6000))
	}
	fmt.Fprintf(&b, "--- moto ---\n%s\n", tail(d.moto.logs.String(), 6000))
	return b.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
