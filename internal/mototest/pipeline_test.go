//go:build unix

// Package mototest runs segpilot's real pipeline on an interpreter of
// Step Functions written by someone else: moto's (LocalStack's ASL
// interpreter), with template.yaml deployed into moto as CloudFormation
// would deploy it, the four real bootstraps run under aws-lambda-rie behind
// moto's Lambda Invoke, S3 and Secrets Manager on moto, S3's notifications
// delivered to the functions they name, and the Autopilot simulator as the
// destination. Where moto's interpreter differs from AWS on what the
// definition uses, moto_pipeline.py's work_around_moto_gaps makes it do
// what AWS does; the definition itself is deployed unmodified.
//
// The scenarios assert outcomes only (the runs' reports, what the
// simulator holds and received, computed independently from the generated
// files), never object names, execution names or step counts.
package mototest

import (
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/autopilot/sim"
	"github.com/segpilot/segpilot/shared/httpx"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/simkit"
)

const (
	apiKey     = "ak-MOTOTEST-5b0e2c7d9f1a4e36"
	revokedKey = "ak-REVOKED-0c4f7a2e9b1d6e83"
	listTitle  = "VIP customers" // the shipped example's list

	upsertRoute = "POST /contacts"
	removeRoute = "DELETE /list/{list}/contact/{contact}"
)

// destination is one Autopilot connection of the test's config: its own
// simulator on loopback, its own secret, and the export that sends to it.
type destination struct {
	export  string
	segment string
	mode    string
	rps     float64
	secret  string // what the connection's secret holds
	sim     *sim.Server
	url     string
	// revokeAt, when set, revokes the key at the simulator from the first
	// request on this route on: every request from then on carries a key
	// the simulator refuses, as if the key had been revoked in Autopilot.
	revokeAt string
	revoked  atomic.Bool
	// stormEmail, when set, has the first stormLen sends of its batch
	// answered 503: longer than the client retries, so only the state
	// machine's Retry of the group gets the batch through.
	stormEmail string
	stormLen   int64
	stormed    atomic.Int64
}

func (dst *destination) serve(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + strings.TrimPrefix(r.URL.Path, "/v1")
	if dst.revokeAt != "" && route == dst.revokeAt {
		dst.revoked.Store(true)
	}
	if dst.revoked.Load() {
		r.Header.Set("autopilotapikey", revokedKey)
	}
	if dst.stormEmail != "" && route == upsertRoute {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if bytes.Contains(bytes.ToLower(body), []byte(`"`+dst.stormEmail+`"`)) && dst.stormed.Add(1) <= dst.stormLen {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":"Service Unavailable","message":"injected storm"}`)
			return
		}
	}
	dst.sim.ServeHTTP(w, r)
}

