//go:build unix

// Package lambdatest runs the built Lambda bootstraps under the AWS Lambda
// runtime interface emulator (aws-lambda-rie) against loopback fakes of S3,
// Secrets Manager, Step Functions and Autopilot, and feeds them the sample
// events in events/.
package lambdatest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/testutil"
)

const modulePath = "github.com/segpilot/segpilot"

// functions are the Lambda functions under functions/.
var functions = []string{"ingest", "syncbatch", "finalize", "refresh"}

// goBuild builds every function into dir/<name>/bootstrap with one go
// command, so the dependencies they share compile once. env is added to the
// caller's environment.
func goBuild(t testing.TB, dir string, env []string, flags ...string) map[string]string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("finding the go command: %v", err)
	}
	built := filepath.Join(dir, "built")
	args := append(append([]string{"build"}, flags...), "-o", built+string(filepath.Separator))
	for _, fn := range functions {
		args = append(args, modulePath+"/functions/"+fn)
	}
	cmd := exec.Command(goBin, args...)
	cmd.Env = append(os.Environ(), env...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	out := make(map[string]string, len(functions))
	for _, fn := range functions {
		out[fn] = filepath.Join(dir, fn, "bootstrap")
		if err := os.Mkdir(filepath.Dir(out[fn]), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(built, fn), out[fn]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// hostBuild builds the functions for the machine running the tests, as the
// emulator runs them as plain child processes.
func hostBuild(t testing.TB) map[string]string {
	t.Helper()
	return goBuild(t, t.TempDir(), []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + runtime.GOARCH}, "-tags", "lambda.norpc")
}

// rieBinary finds aws-lambda-rie on PATH or in GOPATH/bin (where go
// install puts it), else reports it missing: a failure in CI, a skip elsewhere.
func rieBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("aws-lambda-rie"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "aws-lambda-rie")
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	testutil.MissingTool(t, "aws-lambda-rie (on PATH or in $(go env GOPATH)/bin)",
		"go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@v0.0.0-20261030222936-bef5c4ba774d")
	return ""
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// emulator is one aws-lambda-rie process running one bootstrap.
type emulator struct {
	name string
	url  string               // the invocation URL
	out  *testutil.SyncBuffer // stdout and stderr of the emulator and the bootstrap
}

// startEmulator runs bootstrap under the emulator with exactly env as its
// environment and waits until the emulator accepts connections.
func startEmulator(t testing.TB, rie, name, bootstrap string, env []string) *emulator {
	t.Helper()
	api, rapi := freeAddr(t), freeAddr(t)
	out := &testutil.SyncBuffer{}
	cmd := exec.Command(rie, "--runtime-interface-emulator-address", api, "--runtime-api-address", rapi, bootstrap)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so cleanup also ends the bootstrap it spawned.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting aws-lambda-rie for %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the group may be gone already
		<-exited
	})

	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", api, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case err := <-exited:
			exited <- err // for cleanup
			t.Fatalf("aws-lambda-rie for %s exited before listening: %v\n%s", name, err, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("aws-lambda-rie for %s not listening on %s after 15s: %v\n%s", name, api, err, out)
		}
		time.Sleep(time.Millisecond) // fine-grained: the first-invoke benchmark includes this wait
	}
	return &emulator{name: name, url: "http://" + api + "/2015-03-31/functions/function/invocations", out: out}
}

// lambdaError is how a handler error comes back: HTTP 200 with this body.
type lambdaError struct {
	ErrorType    string `json:"errorType"`
	ErrorMessage string `json:"errorMessage"`
}

// invoke posts event and returns the raw response and, when the handler
// failed, its error.
func (e *emulator) invoke(t testing.TB, event []byte) ([]byte, *lambdaError) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(event))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("invoking %s: %v\n%s", e.name, err, e.out)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s's answer: %v", e.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("invoking %s: HTTP %d: %s\n%s", e.name, resp.StatusCode, body, e.out)
	}
	var le lambdaError
	if json.Unmarshal(body, &le) == nil && le.ErrorType != "" {
		return body, &le
	}
	return body, nil
}

// call invokes e with event, fails on a handler error, and decodes the
// answer into v, rejecting fields v does not know.
func (e *emulator) call(t testing.TB, event []byte, v any) {
	t.Helper()
	body, lerr := e.invoke(t, event)
	if lerr != nil {
		t.Fatalf("%s answered %s: %s\nevent: %s\noutput:\n%s", e.name, lerr.ErrorType, lerr.ErrorMessage, event, e.out)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %s's answer %s: %v", e.name, body, err)
	}
}
