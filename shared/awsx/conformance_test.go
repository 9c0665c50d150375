package awsx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
	"github.com/segpilot/segpilot/shared/awsx/sfnstarter"
	"github.com/segpilot/segpilot/shared/awsx/smsecrets"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/secrets"
	"github.com/segpilot/segpilot/shared/store"
)

// The adapters' conformance tests: what segpilot relies on from S3,
// Secrets Manager and Step Functions, run against every emulator at hand,
// so a test passing on one fake's quirk fails on the other:
//   - S3: gofakes3 and moto_server;
//   - Secrets Manager and Step Functions: httptest fakes written from the
//     API reference, and moto_server.
//
// Where moto differs from AWS, the difference is noted and not asserted on
// moto: it ignores a Distributed Map's ToleratedFailurePercentage (and by
// default executes no definition at all: an execution stays RUNNING until
// stopped), and its CloudFormation skips some resource types, so neither
// the state machine's failure paths nor the template are checked here (the
// runner and the template tests do). A conditional write to a missing key
// answers 404 NoSuchKey on moto (as on S3) and 412 on gofakes3; that
// mapping is another change's, and is not asserted here.

// backend is one emulator for the adapters under test; start returns its
// endpoint (moto's starts moto_server for the subtest: a failure in CI, a
// loud skip elsewhere when it is missing).
type backend struct {
	name  string
	start func(t *testing.T) string
}

func serving(url string) func(*testing.T) string { return func(*testing.T) string { return url } }

var motoBackend = backend{"moto", func(t *testing.T) string { return testutil.Moto(t) }}

func unique(prefix string) string { return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()) }

// --------------------------------------------------------------------- S3

func s3Backends(t *testing.T) []backend {
	faker := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(faker.Close)
	return []backend{{"gofakes3", serving(faker.URL)}, motoBackend}
}

func TestS3StoreConformance(t *testing.T) {
	t.Parallel()
	for _, b := range s3Backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			client := awsx.NewS3Client(testConfig, b.start(t))
			bucket := unique("segpilot-conf")
			ctx := context.Background()
			// Outside us-east-1, S3 (and moto) want the region named.
			if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket),
				CreateBucketConfiguration: &s3types.CreateBucketConfiguration{
					LocationConstraint: s3types.BucketLocationConstraint(testConfig.Region)}}); err != nil {
				t.Fatalf("creating bucket: %v", err)
			}
			st := s3store.New(client, bucket, s3store.WithMaxKeys(2))
			put := func(key, body string, opts store.PutOptions) (store.ObjectInfo, error) {
				return st.Put(ctx, key, strings.NewReader(body), opts)
			}

			// Put, Get, Head agree on size and ETag.
			info, err := put("runs/e/r/manifest.json", `{"a":1}`, store.PutOptions{ContentType: "application/json"})
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			rc, got, err := st.Get(ctx, "runs/e/r/manifest.json")
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			body, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(body) != `{"a":1}` || got.ETag != info.ETag || got.Size != 7 {
				t.Fatalf("Get = %q %+v, %v; want the body put, ETag %s", body, got, err, info.ETag)
			}
			if head, err := st.Head(ctx, "runs/e/r/manifest.json"); err != nil || head.ETag != info.ETag || head.Size != 7 {
				t.Fatalf("Head = %+v, %v", head, err)
			}

			// A ranged GET reads the bytes asked for (a group of batches out
			// of batches.jsonl).
			rc, err = st.GetRange(ctx, "runs/e/r/manifest.json", 1, 3)
			if err != nil {
				t.Fatalf("GetRange: %v", err)
			}
			part, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(part) != `"a"` {
				t.Fatalf("GetRange(1, 3) = %q, %v; want %q", part, err, `"a"`)
			}

			// Missing objects are store.ErrNotFound, reading or describing.
			if _, _, err := st.Get(ctx, "state/e/snapshot"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
			}
			if _, err := st.Head(ctx, "state/e/snapshot"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Head of a missing key: %v, want ErrNotFound", err)
			}

			// The lock's compare-and-swap: create only if absent, replace
			// only if unchanged.
			lock, err := put("state/e/lock.json", `{"holder":"a"}`, store.PutOptions{IfNoneMatch: true})
			if err != nil {
				t.Fatalf("create-only Put: %v", err)
			}
			if _, err := put("state/e/lock.json", `{"holder":"b"}`, store.PutOptions{IfNoneMatch: true}); !errors.Is(err, store.ErrExists) {
				t.Fatalf("second create-only Put: %v, want ErrExists", err)
			}
			next, err := put("state/e/lock.json", `{"holder":"c"}`, store.PutOptions{IfMatch: lock.ETag})
			if err != nil {
				t.Fatalf("Put if unchanged: %v", err)
			}
			if _, err := put("state/e/lock.json", `{"holder":"d"}`, store.PutOptions{IfMatch: lock.ETag}); !errors.Is(err, store.ErrChanged) {
				t.Fatalf("Put with a stale ETag: %v, want ErrChanged", err)
			}
			if head, err := st.Head(ctx, "state/e/lock.json"); err != nil || head.ETag != next.ETag {
				t.Fatalf("lock after the swaps: %+v, %v; want ETag %s", head, err, next.ETag)
			}

			// List: every key under a prefix, in key order, over pages.
			for _, k := range []string{"state/e/queue/3.json", "state/e/queue/1.json", "state/e/queue/2.json", "state/f/queue/1.json"} {
				if _, err := put(k, "{}", store.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			objs, err := st.List(ctx, "state/e/queue/")
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			var keys []string
			for _, o := range objs {
				keys = append(keys, o.Key)
			}
			if strings.Join(keys, ",") != "state/e/queue/1.json,state/e/queue/2.json,state/e/queue/3.json" {
				t.Fatalf("List = %v", keys)
			}

			// Delete; deleting what is gone succeeds.
			if err := st.Delete(ctx, "state/e/queue/1.json"); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if err := st.Delete(ctx, "state/e/queue/1.json"); err != nil {
				t.Fatalf("Delete of a deleted key: %v", err)
			}
			if _, _, err := st.Get(ctx, "state/e/queue/1.json"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Get after Delete: %v", err)
			}

			// A streamed (non-seekable) body arrives byte for byte.
			big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
			if _, err := st.Put(ctx, "runs/e/r/snapshot", io.MultiReader(bytes.NewReader(big), strings.NewReader("!")), store.PutOptions{}); err != nil {
				t.Fatalf("streamed Put: %v", err)
			}
			rc, _, err = st.Get(ctx, "runs/e/r/snapshot")
			if err != nil {
				t.Fatal(err)
			}
			back, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(back, append(big, '!')) {
				t.Fatalf("streamed body came back as %d bytes (%v), want %d", len(back), err, len(big)+1)
			}
		})
	}
}

