package e2e

import (
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/local"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/simkit"
)

// BenchmarkExport100k runs the whole local pipeline (plan, the state
// machine's Map, syncbatch, finalize) for 100,000 profiles against each
// destination's simulator (sub-benchmarks autopilot, ortto), enforcing a
// budget of R requests/second
// (SEGPILOT_BENCH_RPS, default 20), then reruns it unchanged and with 1 %
// of profiles changed. It reports:
//   - elapsed/floor: first run's wall time over the report's floor
//     (requests / R), the fastest any exporter could go;
//   - 429-share: share of the first run's requests answered 429;
//   - rerun-requests: requests the unchanged rerun made (target 0);
//   - delta-requests and delta-target: requests the 1 % run made, and
//     ceil(changed/100) + 1, one bulk call per 100 profiles the generator
//     changed (its ground truth, not the planner's count) and the list's
//     lookup; the benchmark
//     fails unless the simulator received exactly those profiles, once each.
func BenchmarkExport100k(b *testing.B) {
	const rows = 100_000
	rps := 20
	if v := os.Getenv("SEGPILOT_BENCH_RPS"); v != "" {
		r, err := strconv.Atoi(v)
		if err != nil || r <= 0 {
			b.Fatalf("SEGPILOT_BENCH_RPS=%q: want a positive whole number", v)
		}
		rps = r
	}
	week1 := generate(b, sample.Options{Rows: rows, Seed: 5})
	week2Opts := sample.Options{Rows: rows, Seed: 5, Changed: 10}
	week2 := generate(b, week2Opts)
	changed := sample.DeltaOf(week2Opts).Changed

	for _, d := range destinations {
		b.Run(d.kind, func(b *testing.B) { benchExport(b, d, rps, week1, week2, changed) })
	}
}

func benchExport(b *testing.B, d destination, rps int, week1, week2 []byte, changed []string) {
	const rows = 100_000
	for b.Loop() {
		h := newHarness(b, d, simOptions{RequestsPerSecond: float64(rps), Burst: rps}, configYAML(d, "upsert", rps))
		start := time.Now()
		rep := h.report(h.drop("week1.csv", week1)[0])
		elapsed := time.Since(start)
		first := h.sim.Counters()
		if rep.Outcome.Sent != rows {
			b.Fatalf("first run sent %d of %d: %+v", rep.Outcome.Sent, rows, rep.Outcome)
		}

		h.drop("week1-again.csv", week1)
		rerun := h.sim.Counters().Total - first.Total

		h.sim.ResetCounters()
		rep2 := h.report(h.drop("week2.csv", week2)[0])
		delta := h.sim.Counters().Total
		if rep2.Plan.Changed != len(changed) || rep2.Outcome.Sent != len(changed) {
			b.Fatalf("1%% run: plan %+v outcome %+v; the generator changed %d", rep2.Plan, rep2.Outcome, len(changed))
		}
		upserted := h.sim.Upserted()
		for _, e := range changed {
			if upserted[e] != 1 {
				b.Fatalf("1%% run: changed contact %s upserted %d times, want once", e, upserted[e])
			}
			delete(upserted, e)
		}
		if len(upserted) != 0 {
			b.Fatalf("1%% run: %d unchanged contacts upserted too, e.g. %v", len(upserted), firstKeys(upserted, 3))
		}

		b.ReportMetric(elapsed.Seconds()/rep.FloorSeconds, "elapsed/floor")
		b.ReportMetric(float64(first.ByStatus[429])/float64(first.Total), "429-share")
		b.ReportMetric(float64(rerun), "rerun-requests")
		b.ReportMetric(float64(delta), "delta-requests")
		// Every run looks its list up again (Autopilot: GET /lists;
		// Ortto: custom-field/get) before it sends: one request.
		b.ReportMetric(math.Ceil(float64(len(changed))/100)+1, "delta-target")
	}
}

