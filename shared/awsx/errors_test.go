package awsx_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
	"github.com/segpilot/segpilot/shared/awsx/smsecrets"
	"github.com/segpilot/segpilot/shared/store"
)

var storePut = store.PutOptions{}

var testConfig = aws.Config{
	Region:      "eu-west-1",
	Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "not-a-secret", ""),
	// Two attempts, no waiting: the SDK gives up quickly, as it would
	// after its own retries in production.
	Retryer: func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 2
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	},
}

// s3Answering serves every request with status and an S3 error code.
func s3Answering(t *testing.T, status int, code string) *s3store.Store {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code == "" { // a connection dropped mid-answer
			hj, ok := w.(http.Hijacker)
			if !ok {
				t.Error("cannot hijack")
				return
			}
			conn, _, err := hj.Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>` + code + `</Code><Message>m</Message></Error>`))
		}
	}))
	t.Cleanup(srv.Close)
	return s3store.New(awsx.NewS3Client(testConfig, srv.URL), "segpilot-test")
}

// TestTransientSDKErrors: what an S3 or Secrets Manager call fails with
// after the SDK's own retries, as the adapters return it (wrapped), is
// told apart: throttling, 5xx and dropped connections are worth a retry
// by the state machine; a missing object or a refused permission is not.
func TestTransientSDKErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		status    int
		code      string
		transient bool
	}{
		{"503 SlowDown", 503, "SlowDown", true},
		{"500 InternalError", 500, "InternalError", true},
		{"429 throttled", 429, "TooManyRequests", true},
		{"dropped connection", 0, "", true},
		{"403 AccessDenied", 403, "AccessDenied", false},
		{"400 InvalidRequest", 400, "InvalidRequest", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := s3Answering(t, tt.status, tt.code)
			_, err := st.Put(context.Background(), "runs/e/r/results/000001.json", strings.NewReader("{}"), storePut)
			if err == nil {
				t.Fatal("no error")
			}
			if got := awsx.IsTransient(err); got != tt.transient {
				t.Fatalf("IsTransient(%v) = %v, want %v", err, got, tt.transient)
			}
		})
	}
	t.Run("missing object", func(t *testing.T) {
		t.Parallel()
		st := s3Answering(t, 404, "NoSuchKey")
		_, _, err := st.Get(context.Background(), "state/e/snapshot")
		if err == nil || awsx.IsTransient(err) {
			t.Fatalf("IsTransient(%v) = true for a missing object", err)
		}
	})
	t.Run("secrets throttled", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-amz-json-1.1")
			w.WriteHeader(400)
			w.Write([]byte(`{"__type":"ThrottlingException","message":"Rate exceeded"}`))
		}))
		t.Cleanup(srv.Close)
		src := smsecrets.New(awsx.NewSecretsClient(testConfig, srv.URL))
		_, err := src.Secret(context.Background(), "segpilot/autopilot")
		if err == nil || !awsx.IsTransient(err) {
			t.Fatalf("IsTransient(%v) = false for a throttled GetSecretValue", err)
		}
	})
	if awsx.IsTransient(nil) || awsx.IsTransient(context.Canceled) {
		t.Error("nil or a cancelled context counted as transient")
	}
}