// TestPipelineOnMoto deploys template.yaml into moto and runs each
// scenario through S3, the functions and moto's Step Functions.
func TestPipelineOnMoto(t *testing.T) {
	start := time.Now()
	d := deploy(t)
	t.Logf("deployed in %v", time.Since(start).Round(time.Millisecond))

	large := 20000
	if testing.Short() {
		large = 5000
	}
	// One connection, export and simulator per scenario, all in one
	// config. At the most a budget may be (100 requests/s: 40 workers),
	// pacing takes little of the test's time.
	dests := map[string]*destination{
		"main": {export: "vip-newsletter", segment: "vip-customers", mode: "mirror", rps: 100},
		// A batch stormed one send past the client's attempts.
		"faults": {export: "faults", segment: "faults", mode: "mirror", rps: 100,
			stormEmail: sample.Email(1500), stormLen: httpx.DefaultMaxAttempts + 1},
		// The secret holds a key the simulator never accepted.
		"refused": {export: "refused-at-ingest", segment: "refused-at-ingest", mode: "mirror", rps: 5, secret: revokedKey},
		// Revoked at the first send. At 1 request/s there are 2 workers
		// for more groups than that, so whether the Map stops shows.
		"revoked": {export: "revoked-after-ingest", segment: "revoked-after-ingest", mode: "mirror", rps: 1, revokeAt: upsertRoute},
		"large":   {export: "large", segment: "large", mode: "mirror", rps: 100},
	}
	for name, dst := range dests {
		opts := sim.Options{APIKey: apiKey, RetryAfter: true}
		if name == "faults" {
			// Bursts of 429s and 5xx answers, deterministic for a request order.
			// The n-th request meets the same faults on every run, so
			// the counts are stable: the seed's first requests (ingest
			// finding the list) are not all refused.
			opts.Faults = simkit.Faults{ServerErrorRate: 0.1, ThrottleBurstRate: 0.04, ThrottleBurstLen: 2}
			opts.Seed = 15
		}
		dst.sim = sim.New(opts)
		srv := httptest.NewServer(http.HandlerFunc(dst.serve))
		t.Cleanup(srv.Close)
		dst.url = srv.URL + "/v1"
		if dst.secret == "" {
			dst.secret = `{"apiKey":"` + apiKey + `"}`
		}
		d.putSecret(t, "segpilot/autopilot-"+name, dst.secret)
	}
	d.put(t, run.ConfigKey, configFor(t, dests))

	t.Run("first run", func(t *testing.T) {
		dst := dests["main"]
		data := generate(t, sample.Options{Rows: 2000, Seed: 21, Invalid: 97, Dupes: 50})
		want := expected(t, data)
		rep := d.drop(t, dst, "week 1.csv", data) // a space: S3 sends the key URL-encoded
		o := rep.Outcome
		if rep.Status != run.StatusSucceeded || !o.Reconciles() || o.Sent != len(want) || o.Failed != 0 ||
			o.Rejected == 0 || o.Duplicates == 0 || !rep.SnapshotPromoted {
			t.Fatalf("report: %s %q, outcome %+v, promoted %v; want succeeded, %d sent, the file's rejected rows and duplicates counted, promoted",
				rep.Status, rep.Message, o, rep.SnapshotPromoted, len(want))
		}
		assertHolds(t, dst, want)
		c := dst.sim.Counters()
		if rep.Requests.Total != c.Total {
			t.Errorf("the report counts %d requests; the simulator received %d", rep.Requests.Total, c.Total)
		}
		// The list is found (and created) once, before the fan-out, and
		// handed to every worker: no worker looks for it again.
		if n := sum(c.ByRoute["GET /lists"]) + sum(c.ByRoute["POST /list"]); n > 2 {
			t.Errorf("the simulator was asked for the list %d times; want it found and created once", n)
		}

		// A person runs the export again by hand (events/manual.json): the
		// file was exported already, so nothing starts.
		var res []run.Result
		d.invoke(t, "RefreshFunction", readRepoFile(t, "events/manual.json"), &res)
		if len(res) != 1 || res[0].Export != dst.export || res[0].Status != run.StatusUpToDate || res[0].Started {
			t.Fatalf("refresh with events/manual.json answered %+v; want %s up to date", res, dst.export)
		}
		// The schedule (events/schedule.json, EventBridge's shape) re-runs
		// every enabled export: this one is up to date, the others have
		// no file yet.
		res = nil
		d.invoke(t, "RefreshFunction", readRepoFile(t, "events/schedule.json"), &res)
		if len(res) != len(dests) {
			t.Fatalf("the scheduled refresh answered %+v; want one result per export (%d)", res, len(dests))
		}
		for _, r := range res {
			if want := map[bool]string{true: run.StatusUpToDate, false: run.StatusNoInput}[r.Export == dst.export]; r.Status != want || r.Started {
				t.Errorf("the scheduled refresh answered %+v for %s; want %s", r, r.Export, want)
			}
		}
		if reps := d.reports(t, dst.export); len(reps) != 1 {
			t.Fatalf("after up-to-date refreshes, %s has %d reports; want the first run's only", dst.export, len(reps))
		}
		d.checkHealthy(t)
	})

	t.Run("delta", func(t *testing.T) {
		dst := dests["main"]
		if dst.sim.Counters().ContactsUpserted == 0 {
			t.Skip("the first run sent nothing; see its failure")
		}
		week2 := sample.Options{Rows: 2000, Seed: 21, Invalid: 97, Dupes: 50, Changed: 10, Removed: 2, Added: 30}
		truth := sample.DeltaOf(week2)
		if len(truth.Changed) < 10 || len(truth.Removed) == 0 || len(truth.Added) < 20 {
			t.Fatalf("generator: %d changed, %d removed, %d added; want about 1 %% changed, some leavers and joiners",
				len(truth.Changed), len(truth.Removed), len(truth.Added))
		}
		dst.sim.ResetCounters()
		data := generate(t, week2)
		want := expected(t, data)
		rep := d.drop(t, dst, "week 2.csv", data)
		o := rep.Outcome
		sent := len(truth.Changed) + len(truth.Added)
		if rep.Status != run.StatusSucceeded || !o.Reconciles() || o.Sent != sent || o.Removed != len(truth.Removed) ||
			o.Unchanged != len(want)-sent || o.Failed != 0 || o.RemoveFailed != 0 || !rep.SnapshotPromoted {
			t.Fatalf("report: %s %q, outcome %+v; want succeeded, %d sent (changed and joiners), %d removed, %d unchanged",
				rep.Status, rep.Message, o, sent, len(truth.Removed), len(want)-sent)
		}
		// Exactly the changed and the joining contacts were sent, once each.
		got := dst.sim.Upserted()
		for _, e := range slices.Concat(truth.Changed, truth.Added) {
			if got[e] != 1 {
				t.Errorf("%s upserted %d times, want once", e, got[e])
			}
			delete(got, e)
		}
		if len(got) != 0 {
			t.Errorf("%d contacts that did not change were sent too, e.g. %v", len(got), slices.Sorted(maps.Keys(got))[:min(3, len(got))])
		}
		if n := dst.sim.Counters().ByRoute[removeRoute][http.StatusOK]; n != len(truth.Removed) {
			t.Errorf("%d removals from the list; %d contacts left the segment", n, len(truth.Removed))
		}
		assertHolds(t, dst, want)
		d.checkHealthy(t)
	})

	t.Run("faults", func(t *testing.T) {
		dst := dests["faults"]
		data := generate(t, sample.Options{Rows: 2000, Seed: 5, Invalid: 101})
		want := expected(t, data)
		rep := d.drop(t, dst, "monday.csv", data)
		o := rep.Outcome
		if rep.Status != run.StatusSucceeded || !o.Reconciles() || o.Sent != len(want) || o.Failed != 0 || !rep.SnapshotPromoted {
			t.Fatalf("report: %s %q, outcome %+v; want succeeded with all %d sent despite the faults", rep.Status, rep.Message, o, len(want))
		}
		assertHolds(t, dst, want)
		c := dst.sim.Counters()
		if c.Injected.ServerErrors == 0 || c.Injected.Throttled == 0 {
			t.Fatalf("faults injected: %+v; want both 5xx answers and 429 bursts, or this scenario proves nothing", c.Injected)
		}
		// The storm outlasted the client's retries: its batch went through
		// only because the state machine retried the group (Transient).
		if n := dst.stormed.Load(); n <= dst.stormLen {
			t.Fatalf("%s's batch was sent %d times; the storm answers the first %d, so it was never delivered", dst.stormEmail, n, dst.stormLen)
		}
		if got := int64(rep.Requests.Total); got != int64(c.Total)+dst.stormLen || rep.Requests.Retries == 0 {
			t.Errorf("the report counts %d requests (%d retries); the simulator received %d, the storm answered %d",
				got, rep.Requests.Retries, c.Total, dst.stormLen)
		}
		d.checkHealthy(t)
	})

	t.Run("key refused at ingest", func(t *testing.T) {
		dst := dests["refused"]
		rep := d.drop(t, dst, "a.csv", generate(t, sample.Options{Rows: 300, Seed: 3}))
		if (rep.Status != run.StatusFailed && rep.Status != run.StatusRefused) || !strings.Contains(rep.Message, "refused the API key") {
			t.Fatalf("report: %s %q; want the run refused or failed, saying the key was refused", rep.Status, rep.Message)
		}
		assertNothingSent(t, dst)
		d.checkHealthy(t)
	})

	t.Run("key revoked after ingest", func(t *testing.T) {
		dst := dests["revoked"]
		rep := d.drop(t, dst, "a.csv", generate(t, sample.Options{Rows: 10000, Seed: 4}))
		o := rep.Outcome
		// (The attempt still leaves a snapshot, row by row: every contact
		// it was to send is unknown, so the next run sends them all.)
		if rep.Status != run.StatusFailed || !strings.Contains(rep.Message, "refused the API key") ||
			o.Sent != 0 || !o.Reconciles() || o.Failed != o.Rows-o.Rejected-o.Duplicates-o.Unchanged {
			t.Fatalf("report: %s %q, outcome %+v; want failed, saying the key was refused, nothing sent, every contact failed",
				rep.Status, rep.Message, o)
		}
		if !dst.revoked.Load() {
			t.Fatal("the key was never revoked: no contact was ever sent to the simulator")
		}
		assertNothingSent(t, dst)
		// The Map stops at the first refusal (Unauthorized -> StopRun fails
		// it): besides the children already running, none starts, so the
		// simulator refuses at most one send per worker. (10,000 contacts at
		// 1 request/s make more groups than workers.)
		workers, _ := run.Pacing(dst.rps)
		if n := dst.sim.Counters().ByRoute[upsertRoute][http.StatusUnauthorized]; n > workers {
			t.Fatalf("the simulator refused %d sends; the Map should have stopped after at most %d (one per worker)", n, workers)
		}
		d.checkHealthy(t)
	})

	t.Run(strconv.Itoa(large)+" rows", func(t *testing.T) {
		dst := dests["large"]
		data := generate(t, sample.Options{Rows: large, Seed: 9})
		want := expected(t, data)
		rep := d.drop(t, dst, "all.csv", data)
		o := rep.Outcome
		if rep.Status != run.StatusSucceeded || !o.Reconciles() || o.Rows != large || o.Sent != large || !rep.SnapshotPromoted {
			t.Fatalf("report: %s %q, outcome %+v; want succeeded, all %d sent", rep.Status, rep.Message, o, large)
		}
		assertHolds(t, dst, want)
		d.checkHealthy(t)
	})

	// No function ever logged an API key, whatever happened above.
	for _, fn := range d.lambda.functions() {
		for _, key := range []string{apiKey, revokedKey} {
			if strings.Contains(fn.logs.String(), key) {
				t.Errorf("%s's output contains an API key", fn.logicalID)
			}
		}
	}
	for _, fn := range d.lambda.functions() {
		t.Logf("%s: %d invocations in %d environments, %v busy", fn.logicalID, fn.invokes.Load(), fn.cold.Load(),
			time.Duration(fn.busy.Load()).Round(time.Millisecond))
	}
	t.Logf("all scenarios in %v", time.Since(start).Round(time.Millisecond))
}

