//go:build unix

package lambdatest

import (
	"bytes"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/autopilot/sim"
	"github.com/segpilot/segpilot/shared/run"
)

// BenchmarkFirstInvoke measures a cold start of the refresh function under
// the runtime interface emulator: from starting the emulator to the answer
// of its first invocation (a dry run of the example export over a
// 300-row file in gofakes3), and then a warm invocation of the same.
func BenchmarkFirstInvoke(b *testing.B) {
	rie := rieBinary(b)
	bootstraps := hostBuild(b)
	s3URL, bkt := newS3(b, bucket)
	secretsSrv := httptest.NewServer(fakeSecrets{values: map[string]string{secretID: `{"apiKey":"` + apiKey + `"}`}})
	b.Cleanup(secretsSrv.Close)
	sfnSrv := httptest.NewServer(&fakeSFN{arn: machineARN})
	b.Cleanup(sfnSrv.Close)
	apSrv := httptest.NewServer(sim.New(sim.Options{APIKey: apiKey}))
	b.Cleanup(apSrv.Close)

	example, err := os.ReadFile("../../examples/exports.yaml")
	if err != nil {
		b.Fatal(err)
	}
	putObject(b, bkt, run.ConfigKey, []byte(strings.Replace(string(example), "https://api2.autopilothq.com/v1", apSrv.URL+"/v1", 1)))
	var csv bytes.Buffer
	if _, err := sample.Write(&csv, sample.Options{Rows: 300, Seed: 11}); err != nil {
		b.Fatal(err)
	}
	putObject(b, bkt, "segments/vip-customers/bench.csv", csv.Bytes())
	env := append(functionEnv(b, s3URL, secretsSrv.URL, sfnSrv.URL), "API_KEY_SECRET_ID="+secretID)
	event := mustJSON(b, readJSON(b, "events/manual-dry-run.json"))

	var first, warm time.Duration
	for b.Loop() {
		start := time.Now()
		e := startEmulator(b, rie, "refresh", bootstraps["refresh"], env)
		var res []run.Result
		e.call(b, event, &res)
		first += time.Since(start)
		if len(res) != 1 || res[0].Status != run.StatusDryRun {
			b.Fatalf("refresh answered %+v; want one dry run", res)
		}
		start = time.Now()
		e.call(b, event, &res)
		warm += time.Since(start)
	}
	b.ReportMetric(float64(first.Milliseconds())/float64(b.N), "first-invoke-ms")
	b.ReportMetric(float64(warm.Microseconds())/1000/float64(b.N), "warm-invoke-ms")
}
