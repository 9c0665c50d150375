package smsecrets

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/secrets"
)

const leak = "SUPER-SECRET-KEY-42"

// fakeSM answers GetSecretValue (JSON 1.1) from a map of SecretString values;
// a value of nil means a binary-only secret.
type fakeSM struct {
	mu      sync.Mutex
	secrets map[string]*string
	calls   int
}

func (f *fakeSM) set(id string, value *string) {
	f.mu.Lock()
	f.secrets[id] = value
	f.mu.Unlock()
}

func (f *fakeSM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	if r.Method != http.MethodPost || r.Header.Get("X-Amz-Target") != "secretsmanager.GetSecretValue" {
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"__type":"InvalidRequestException","message":"unexpected call"}`))
		return
	}
	var in struct{ SecretId string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"__type":"InvalidRequestException","message":"bad body"}`))
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if in.SecretId == "denied" {
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"__type":"AccessDeniedException","message":"not allowed"}`))
		return
	}
	value, ok := f.secrets[in.SecretId]
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"__type":"ResourceNotFoundException","message":"Secrets Manager can't find the specified secret."}`))
		return
	}
	out := map[string]any{
		"ARN":           "arn:aws:secretsmanager:us-east-1:123456789012:secret:" + in.SecretId + "-AbCdEf",
		"Name":          in.SecretId,
		"VersionId":     "v1",
		"VersionStages": []string{"AWSCURRENT"},
		"CreatedDate":   1.7e9,
	}
	if value != nil {
		out["SecretString"] = *value
	} else {
		out["SecretBinary"] = "AAEC"
	}
	json.NewEncoder(w).Encode(out)
}

func newSource(t *testing.T, initial map[string]*string) (*Source, *fakeSM) {
	t.Helper()
	fake := &fakeSM{secrets: initial}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "not-a-secret", ""),
	}
	return New(awsx.NewSecretsClient(cfg, srv.URL)), fake
}

func TestSecretShapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		stored  *string
		want    string
		wantErr string // substring; empty means success
	}{
		{"bare key", aws.String("ak-123"), "ak-123", ""},
		{"bare key with newline", aws.String("ak-123\n"), "ak-123", ""},
		{"json object", aws.String(`{"apiKey":"ak-456","note":"rotated monthly"}`), "ak-456", ""},
		{"empty", aws.String(""), "", "empty"},
		{"blank", aws.String("  \n"), "", "empty"},
		{"json without apiKey", aws.String(`{"key":"` + leak + `"}`), "", `without an "apiKey" field`},
		{"json apiKey empty", aws.String(`{"apiKey":""}`), "", "is empty"},
		{"json apiKey not a string", aws.String(`{"apiKey":42}`), "", "not a string"},
		{"broken json", aws.String(`{"apiKey":"` + leak + `"`), "", "not a JSON object"},
		{"trailing garbage", aws.String(`{"apiKey":"` + leak + `"} ` + leak), "", "not a JSON object"},
		{"binary only", nil, "", "no SecretString"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src, _ := newSource(t, map[string]*string{"segpilot/autopilot": tt.stored})
			got, err := src.Secret(context.Background(), "segpilot/autopilot")
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Secret = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Secret = %q, %v; want an error containing %q", got, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), leak) {
				t.Fatalf("error leaks the secret value: %v", err)
			}
			if !strings.Contains(err.Error(), "segpilot/autopilot") {
				t.Fatalf("error does not name the secret: %v", err)
			}
			// A secret that holds no key (the stack creates it so) is told
			// apart: the run is refused with "set the secret", not failed.
			if empty := strings.Contains(tt.wantErr, "empty"); errors.Is(err, secrets.ErrEmpty) != empty {
				t.Fatalf("errors.Is(%v, ErrEmpty) = %v, want %v", err, !empty, empty)
			}
		})
	}
}

func TestMissingAndDenied(t *testing.T) {
	t.Parallel()
	src, _ := newSource(t, map[string]*string{})
	_, err := src.Secret(context.Background(), "segpilot/missing")
	if !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "segpilot/missing") {
		t.Fatalf("missing secret: err = %v, want ErrNotFound naming the id", err)
	}
	_, err = src.Secret(context.Background(), "denied")
	if err == nil || errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "AccessDeniedException") {
		t.Fatalf("denied secret: err = %v, want the access error, not ErrNotFound", err)
	}
}

func TestRotationThroughCache(t *testing.T) {
	t.Parallel()
	const id = "segpilot/autopilot"
	src, fake := newSource(t, map[string]*string{id: aws.String(`{"apiKey":"old-key"}`)})
	var mu sync.Mutex
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	cache := secrets.NewCache(src, 5*time.Minute, secrets.WithClock(clock))

	get := func(want string) {
		t.Helper()
		got, err := cache.Secret(context.Background(), id)
		if err != nil || got != want {
			t.Fatalf("Secret = %q, %v; want %q", got, err, want)
		}
	}
	get("old-key")
	fake.set(id, aws.String(`{"apiKey":"new-key"}`)) // rotated
	get("old-key")                                   // cached
	mu.Lock()
	now = now.Add(5 * time.Minute)
	mu.Unlock()
	get("new-key")
	fake.mu.Lock()
	calls := fake.calls
	fake.mu.Unlock()
	if calls != 2 {
		t.Fatalf("GetSecretValue calls = %d, want 2", calls)
	}
}