// drop puts a segment file under the destination's segment, as an
// upstream job does, and waits for its run's report.
func (d *deployment) drop(t *testing.T, dst *destination, name string, data []byte) *run.Report {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("what the deployment did:\n%s", d.diagnose())
		}
	})
	start := time.Now()
	info := d.put(t, "segments/"+dst.segment+"/"+name, data)
	rep := d.settle(t, dst.export, info, 90*time.Second)
	t.Logf("%s: %s in %v (the run's own %.1f s): %d rows, %d sent, %d removed, %d failed; %d requests, %d retries, %d throttled",
		info.Key, rep.Status, time.Since(start).Round(time.Millisecond), rep.DurationSeconds, rep.Outcome.Rows, rep.Outcome.Sent,
		rep.Outcome.Removed, rep.Outcome.Failed, rep.Requests.Total, rep.Requests.Retries, rep.Requests.Throttled)
	return rep
}

// reports are an export's reports.
func (d *deployment) reports(t *testing.T, export string) []*run.Report {
	t.Helper()
	reps, err := run.ListReports(t.Context(), d.store, export)
	if err != nil {
		t.Fatal(err)
	}
	return reps
}

// configFor is config/exports.yaml for the destinations: the shipped
// example's Autopilot connection and export, once per destination, each
// pointed at its simulator, with its own secret, budget, segment and mode.
func configFor(t *testing.T, dests map[string]*destination) []byte {
	t.Helper()
	var example struct {
		Connections map[string]map[string]any `yaml:"connections"`
		Exports     map[string]map[string]any `yaml:"exports"`
	}
	if err := yaml.Unmarshal(testutil.ExampleConfig(t, "autopilot"), &example); err != nil {
		t.Fatal(err)
	}
	if len(example.Connections) != 1 || len(example.Exports) != 1 {
		t.Fatalf("the example has %d Autopilot connections and %d exports; want one of each to copy", len(example.Connections), len(example.Exports))
	}
	var conn, export map[string]any
	for _, c := range example.Connections {
		conn = c
	}
	for _, e := range example.Exports {
		export = e
	}
	out := map[string]any{"connections": map[string]any{}, "exports": map[string]any{}}
	for name, dst := range dests {
		c := maps.Clone(conn)
		c["baseURL"], c["apiKeySecret"], c["requestsPerSecond"] = dst.url, "segpilot/autopilot-"+name, dst.rps
		out["connections"].(map[string]any)["autopilot-"+name] = c
		e := maps.Clone(export)
		e["connection"], e["segment"], e["mode"] = "autopilot-"+name, dst.segment, dst.mode
		out["exports"].(map[string]any)[dst.export] = e
	}
	raw, err := yaml.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func generate(t testing.TB, o sample.Options) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := sample.Write(&b, o); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func readRepoFile(t testing.TB, rel string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// contact is what Autopilot should hold for one profile.
type contact struct {
	first, last, tier string
	orders            float64
}

// expected is an oracle independent of segpilot's reader: the valid,
// deduplicated (last row wins) profiles of a generated file, by lower-case
// email, read as the example's match maps them.
func expected(t testing.TB, data []byte) map[string]contact {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(data))
	if _, err := r.Read(); err != nil {
		t.Fatal(err)
	}
	out := map[string]contact{}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		email := strings.ToLower(rec[1])
		at := strings.Index(email, "@")
		orders, oerr := strconv.Atoi(rec[5])
		if at < 1 || strings.Count(email, "@") != 1 || strings.ContainsAny(email, " <>") ||
			!strings.Contains(email[at:], ".") || oerr != nil {
			continue
		}
		out[email] = contact{first: rec[2], last: rec[3], tier: rec[4], orders: float64(orders)}
	}
	return out
}