// -------------------------------------------------------- Secrets Manager

// fakeSecretsManager answers GetSecretValue (JSON 1.1) as the API
// reference describes it.
type fakeSecretsManager map[string]string

func (f fakeSecretsManager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	var in struct{ SecretId string }
	if r.Header.Get("X-Amz-Target") != "secretsmanager.GetSecretValue" || json.NewDecoder(r.Body).Decode(&in) != nil {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"__type":"InvalidRequestException","message":"unexpected call"}`)
		return
	}
	value, ok := f[in.SecretId]
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"__type":"ResourceNotFoundException","message":"Secrets Manager can't find the specified secret."}`)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:" + in.SecretId + "-AbCdEf",
		"Name": in.SecretId, "SecretString": value, "VersionId": "v1", "VersionStages": []string{"AWSCURRENT"}, "CreatedDate": 1.7e9})
}

func TestSecretsConformance(t *testing.T) {
	t.Parallel()
	stored := map[string]string{
		"bare":   "ak-bare-123",
		"json":   `{"apiKey":"ak-json-456"}`,
		"placed": `{"apiKey":""}`, // what the stack creates, before the user puts the key in
	}
	fake := httptest.NewServer(fakeSecretsManager(stored))
	t.Cleanup(fake.Close)
	for _, b := range []backend{{"httptest fake", serving(fake.URL)}, motoBackend} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			client := awsx.NewSecretsClient(testConfig, b.start(t))
			ctx := context.Background()
			prefix := ""
			if b.name == "moto" {
				prefix = unique("segpilot") + "/"
				for id, v := range stored {
					if _, err := client.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(prefix + id), SecretString: aws.String(v)}); err != nil {
						t.Fatalf("creating secret %s: %v", id, err)
					}
				}
			}
			src := smsecrets.New(client)
			for id, want := range map[string]string{"bare": "ak-bare-123", "json": "ak-json-456"} {
				if got, err := src.Secret(ctx, prefix+id); err != nil || got != want {
					t.Errorf("Secret(%s) = %q, %v; want %q", id, got, err, want)
				}
			}
			if _, err := src.Secret(ctx, prefix+"placed"); !errors.Is(err, secrets.ErrEmpty) {
				t.Errorf("the stack's empty secret: %v; want ErrEmpty", err)
			}
			if _, err := src.Secret(ctx, prefix+"missing"); !errors.Is(err, secrets.ErrNotFound) {
				t.Errorf("a missing secret: %v; want ErrNotFound", err)
			}
		})
	}
}

// --------------------------------------------------------- Step Functions

// fakeStepFunctions answers StartExecution, DescribeExecution and
// StopExecution (JSON 1.0) as the API reference describes them: a name is
// used once per state machine, but repeating StartExecution with the same
// name and input while that execution runs succeeds (it is idempotent).
type fakeStepFunctions struct {
	arn string

	mu   sync.Mutex
	runs map[string]*fakeExecution
}

type fakeExecution struct {
	input   string
	status  string
	stopped time.Time
}

