//go:build unix

package mototest

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// An execution environment that died while idle is never given an
// invocation: the next one runs in a new environment, and the death is
// recorded with how it ended (aws-lambda-rie died so in CI, failing a
// 20,000-row run for the emulator's sake). It fails the test only when a
// Go trace through segpilot's code is what the environment printed last.
func TestInvocationAfterAnEnvironmentDiedRunsInAnother(t *testing.T) {
	t.Parallel()
	paths, err := buildBootstraps(t.TempDir(), []string{"internal/mototest/testdata/echo"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, lastWords string
		failed          bool
	}{
		{name: "killed"},
		{name: "crashed by segpilot's code", failed: true,
			lastWords: "panic: boom\n\ngoroutine 7 [running]:\n" + modulePath + "/shared/run.(*Service).SyncBatch(...)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ls := newLambdaService(t)
			fn := ls.add(function{logicalID: "EchoFunction", name: "echo", timeout: 10},
				paths["internal/mototest/testdata/echo"], []string{"PATH=" + os.Getenv("PATH"), "AWS_LAMBDA_FUNCTION_TIMEOUT=10"})
			ctx := context.Background()
			first, _ := json.Marshal(map[string]string{"stderr": tc.lastWords})
			if body, failed, err := ls.invoke(ctx, fn, first); err != nil || failed || string(body) != string(first) {
				t.Fatalf("first invocation: %s, failed %v, %v", body, failed, err)
			}
			ls.mu.Lock()
			idle := fn.idle[0]
			ls.mu.Unlock()
			idle.kill()

			body, failed, err := ls.invoke(ctx, fn, []byte(`{"n":2}`))
			if err != nil || failed || string(body) != `{"n":2}` {
				t.Fatalf("the invocation after its environment died: %s, failed %v, %v; want it run in another", body, failed, err)
			}
			if n := fn.cold.Load(); n != 2 {
				t.Errorf("%d environments started; want 2", n)
			}
			deaths := ls.buried()
			if len(deaths) != 1 || !strings.Contains(deaths[0], "signal: killed") {
				t.Errorf("deaths recorded: %q; want the one killed", deaths)
			}
			f := ls.failures()
			if tc.failed && (len(f) != 1 || !strings.Contains(f[0], "crashed by the function's code")) {
				t.Errorf("failures: %q; want the death, crashed by segpilot's code", f)
			}
			if !tc.failed && len(f) != 0 {
				t.Errorf("failures: %q; an emulator's death is not the function's", f)
			}
		})
	}
}
