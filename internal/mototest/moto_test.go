//go:build unix

package mototest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/segpilot/segpilot/internal/testutil"
)

// motoServer is moto, run by moto_pipeline.py in a python3 process.
type motoServer struct {
	url  string
	logs *testutil.SyncBuffer

	stdin  io.Writer
	events chan []byte // the S3EVENT lines, in order
	mu     sync.Mutex
	syncs  map[string]chan struct{} // SYNC lines waiting for their SYNCED
	seq    int
}

// needMoto returns a python3 that has moto, or reports it missing (a
// failure in CI, a skip elsewhere). The image's pyenv python3 has it; .ci/run
// puts pyenv's shims after the system's python3 on PATH, so both are tried.
func needMoto(t testing.TB) string {
	t.Helper()
	const install = "pip install 'moto[server]==5.2.1' boto3 (the image's pyenv python3 has them)"
	candidates := []string{testutil.NeedTool(t, "python3", install)}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, ".pyenv", "shims", "python3"))
	}
	var why string
	for _, python := range candidates {
		out, err := exec.Command(python, "-c", "import moto.server, boto3").CombinedOutput()
		if err == nil {
			return python
		}
		if why == "" {
			why = python + ": " + lastLine(string(out))
		}
	}
	testutil.MissingTool(t, "moto for python3 ("+why+")", install)
	return ""
}

// startMoto runs moto_pipeline.py with python: moto's S3, Secrets Manager,
// IAM, Lambda and Step Functions on a loopback port, state machines
// executed, each Lambda invocation posted to invokeURL/<function name>.
// The process ends when the test closes its standard input (or dies).
func startMoto(t testing.TB, python, invokeURL string) *motoServer {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	cmd := exec.Command(python, "moto_pipeline.py", invokeURL)
	cmd.Env = append(cleanEnv(), "PYTHONUNBUFFERED=1")
	cmd.Stderr = logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	dieWithParent(cmd.SysProcAttr)
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting moto_pipeline.py: %v", err)
	}
	m := &motoServer{logs: logs, stdin: stdin, events: make(chan []byte, 1<<16), syncs: map[string]chan struct{}{}}
	exited := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		ready <- line
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				break
			}
			m.read(bytes.TrimSpace(line))
		}
		close(m.events)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		stdin.Close() // moto_pipeline.py stops when its input ends
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	select {
	case line := <-ready:
		url, ok := strings.CutPrefix(strings.TrimSpace(line), "READY ")
		if !ok {
			t.Fatalf("moto_pipeline.py did not start: %q\n%s", line, logs)
		}
		m.url = url
		return m
	case <-time.After(60 * time.Second):
		t.Fatalf("moto_pipeline.py not ready after 60 s\n%s", logs)
	}
	return nil
}

// read handles one line moto_pipeline.py wrote after READY.
func (m *motoServer) read(line []byte) {
	switch {
	case bytes.HasPrefix(line, []byte("S3EVENT ")):
		m.events <- bytes.Clone(line[len("S3EVENT "):])
	case bytes.HasPrefix(line, []byte("SYNCED ")):
		m.mu.Lock()
		if ch := m.syncs[string(line[len("SYNCED "):])]; ch != nil {
			close(ch)
		}
		m.mu.Unlock()
	default:
		m.logs.Write(append(line, '\n'))
	}
}

// sync returns once every S3EVENT line of an object written before it was
// called has been read (and so handed to the events channel's reader).
func (m *motoServer) sync(timeout time.Duration) error {
	m.mu.Lock()
	m.seq++
	id := strconv.Itoa(m.seq)
	ch := make(chan struct{})
	m.syncs[id] = ch
	_, err := fmt.Fprintf(m.stdin, "SYNC %s\n", id)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case <-ch:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("moto_pipeline.py did not answer SYNC within %v", timeout)
	}
}

// cleanEnv is this process's environment without AWS or moto settings,
// which would point moto's own clients elsewhere.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "MOTO_") && !strings.HasPrefix(kv, "TEST_SERVER_MODE") {
			out = append(out, kv)
		}
	}
	return out
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// awsConfig is the SDK configuration the test's own clients use against moto.
func awsConfig() aws.Config {
	return aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDMOTOTEST", "not-a-secret", ""),
	}
}

// call makes one signed request to moto for an API whose SDK client the
// module does not depend on (Lambda, IAM): moto routes a request to a
// service by its signature's credential scope.
func (m *motoServer) call(ctx context.Context, service, method, path, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, m.url+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	sum := sha256.Sum256(body)
	creds, _ := awsConfig().Credentials.Retrieve(ctx)
	signRegion := region
	if service == "iam" {
		signRegion = "us-east-1" // IAM is global
	}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), service, signRegion, time.Now()); err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s %s: HTTP %d: %s", service, method, path, resp.StatusCode, out)
	}
	return out, nil
}
