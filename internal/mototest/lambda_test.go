//go:build unix

package mototest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/testutil"
)

const modulePath = "github.com/segpilot/segpilot"

// buildBootstraps builds each package (a path in the module, as
// functions/ingest) into dir for this machine, as internal/lambdatest does
// (the same flags, so the build cache serves both), with one go command so
// shared packages compile once. The bootstraps are by package.
func buildBootstraps(dir string, pkgs []string) (map[string]string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("finding the go command: %w", err)
	}
	args := []string{"build", "-tags", "lambda.norpc", "-o", dir + string(filepath.Separator)}
	for _, pkg := range pkgs {
		args = append(args, modulePath+"/"+pkg)
	}
	cmd := exec.Command(goBin, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	out := map[string]string{}
	for _, pkg := range pkgs {
		out[pkg] = filepath.Join(dir, filepath.Base(pkg))
	}
	return out, nil
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

// lambdaService stands in for the Lambda service behind moto's Invoke:
// moto posts each invocation to /<function name>, and the service runs it
// in an execution environment of that function, as Lambda does: a warm one
// if one is idle, else a new one. An environment is one aws-lambda-rie
// process running the function's bootstrap, and it handles one invocation
// at a time (aws-lambda-rie crashes on a second concurrent one), so the
// Map's parallel children get parallel environments, each with its own
// container state (the secret cache, the pacing), as in Lambda.
type lambdaService struct {
	rie    string
	srv    *httptest.Server
	mu     sync.Mutex
	closed bool
	fns    map[string]*lambdaFunction // by function name
	all    []*environment
	errs   []string // invocations the service itself could not complete
	deaths []string // environments that died between invocations, and how
	// started counts every invocation begun, of any function.
	started atomic.Int64
}

// lambdaFunction is one deployed function.
type lambdaFunction struct {
	function
	bootstrap string
	environ   []string
	logs      *testutil.SyncBuffer // every environment's output, the function's log group
	idle      []*environment
	inFlight  atomic.Int64
	invokes   atomic.Int64
	busy      atomic.Int64 // nanoseconds spent in invocations
	cold      atomic.Int64 // environments started
}

// environment is one aws-lambda-rie process.
type environment struct {
	url    string
	cmd    *exec.Cmd
	exited chan error
	logs   *testutil.SyncBuffer // its own output, also in its function's
}

// ended says whether the environment's process has ended (waiting up to
// wait for it), and how.
func (e *environment) ended(wait time.Duration) (bool, error) {
	var err error
	select {
	case err = <-e.exited:
	default:
		if wait <= 0 {
			return false, nil
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case err = <-e.exited:
		case <-t.C:
			return false, nil
		}
	}
	e.exited <- err // for the next look, and kill
	return true, err
}

// died says how the environment ended, if it has within wait, and what
// it printed last: what an invocation that met a dead one reports.
func (e *environment) died(wait time.Duration) string {
	ended, err := e.ended(wait)
	if !ended {
		return ""
	}
	return fmt.Sprintf("aws-lambda-rie (pid %d) had exited: %v; its last output:\n%s", e.cmd.Process.Pid, err, tail(e.logs.String(), 3000))
}

func newLambdaService(t testing.TB) *lambdaService {
	t.Helper()
	ls := &lambdaService{rie: rieBinary(t), fns: map[string]*lambdaFunction{}}
	ls.srv = httptest.NewServer(http.HandlerFunc(ls.serve))
	t.Cleanup(func() {
		ls.srv.Close()
		ls.mu.Lock()
		ls.closed = true
		all := ls.all
		ls.mu.Unlock()
		for _, e := range all {
			e.kill()
		}
	})
	return ls
}

// add deploys fn, to run bootstrap with environ as its whole environment.
func (ls *lambdaService) add(fn function, bootstrap string, environ []string) *lambdaFunction {
	lf := &lambdaFunction{function: fn, bootstrap: bootstrap, environ: environ, logs: &testutil.SyncBuffer{}}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.fns[fn.name] = lf
	return lf
}

func (ls *lambdaService) function(logicalID string) *lambdaFunction {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, f := range ls.fns {
		if f.logicalID == logicalID {
			return f
		}
	}
	return nil
}

// functions are the deployed functions, by logical id.
func (ls *lambdaService) functions() []*lambdaFunction {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	out := slices.Collect(maps.Values(ls.fns))
	slices.SortFunc(out, func(a, b *lambdaFunction) int { return strings.Compare(a.logicalID, b.logicalID) })
	return out
}

// failures are the invocations the service could not complete.
func (ls *lambdaService) failures() []string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return slices.Clone(ls.errs)
}