// assertHolds checks the simulator holds every contact of want as the
// file gave it, all of them on the list, and nobody else on the list.
func assertHolds(t *testing.T, dst *destination, want map[string]contact) {
	t.Helper()
	state := dst.sim.Dump()
	got := map[string]sim.Contact{}
	for _, c := range state.Contacts {
		got[strings.ToLower(c.Email)] = c
	}
	bad := 0
	for email, w := range want {
		c, ok := got[email]
		h := contact{}
		if ok {
			h.first, _ = c.Fields["FirstName"].(string)
			h.last, _ = c.Fields["LastName"].(string)
			h.tier, _ = c.Custom["string--Loyalty--Tier"].(string)
			h.orders, _ = c.Custom["integer--Lifetime--Orders"].(float64)
		}
		if !ok || h != w {
			if bad++; bad <= 5 {
				t.Errorf("%s: Autopilot holds %+v (present: %v), want %+v", email, h, ok, w)
			}
		}
	}
	var members []string
	for _, l := range state.Lists {
		if l.Title == listTitle {
			for _, m := range l.Members {
				members = append(members, strings.ToLower(m))
			}
		}
	}
	slices.Sort(members)
	if wantMembers := slices.Sorted(maps.Keys(want)); !slices.Equal(members, wantMembers) {
		t.Errorf("list %q has %d members, want exactly the segment's %d", listTitle, len(members), len(wantMembers))
	}
	if bad > 0 {
		t.Fatalf("%d of %d contacts wrong at the simulator", bad, len(want))
	}
}

func sum(byStatus map[int]int) int {
	n := 0
	for _, v := range byStatus {
		n += v
	}
	return n
}

// assertNothingSent checks no contact reached the destination.
func assertNothingSent(t *testing.T, dst *destination) {
	t.Helper()
	c := dst.sim.Counters()
	if n := c.ByRoute[upsertRoute][http.StatusOK]; n != 0 || c.ContactsUpserted != 0 || len(dst.sim.Dump().Contacts) != 0 {
		t.Fatalf("%d bulk upserts accepted, %d contacts upserted, %d contacts held; want nothing sent",
			n, c.ContactsUpserted, len(dst.sim.Dump().Contacts))
	}
}