// BenchmarkPacing100k runs 100,000 profiles through the whole pipeline at
// a budget of 100 requests/s against each destination's simulator
// (sub-benchmarks <kind>/model=…) with a burst of 10, in
// both execution models — local (one process, one limiter) and lambda
// (each Map child in a simulated container pacing its own share, 10 %
// recycled after each invocation) — on a quiet network and with 0–80 ms
// of random delay per request, with the budget set 20 % and three times
// above the simulator's real limit, and on the local model with two busy
// loops running beside (cpu=busy). It reports:
//   - send/floor: the sending phase (first to last request, as the
//     simulator saw them) over the floor at the simulator's real rate
//     (requests / real rate): how well the workers pace together;
//   - elapsed/floor: the whole run (planning, the Map, finalize) over it;
//   - 429-share: share of requests answered 429;
//   - cold-starts: containers started (lambda model).
func BenchmarkPacing100k(b *testing.B) {
	const rows, budget = 100_000, 100.0
	data := generate(b, sample.Options{Rows: rows, Seed: 6})
	cases := []struct {
		name   string
		lambda bool
		jitter time.Duration
		real   float64 // the simulator's real limit
		busy   int     // CPU-bound processes running beside
	}{
		{"model=local/net=quiet", false, 0, budget, 0},
		{"model=lambda/net=quiet", true, 0, budget, 0},
		{"model=local/net=jitter80ms", false, 80 * time.Millisecond, budget, 0},
		{"model=lambda/net=jitter80ms", true, 80 * time.Millisecond, budget, 0},
		{"model=local/budget=120pct", false, 0, budget / 1.2, 0},
		{"model=lambda/budget=120pct", true, 0, budget / 1.2, 0},
		// A budget copied from the docs onto a smaller plan (Ortto:
		// Business's 30 on a Professional account's 10).
		{"model=local/budget=300pct", false, 0, budget / 3, 0},
		{"model=lambda/budget=300pct", true, 0, budget / 3, 0},
		// A laptop or a shared CI runner: two busy loops on a machine of
		// two cores.
		{"model=local/net=quiet/cpu=busy", false, 0, budget, 2},
	}
	for _, d := range destinations {
		for _, c := range cases {
			b.Run(d.kind+"/"+c.name, func(b *testing.B) {
				stop := busyLoops(b, c.busy)
				defer stop()
				benchPacing(b, d, data, c.lambda, c.jitter, c.real)
			})
		}
	}
}

func benchPacing(b *testing.B, d destination, data []byte, lambda bool, jitter time.Duration, real float64) {
	const rows, budget = 100_000, 100.0
	for b.Loop() {
		var model *local.LambdaModel
		if lambda {
			model = &local.LambdaModel{Seed: 7, Churn: 0.1}
		}
		h := newHarness(b, d, simOptions{RequestsPerSecond: real, Burst: 10, Faults: simkit.Faults{Jitter: jitter}, Seed: 7},
			configYAML(d, "upsert", int(budget)), func(o *local.Options) { o.Lambda = model })
		h.poll = cliPoll
		start := time.Now()
		rep := h.report(h.drop("week1.csv", data)[0])
		elapsed := rep.FinishedAt.Sub(start) // not when the wait saw it: up to a poll later
		cnt := h.sim.Counters()
		if rep.Outcome.Sent != rows || rep.Status != "succeeded" {
			b.Fatalf("run %s sent %d of %d: %+v", rep.Status, rep.Outcome.Sent, rows, rep.Outcome)
		}
		trueFloor := rep.FloorSeconds * budget / real
		b.ReportMetric(cnt.Span.Seconds()/trueFloor, "send/floor")
		b.ReportMetric(elapsed.Seconds()/trueFloor, "elapsed/floor")
		b.ReportMetric(float64(cnt.ByStatus[429])/float64(cnt.Total), "429-share")
		b.ReportMetric(rep.RateFound/real, "found/real") // 0: the report named no rate
		if h.p.Containers != nil {
			b.ReportMetric(float64(h.p.Containers().ColdStarts), "cold-starts")
		}
		h.release()
		runtime.GC() // the next iteration starts on an empty heap, as a fresh container would
	}
}