func (ls *lambdaService) fail(format string, args ...any) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.errs = append(ls.errs, fmt.Sprintf(format, args...))
}

// serve answers moto's invocation as Lambda's Invoke API does: the
// function's response, with X-Amz-Function-Error when its handler failed.
func (ls *lambdaService) serve(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	ls.mu.Lock()
	fn := ls.fns[name]
	ls.mu.Unlock()
	payload, err := io.ReadAll(r.Body)
	if fn == nil || err != nil {
		ls.fail("invocation of unknown function %q (%v)", name, err)
		http.Error(w, "no such function", http.StatusNotFound)
		return
	}
	body, failed, err := ls.invoke(r.Context(), fn, payload)
	if err != nil {
		ls.fail("%s: %v", fn.logicalID, err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if failed {
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// invoke runs one invocation of fn in an idle or a new environment. failed
// says the handler returned an error: aws-lambda-rie answers it with HTTP
// 200 and an {"errorType", "errorMessage"} body, and no header to tell it
// from a response (none of segpilot's handlers' responses has both keys).
//
// An environment can die while idle (aws-lambda-rie did in CI: the next
// invocation found its port closed). Lambda never runs an invocation in a
// dead execution environment, so an invocation whose environment refuses
// the connection, and has exited, runs in another: a refused connection
// carried nothing to the function. Each invocation has a connection of its
// own, so a dead environment refuses it rather than fail it half sent.
func (ls *lambdaService) invoke(ctx context.Context, fn *lambdaFunction, payload []byte) (body []byte, failed bool, err error) {
	fn.inFlight.Add(1)
	defer fn.inFlight.Add(-1)
	fn.invokes.Add(1)
	ls.started.Add(1)
	defer func(start time.Time) { fn.busy.Add(int64(time.Since(start))) }(time.Now())
	ctx, cancel := context.WithTimeout(ctx, time.Duration(fn.timeout)*time.Second+30*time.Second)
	defer cancel()
	for tries := 1; ; tries++ {
		env, err := ls.take(fn)
		if err != nil {
			return nil, false, err
		}
		body, err = env.post(ctx, payload)
		if err == nil {
			ls.release(fn, env)
			break
		}
		how := env.died(2 * time.Second)
		env.kill() // not trusted with another invocation
		if how != "" && errors.Is(err, syscall.ECONNREFUSED) && tries < 3 {
			ls.bury(fn, how)
			continue
		}
		if how != "" {
			err = fmt.Errorf("%w\n%s", err, how)
		}
		return nil, false, fmt.Errorf("invoking: %w", err)
	}
	var fe struct {
		ErrorType    *string `json:"errorType"`
		ErrorMessage *string `json:"errorMessage"`
	}
	failed = json.Unmarshal(body, &fe) == nil && fe.ErrorType != nil && fe.ErrorMessage != nil
	return body, failed, nil
}

// post sends one invocation to the environment, on a connection of its own.
func (e *environment) post(ctx context.Context, payload []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("aws-lambda-rie answered HTTP %d: %s", resp.StatusCode, body)
	}
	return body, err
}

// bury records an environment that died between invocations. Its death is
// the test's failure only if the function's own code crashed it (a Go
// trace through segpilot's packages); an emulator's crash is logged.
func (ls *lambdaService) bury(fn *lambdaFunction, how string) {
	if strings.Contains(how, "goroutine ") && strings.Contains(how, modulePath+"/") {
		ls.fail("%s: an execution environment died between invocations, crashed by the function's code: %s", fn.logicalID, how)
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.deaths = append(ls.deaths, fn.logicalID+": "+how)
}

// buried are the environments that died between invocations.
func (ls *lambdaService) buried() []string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return slices.Clone(ls.deaths)
}

func (ls *lambdaService) take(fn *lambdaFunction) (*environment, error) {
	ls.mu.Lock()
	if ls.closed {
		ls.mu.Unlock()
		return nil, fmt.Errorf("the test is over")
	}
	if n := len(fn.idle); n > 0 {
		env := fn.idle[n-1]
		fn.idle = fn.idle[:n-1]
		ls.mu.Unlock()
		return env, nil
	}
	ls.mu.Unlock()
	env, err := ls.start(fn)
	if err != nil {
		return nil, err
	}
	fn.cold.Add(1)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.all = append(ls.all, env)
	if ls.closed { // the cleanup has run meanwhile
		env.kill()
		return nil, fmt.Errorf("the test is over")
	}
	return env, nil
}

func (ls *lambdaService) release(fn *lambdaFunction, env *environment) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	fn.idle = append(fn.idle, env)
}

// start runs a new aws-lambda-rie with fn's bootstrap and waits until it
// accepts connections. The ports it is given were free a moment before,
// but under load another connection may take one first (its local port
// comes from the same range): aws-lambda-rie then exits at once, and the
// environment is started again on other ports. Lambda never fails an
// invocation for such a reason, so neither may the test.
func (ls *lambdaService) start(fn *lambdaFunction) (*environment, error) {
	var errs []error
	for range 5 {
		env, err := ls.startOnce(fn)
		if err == nil {
			return env, nil
		}
		errs = append(errs, err)
		if !errors.Is(err, errExitedEarly) {
			break
		}
	}
	return nil, errors.Join(errs...)
}

var errExitedEarly = errors.New("aws-lambda-rie exited at start")

func (ls *lambdaService) startOnce(fn *lambdaFunction) (*environment, error) {
	api, err := freeAddr()
	if err != nil {
		return nil, err
	}
	rapi, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(ls.rie, "--runtime-interface-emulator-address", api, "--runtime-api-address", rapi, fn.bootstrap)
	cmd.Env = fn.environ
	cmd.Dir = filepath.Dir(fn.bootstrap)
	logs := &testutil.SyncBuffer{}
	cmd.Stdout = io.MultiWriter(fn.logs, logs)
	cmd.Stderr = cmd.Stdout
	// Its own process group, so a kill also ends the bootstrap it runs;
	// and killed with the test process, should that die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	dieWithParent(cmd.SysProcAttr)
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting aws-lambda-rie: %w", err)
	}
	env := &environment{url: "http://" + api + "/2015-03-31/functions/function/invocations", cmd: cmd, exited: make(chan error, 1), logs: logs}
	go func() { env.exited <- cmd.Wait() }()
	exitedEarly := func() error {
		if ended, err := env.ended(0); ended {
			return fmt.Errorf("%w (%v) on %s and %s; see the function's log", errExitedEarly, err, api, rapi)
		}
		return nil
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", api, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			// What answered may be another process on a port taken
			// meanwhile: this one would have exited by now, failing to
			// bind its own (it binds both at once, within milliseconds).
			time.Sleep(50 * time.Millisecond)
			if err := exitedEarly(); err != nil {
				return nil, err
			}
			return env, nil
		}
		if err := exitedEarly(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			env.kill()
			return nil, fmt.Errorf("aws-lambda-rie not listening on %s after 15 s", api)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *environment) kill() {
	_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL) // the group may be gone already
	err := <-e.exited
	e.exited <- err
}

// handedOut are the ports freeAddr gave, never given twice: the kernel
// may offer a port again once its probe closed, while the environment
// given it first is still starting.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr() (string, error) {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("finding a free port: %w", err)
		}
		addr := l.Addr().(*net.TCPAddr)
		if err := l.Close(); err != nil {
			return "", err
		}
		handedOut.Lock()
		seen := handedOut.ports[addr.Port]
		handedOut.ports[addr.Port] = true
		handedOut.Unlock()
		if !seen {
			return addr.String(), nil
		}
	}
}
