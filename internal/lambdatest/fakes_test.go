//go:build unix

package lambdatest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
)

// newS3 serves gofakes3 over plain HTTP on loopback with bucket created and
// returns its URL and a store on the bucket for the test's own reads and writes.
func newS3(t testing.TB, bucket string) (string, *s3store.Store) {
	t.Helper()
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(srv.Close)
	cfg := aws.Config{
		Region:      "eu-west-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "not-a-secret", ""),
	}
	client := awsx.NewS3Client(cfg, srv.URL)
	if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("creating bucket: %v", err)
	}
	// Versioned, as template.yaml deploys it: S3 events then carry a
	// versionId that listing does not report.
	if _, err := client.PutBucketVersioning(context.Background(), &s3.PutBucketVersioningInput{
		Bucket:                  aws.String(bucket),
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
	}); err != nil {
		t.Fatalf("enabling versioning: %v", err)
	}
	return srv.URL, s3store.New(client, bucket)
}

// awsError answers like an AWS JSON protocol service.
func awsError(w http.ResponseWriter, typ string) {
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": typ})
}

// fakeSecrets answers Secrets Manager's GetSecretValue (JSON 1.1) from a
// fixed map of SecretString values.
type fakeSecrets struct {
	values map[string]string
}

func (f fakeSecrets) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	if r.Method != http.MethodPost || r.Header.Get("X-Amz-Target") != "secretsmanager.GetSecretValue" {
		awsError(w, "InvalidRequestException")
		return
	}
	var in struct{ SecretId string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		awsError(w, "InvalidRequestException")
		return
	}
	value, ok := f.values[in.SecretId]
	if !ok {
		awsError(w, "ResourceNotFoundException")
		return
	}
	json.NewEncoder(w).Encode(map[string]any{
		"ARN":           "arn:aws:secretsmanager:eu-west-1:123456789012:secret:" + in.SecretId + "-AbCdEf",
		"Name":          in.SecretId,
		"VersionId":     "v1",
		"VersionStages": []string{"AWSCURRENT"},
		"CreatedDate":   1.7e9,
		"SecretString":  value,
	})
}

// execution is one StartExecution the fake accepted.
type execution struct {
	Name  string
	Input string
}

// fakeSFN answers Step Functions' StartExecution and DescribeExecution
// (JSON 1.0) for one state machine: a name starts once, again it is
// ExecutionAlreadyExists; an execution runs until stop.
type fakeSFN struct {
	arn string

	mu      sync.Mutex
	started []execution
	stopped map[string]time.Time
	calls   int
}

// stop is StopExecution by hand at a time: the execution is ABORTED.
func (f *fakeSFN) stop(name string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped == nil {
		f.stopped = map[string]time.Time{}
	}
	f.stopped[name] = at
}

func (f *fakeSFN) executionARN(name string) string {
	return strings.Replace(f.arn, ":stateMachine:", ":execution:", 1) + ":" + name
}

func (f *fakeSFN) snapshot() (started []execution, calls int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]execution(nil), f.started...), f.calls
}

func (f *fakeSFN) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	var in struct {
		StateMachineArn string `json:"stateMachineArn"`
		Name            string `json:"name"`
		Input           string `json:"input"`
		ExecutionArn    string `json:"executionArn"`
	}
	target := r.Header.Get("X-Amz-Target")
	if target != "AWSStepFunctions.StartExecution" && target != "AWSStepFunctions.DescribeExecution" {
		awsError(w, "InvalidAction")
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		awsError(w, "SerializationException")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if target == "AWSStepFunctions.DescribeExecution" {
		for _, e := range f.started {
			if f.executionARN(e.Name) == in.ExecutionArn {
				out := map[string]any{"executionArn": in.ExecutionArn, "stateMachineArn": f.arn,
					"status": "RUNNING", "startDate": 1.7e9}
				if at, ok := f.stopped[e.Name]; ok {
					out["status"], out["stopDate"] = "ABORTED", float64(at.UnixMilli())/1000
				}
				json.NewEncoder(w).Encode(out)
				return
			}
		}
		awsError(w, "ExecutionDoesNotExist")
		return
	}
	f.calls++
	if in.StateMachineArn != f.arn {
		awsError(w, "StateMachineDoesNotExist")
		return
	}
	for _, e := range f.started {
		if e.Name == in.Name {
			awsError(w, "ExecutionAlreadyExists")
			return
		}
	}
	f.started = append(f.started, execution{Name: in.Name, Input: in.Input})
	json.NewEncoder(w).Encode(map[string]any{
		"executionArn": f.executionARN(in.Name),
		"startDate":    1.7e9,
	})
}