// busyLoops starts n processes spinning on a CPU each until stop.
func busyLoops(b *testing.B, n int) (stop func()) {
	var cmds []*exec.Cmd
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			b.Fatalf("starting a busy loop: %v", err)
		}
		cmds = append(cmds, cmd)
	}
	return func() {
		for _, cmd := range cmds {
			_ = cmd.Process.Kill() // it spins until killed; Wait reports the kill
			_ = cmd.Wait()
		}
	}
}

// BenchmarkRefused3k sends 3,000 contacts of which the destination
// refuses 20 (one in 150), per destination, at 20 requests/s, and reports
// the requests spent isolating them (isolate-requests: the run's requests
// less those of the same run with nothing refused) and the sending phase
// over the floor of the run's requests (send/floor), beside the least any
// pacing within the budget takes to send the requests the run made
// (least/floor: its first and last a request's interval apart, one after
// the other; a call refused is a call the API counts). It fails unless
// exactly the 20 are rejected and the rest sent.
func BenchmarkRefused3k(b *testing.B) {
	const rps = 20
	var refused []string
	for i := 150; i <= 3000; i += 150 {
		refused = append(refused, strconv.Itoa(i))
	}
	pattern := `^customer(` + strings.Join(refused, "|") + `)@`
	rows := csvRange(1, 3000, "gold")
	for _, d := range destinations {
		b.Run(d.kind, func(b *testing.B) {
			for b.Loop() {
				requests := func(faults simkit.Faults) (int, time.Duration, *run.Report) {
					h := newHarness(b, d, simOptions{Faults: faults}, configYAML(d, "upsert", rps))
					rep := h.report(h.drop("a.csv", rows)[0])
					cnt := h.sim.Counters()
					h.release()
					return cnt.Total, cnt.Span, rep
				}
				clean, _, _ := requests(simkit.Faults{})
				total, span, rep := requests(simkit.Faults{RejectEmails: pattern})
				if rep.Outcome.RejectedByAPI != len(refused) || rep.Outcome.Sent != 3000-len(refused) {
					b.Fatalf("run %s: %+v; want %d rejected, the rest sent", rep.Status, rep.Outcome, len(refused))
				}
				b.ReportMetric(float64(total-clean), "isolate-requests")
				b.ReportMetric(span.Seconds()/rep.FloorSeconds, "send/floor")
				b.ReportMetric(float64(total-1)/rps/rep.FloorSeconds, "least/floor")
			}
		})
	}
}

// BenchmarkRemove1k takes 1,000 leavers off a mirror export's list, per
// destination, and reports the requests the removals cost
// (requests/1000-removals): Autopilot removes one contact a request, Ortto
// 100 (unset_tags). It fails unless exactly those 1,000 left the list.
func BenchmarkRemove1k(b *testing.B) {
	for _, d := range destinations {
		b.Run(d.kind, func(b *testing.B) {
			for b.Loop() {
				h := newHarness(b, d, simOptions{}, configYAML(d, "mirror", 100)+"    allowLargeRemoval: true\n")
				h.drop("a.csv", csvRange(1, 2000, "gold"))
				h.sim.ResetCounters()
				rep := h.report(h.drop("b.csv", csvRange(1001, 2000, "gold"))[0])
				if rep.Status != "succeeded" || rep.Outcome.Removed != 1000 || len(h.sim.members()) != 1000 {
					b.Fatalf("run %s: removed %d, %d left on the list; want 1,000 and 1,000", rep.Status, rep.Outcome.Removed, len(h.sim.members()))
				}
				n := 0
				for _, v := range h.sim.Counters().ByRoute[d.removeRoute] {
					n += v
				}
				b.ReportMetric(float64(n), "requests/1000-removals")
			}
		})
	}
}