func (f *fakeStepFunctions) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	fail := func(typ string) {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": typ})
	}
	var in struct {
		StateMachineArn string `json:"stateMachineArn"`
		Name            string `json:"name"`
		Input           string `json:"input"`
		ExecutionArn    string `json:"executionArn"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		fail("SerializationException")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	prefix := strings.Replace(f.arn, ":stateMachine:", ":execution:", 1) + ":"
	switch r.Header.Get("X-Amz-Target") {
	case "AWSStepFunctions.StartExecution":
		if in.StateMachineArn != f.arn {
			fail("StateMachineDoesNotExist")
			return
		}
		if e, ok := f.runs[in.Name]; ok && (e.input != in.Input || e.status != "RUNNING") {
			fail("ExecutionAlreadyExists")
			return
		}
		if _, ok := f.runs[in.Name]; !ok {
			f.runs[in.Name] = &fakeExecution{input: in.Input, status: "RUNNING"}
		}
		json.NewEncoder(w).Encode(map[string]any{"executionArn": prefix + in.Name, "startDate": 1.7e9})
	case "AWSStepFunctions.DescribeExecution", "AWSStepFunctions.StopExecution":
		e, ok := f.runs[strings.TrimPrefix(in.ExecutionArn, prefix)]
		if !ok || !strings.HasPrefix(in.ExecutionArn, prefix) {
			fail("ExecutionDoesNotExist")
			return
		}
		if r.Header.Get("X-Amz-Target") == "AWSStepFunctions.StopExecution" {
			e.status, e.stopped = "ABORTED", time.Now()
			json.NewEncoder(w).Encode(map[string]any{"stopDate": float64(e.stopped.UnixMilli()) / 1000})
			return
		}
		out := map[string]any{"executionArn": in.ExecutionArn, "stateMachineArn": f.arn, "status": e.status, "startDate": 1.7e9}
		if !e.stopped.IsZero() {
			out["stopDate"] = float64(e.stopped.UnixMilli()) / 1000
		}
		json.NewEncoder(w).Encode(out)
	default:
		fail("UnknownOperationException")
	}
}

func TestStepFunctionsConformance(t *testing.T) {
	t.Parallel()
	const fakeARN = "arn:aws:states:eu-west-1:123456789012:stateMachine:segpilot-export"
	fake := httptest.NewServer(&fakeStepFunctions{arn: fakeARN, runs: map[string]*fakeExecution{}})
	t.Cleanup(fake.Close)
	for _, b := range []backend{{"httptest fake", serving(fake.URL)}, motoBackend} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			client := awsx.NewSFNClient(testConfig, b.start(t))
			ctx := context.Background()
			arn := fakeARN
			if b.name == "moto" {
				// moto executes no definition (executions stay RUNNING),
				// so a trivial one serves.
				out, err := client.CreateStateMachine(ctx, &sfn.CreateStateMachineInput{Name: aws.String(unique("segpilot-export")),
					Definition: aws.String(`{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}`),
					RoleArn:    aws.String("arn:aws:iam::123456789012:role/segpilot-export")})
				if err != nil {
					t.Fatalf("creating the state machine: %v", err)
				}
				arn = aws.ToString(out.StateMachineArn)
			}
			starter := sfnstarter.New(client, arn)
			name := unique("vip-run")
			if status, err := starter.Attempt(ctx, run.Holder{Execution: name}); err != nil || status.State != run.LiveNotStarted {
				t.Fatalf("Attempt before starting = %+v, %v; want not started", status, err)
			}
			input := []byte(`{"export":"vip","runId":"r-1"}`)
			if started, err := starter.StartRun(ctx, name, input); err != nil || !started {
				t.Fatalf("StartRun = %v, %v; want started", started, err)
			}
			// The same call again while it runs is idempotent in Step
			// Functions: no error, and still one execution.
			if _, err := starter.StartRun(ctx, name, input); err != nil {
				t.Fatalf("repeated StartRun with the same input: %v", err)
			}
			// Another input under a used name starts nothing.
			if started, err := starter.StartRun(ctx, name, []byte(`{"export":"vip","runId":"r-2"}`)); err != nil || started {
				t.Fatalf("StartRun of a used name = %v, %v; want not started, no error", started, err)
			}
			if status, err := starter.Attempt(ctx, run.Holder{Execution: name}); err != nil || status.State != run.LiveRunning {
				t.Fatalf("Attempt while running = %+v, %v; want active", status, err)
			}
			execARN := strings.Replace(arn, ":stateMachine:", ":execution:", 1) + ":" + name
			if _, err := client.StopExecution(ctx, &sfn.StopExecutionInput{ExecutionArn: aws.String(execARN)}); err != nil {
				t.Fatalf("StopExecution: %v", err)
			}
			status, err := starter.Attempt(ctx, run.Holder{Execution: name})
			if err != nil || status.State != run.LiveEnded || status.EndedAt.IsZero() {
				t.Fatalf("RunStatus after StopExecution = %+v, %v; want ended, with a time", status, err)
			}
			if started, err := starter.StartRun(ctx, name, input); err != nil || started {
				t.Fatalf("StartRun of a stopped execution's name = %v, %v; want not started (names are kept 90 days)", started, err)
			}
		})
	}
}
