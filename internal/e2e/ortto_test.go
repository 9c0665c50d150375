package e2e

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/local"
	orttosim "github.com/segpilot/segpilot/shared/ortto/sim"
	"github.com/segpilot/segpilot/shared/run"
)

// TestMovingFromAutopilotToOrtto: one config with a connection of each
// kind and an export of one segment to each; one drop runs both, each
// destination ends up holding the segment, and each export sends only its
// own delta next week. (README: "Moving from Autopilot to Ortto".)
func TestMovingFromAutopilotToOrtto(t *testing.T) {
	t.Parallel()
	ap, ortto := destinations[0], destinations[1]
	sims := map[string]simulator{}
	urls := map[string]string{}
	for _, d := range []destination{ap, ortto} {
		s := d.newSim(simOptions{})
		srv := httptest.NewServer(s)
		t.Cleanup(srv.Close)
		sims[d.kind], urls[d.kind] = s, srv.URL+"/v1"
	}
	p, err := local.New(local.Options{BucketDir: t.TempDir(), Secrets: fixedKey(apiKey), BaseURLs: urls,
		RetrySleep: noWait, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	both := configYAML(ap, "mirror", 100)
	o := configYAML(ortto, "mirror", 100)
	connections, exports, _ := strings.Cut(o, "exports:\n")
	both = strings.Replace(both, "exports:\n", strings.TrimPrefix(connections, "connections:\n")+"exports:\n", 1) +
		strings.Replace(exports, "  vip-newsletter:", "  vip-newsletter-ortto:", 1)
	h := &harness{t: t, p: p}
	h.put(run.ConfigKey, []byte(both))

	for _, week := range []sample.Options{
		{Rows: 800, Seed: 31, Invalid: 20, Dupes: 10},
		{Rows: 800, Seed: 31, Invalid: 20, Dupes: 10, Changed: 30, Removed: 15, Added: 12},
	} {
		data := generate(t, week)
		res := h.drop("week.csv", data)
		if len(res) != 2 {
			t.Fatalf("one drop started %d runs, want one per export: %+v", len(res), res)
		}
		for _, r := range res {
			rep := h.report(r)
			if rep.Status != run.StatusSucceeded || !rep.Outcome.Reconciles() {
				t.Fatalf("%s: %s %s", r.Export, rep.Status, rep.Message)
			}
		}
		if res[0].Counts != res[1].Counts {
			t.Errorf("the exports planned differently from one file: %+v vs %+v", res[0].Counts, res[1].Counts)
		}
		want := expected(t, data)
		for _, d := range []destination{ap, ortto} {
			dh := &harness{t: t, d: d, sim: sims[d.kind]}
			dh.assertState(want)
		}
	}
}

// TestOrttoKeyOfAnotherRegionStopsTheRun: Ortto refuses a key on another
// region's host; the run fails at once, saying to check the region, and
// sends nothing but the one request that met the refusal.
func TestOrttoKeyOfAnotherRegionStopsTheRun(t *testing.T) {
	t.Parallel()
	d := destinations[1]
	d.newSim = func(o simOptions) simulator {
		return orttoSim{orttosim.New(orttosim.Options{APIKey: "a-global-key", OtherRegions: map[string]string{apiKey: "eu"}})}
	}
	h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 100))
	res := h.drop("a.csv", generate(t, sample.Options{Rows: 300, Seed: 2}))
	if res[0].Status != run.StatusFailed || !strings.Contains(res[0].Message, "Ortto refused the API key") || !strings.Contains(res[0].Message, "region") {
		t.Fatalf("result %+v", res[0])
	}
	if c := h.sim.Counters(); c.Total != 1 || c.ByStatus[401] != 1 {
		t.Fatalf("the destination saw %v", c.ByRoute)
	}
}

// TestOrttoMissingFieldSendsNothing: an export naming a custom field the
// account lacks (and not allowed to create it) is invalid before any
// person is sent, and says how to fix it.
func TestOrttoMissingFieldSendsNothing(t *testing.T) {
	t.Parallel()
	d := destinations[1]
	h := newHarness(t, d, simOptions{}, strings.Replace(configYAML(d, "upsert", 100), "    createFields: true\n", "", 1))
	res := h.drop("a.csv", generate(t, sample.Options{Rows: 300, Seed: 2}))
	rep := h.report(res[0])
	if rep.Status != run.StatusInvalid || !strings.Contains(rep.Message, "str:cm:loyalty-tier does not exist") || !strings.Contains(rep.Message, "createFields") {
		t.Fatalf("report %s: %s", rep.Status, rep.Message)
	}
	if c := h.sim.Counters(); c.Total != 1 || c.ByRoute["POST /person/custom-field/get"][200] != 1 {
		t.Fatalf("the destination saw %v; want only the field check", c.ByRoute)
	}
	// Fixed in Ortto, the same file runs: the run resumes its plan.
	o := h.sim.(orttoSim)
	for name, typ := range map[string]string{"Loyalty Tier": "text", "Lifetime Orders": "integer"} {
		if _, err := o.CreateField(name, typ); err != nil {
			t.Fatal(err)
		}
	}
	again := h.refresh(run.RefreshRequest{Trigger: run.TriggerManual, Export: "vip-newsletter"})
	if again[0].Status != run.StatusSucceeded {
		t.Fatalf("after creating the fields: %+v", again)
	}
}

// TestOrttoSuppressedAddressesAreReportedNotCreated: an address on the
// account's suppression list is a rejected row, not a new person.
func TestOrttoSuppressedAddressesAreReportedNotCreated(t *testing.T) {
	t.Parallel()
	d := destinations[1]
	h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 100))
	h.sim.(orttoSim).Suppress(sample.Email(5))
	rep := h.report(h.drop("a.csv", csvRange(1, 50, "gold"))[0])
	if rep.Outcome.RejectedByAPI != 1 || rep.Outcome.Sent != 49 {
		t.Fatalf("outcome %+v", rep.Outcome)
	}
	if _, created := h.sim.holds()[sample.Email(5)]; created {
		t.Error("a suppressed address was created")
	}
	if rejected := string(mustRead(t, h.dir+"/"+rep.Rejected)); !strings.Contains(rejected, "rejected by Ortto: suppressed in Ortto") {
		t.Errorf("rejected.csv:\n%s", rejected)
	}
}
