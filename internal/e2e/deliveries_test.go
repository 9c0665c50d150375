package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress"
	gzipcodec "github.com/parquet-go/parquet-go/compress/gzip"
	"github.com/parquet-go/parquet-go/compress/snappy"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/local"
	"github.com/segpilot/segpilot/shared/run"
)

// upstream is how one warehouse or job writes a segment: its parts (the
// file's rows split among them) and what completes the folder.
type upstream struct {
	name string
	// write returns the folder's objects, by name within the folder, in
	// the order the job writes them.
	write func(t *testing.T, header string, parts [][]string) []object
	// quiet: the folder is whole only by the export's quiet period.
	quiet bool
}

type object struct {
	name string
	data []byte
}

func csvPart(header string, rows []string) []byte {
	return []byte(header + "\n" + strings.Join(rows, "\n") + "\n")
}

// parquetPart writes rows (CSV lines under header) as a Parquet file of
// optional string columns, as a job exporting them as text would.
func parquetPart(t *testing.T, header string, rows []string, codec compress.Codec) []byte {
	t.Helper()
	records, err := csv.NewReader(strings.NewReader(header + "\n" + strings.Join(rows, "\n") + "\n")).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	columns := records[0]
	group := parquet.Group{}
	for _, c := range columns {
		group[c] = parquet.Optional(parquet.String())
	}
	var b bytes.Buffer
	w := parquet.NewWriter(&b, parquet.NewSchema("segment", group), parquet.Compression(codec))
	for _, rec := range records[1:] {
		row := map[string]any{}
		for i, c := range columns {
			if rec[i] != "" {
				row[c] = rec[i]
			}
		}
		if err := w.Write(row); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var upstreams = []upstream{
	{name: "snowflake", quiet: true, write: func(t *testing.T, header string, parts [][]string) []object {
		// COPY INTO @stage/<folder>/ FILE_FORMAT = (TYPE = CSV COMPRESSION = GZIP) HEADER = TRUE
		var out []object
		for i, rows := range parts {
			out = append(out, object{fmt.Sprintf("data_0_%d_0.csv.gz", i), gzipped(t, csvPart(header, rows))})
		}
		return out
	}},
	{name: "redshift", write: func(t *testing.T, header string, parts [][]string) []object {
		// UNLOAD ('…') TO 's3://bucket/segments/<segment>/<folder>/' FORMAT CSV HEADER GZIP MANIFEST
		var out []object
		var entries []string
		for i, rows := range parts {
			data := gzipped(t, csvPart(header, rows))
			name := fmt.Sprintf("%04d_part_00.gz", i)
			out = append(out, object{name, data})
			entries = append(entries, fmt.Sprintf(`{"url":"s3://warehouse/segments/vip-customers/unload/%s","meta":{"content_length":%d}}`, name, len(data)))
		}
		return append(out, object{"manifest", []byte(`{"entries":[` + strings.Join(entries, ",") + `]}`)})
	}},
	{name: "bigquery", quiet: true, write: func(t *testing.T, header string, parts [][]string) []object {
		// EXPORT DATA OPTIONS (uri = 's3://bucket/segments/<segment>/<folder>/*', format = 'CSV', header = true)
		var out []object
		for i, rows := range parts {
			out = append(out, object{fmt.Sprintf("%012d.csv", i), csvPart(header, rows)})
		}
		return out
	}},
	{name: "spark", write: func(t *testing.T, header string, parts [][]string) []object {
		// df.write.option("header", true).csv("s3://bucket/segments/<segment>/<folder>/")
		out := []object{{"_temporary/0/_temporary/attempt_1/part-00000.csv", []byte("scratch")}}
		for i, rows := range parts {
			out = append(out, object{fmt.Sprintf("part-%05d-8c2f-c000.csv", i), csvPart(header, rows)})
			out = append(out, object{fmt.Sprintf(".part-%05d-8c2f-c000.csv.crc", i), []byte("crc")})
		}
		return append(out, object{"_SUCCESS", nil})
	}},
	{name: "spark-parquet", write: func(t *testing.T, header string, parts [][]string) []object {
		// df.write.parquet("s3://bucket/segments/<segment>/<folder>/"): snappy by default
		var out []object
		for i, rows := range parts {
			out = append(out, object{fmt.Sprintf("part-%05d-8c2f-c000.snappy.parquet", i), parquetPart(t, header, rows, &snappy.Codec{})})
		}
		return append(out, object{"_SUCCESS", nil})
	}},
	{name: "athena", write: func(t *testing.T, header string, parts [][]string) []object {
		// UNLOAD (SELECT …) TO 's3://bucket/segments/<segment>/<folder>/' WITH (format = 'PARQUET')
		// (gzip by default), its data manifest copied beside the files
		var out []object
		var urls []string
		for i, rows := range parts {
			name := fmt.Sprintf("20261206_080000_00017_abcde_%d", i)
			out = append(out, object{name, parquetPart(t, header, rows, &gzipcodec.Codec{})})
			urls = append(urls, "s3://athena-results/unload/"+name)
		}
		return append(out, object{"20261206_080000_00017_abcde-manifest.csv", []byte(strings.Join(urls, "\n") + "\n")})
	}},
	{name: "customer-insights", write: func(t *testing.T, header string, parts [][]string) []object {
		// Export to storage: <table>/<yyyy>/<mm>/<dd>/<HHMM>/<table>_<n>.csv
		// without a header row, named by model.json's attributes.
		var out []object
		var attrs, partitions []string
		for _, c := range strings.Split(header, ",") {
			attrs = append(attrs, fmt.Sprintf(`{"name":%q,"dataType":"string"}`, c))
		}
		for i, rows := range parts {
			name := fmt.Sprintf("vip/2026/12/06/0800/vip_%d.csv", i+1)
			out = append(out, object{name, []byte(strings.Join(rows, "\n") + "\n")})
			partitions = append(partitions, fmt.Sprintf(`{"name":"vip_%d","location":"https://acct.dfs.core.windows.net/ci/vip/2026/12/06/0800/vip_%d.csv"}`, i+1, i+1))
		}
		model := `{"name":"ci","version":"1.0","entities":[{"$type":"LocalEntity","name":"vip","attributes":[` +
			strings.Join(attrs, ",") + `],"partitions":[` + strings.Join(partitions, ",") + `]}]}`
		return append(out, object{"model.json", []byte(model)})
	}},
}

// TestUpstreamDeliveriesRunOnce: each warehouse's way of writing a
// segment, its objects' S3 events shuffled and some twice, the completing
// object among them; in both execution models. Each runs once, after the
// folder is whole, with every row in one report, and the destination
// holds exactly the file's contacts.
func TestUpstreamDeliveriesRunOnce(t *testing.T) {
	t.Parallel()
	data := generate(t, sample.Options{Rows: 1200, Seed: 71, Invalid: 60, Dupes: 80})
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	header, rows := lines[0], lines[1:]
	var parts [][]string
	for i := 0; i < len(rows); i += 300 {
		parts = append(parts, rows[i:min(i+300, len(rows))])
	}
	for _, up := range upstreams {
		for _, lambda := range []bool{false, true} {
			model := "in-process"
			if lambda {
				model = "lambda"
			}
			t.Run(up.name+"/"+model, func(t *testing.T) {
				t.Parallel()
				d := destinations[0]
				config := configYAML(d, "upsert", 100)
				if up.quiet {
					config = strings.Replace(config, "    mode: upsert\n", "    mode: upsert\n    quietPeriod: 1m\n", 1)
				}
				var skew atomic.Int64 // the clock ahead of the disk's, for the quiet period
				opts := []func(*local.Options){func(o *local.Options) {
					o.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
				}}
				if lambda {
					opts = append(opts, func(o *local.Options) { o.Lambda = &local.LambdaModel{Seed: 5, Churn: 0.3} })
				}
				h := newHarness(t, d, simOptions{}, config, opts...)
				const folder = "segments/vip-customers/unload/"
				objs := up.write(t, header, parts)
				var keys []string
				for _, o := range objs {
					h.put(folder+o.name, o.data)
					keys = append(keys, folder+o.name)
				}
				events := append(append([]string{}, keys...), keys[0], keys[len(keys)-1])
				rand.New(rand.NewPCG(7, uint64(len(up.name)))).Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
				var started []run.Result
				for _, key := range events {
					res, err := awaitAll(context.Background(), h.p.Service, run.StartRequest{Trigger: run.TriggerS3, Source: run.Source{Key: key}})
					if err != nil {
						t.Fatal(err)
					}
					for _, r := range res {
						if r.Status != run.StatusWaiting && r.Status != run.StatusUpToDate {
							started = append(started, r)
						}
					}
				}
				if up.quiet {
					if len(started) != 0 {
						t.Fatalf("%v ran before the quiet period", started)
					}
					skew.Store(int64(2 * time.Minute))
					res, err := h.p.Service.Sweep(context.Background())
					if err == nil {
						res, err = awaitResults(context.Background(), h.p.Service, res)
					}
					if err != nil {
						t.Fatal(err)
					}
					started = res
				}
				if len(started) != 1 || started[0].Status != run.StatusSucceeded {
					t.Fatalf("runs %+v; want one, succeeded", started)
				}
				rep := h.report(started[0])
				if rep.Source.Key != folder || rep.Source.Parts != len(parts) || rep.Plan.Rows != len(rows) || !rep.Outcome.Reconciles() {
					t.Fatalf("report source %+v, plan %+v; want the folder's %d parts, %d rows", rep.Source, rep.Plan, len(parts), len(rows))
				}
				h.assertState(expected(t, data))
				if reps, _ := run.ListReports(context.Background(), h.p.Store, "vip-newsletter"); len(reps) != 1 {
					t.Fatalf("%d reports; want one run's", len(reps))
				}
			})
		}
	}
}

// A mirror export never runs a folder whose manifest names a part that is
// not there: a missing part would read as leavers.
func TestMirrorRefusesAFolderMissingAPart(t *testing.T) {
	t.Parallel()
	d := destinations[0]
	h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 100))
	h.drop("week1.csv", generate(t, sample.Options{Rows: 200, Seed: 72}))
	before := h.sim.holds()
	data := generate(t, sample.Options{Rows: 200, Seed: 72, Changed: 50})
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	const folder = "segments/vip-customers/week2/"
	h.put(folder+"0000_part_00", csvPart(lines[0], lines[1:101]))
	manifest, _ := json.Marshal(map[string]any{"entries": []map[string]string{
		{"url": "s3://wh/week2/0000_part_00"}, {"url": "s3://wh/week2/0001_part_00"}}})
	h.put(folder+"manifest", manifest)
	for _, key := range []string{folder + "0000_part_00", folder + "manifest"} {
		res, err := awaitAll(context.Background(), h.p.Service, run.StartRequest{Trigger: run.TriggerS3, Source: run.Source{Key: key}})
		if err != nil || len(res) != 1 || res[0].Status != run.StatusWaiting || !strings.Contains(res[0].Message, "0001_part_00") {
			t.Fatalf("%s: %+v, %v; want waiting for the missing part", key, res, err)
		}
	}
	if after := h.sim.holds(); len(after) != len(before) {
		t.Fatalf("the destination holds %d contacts, %d before: a partial folder ran", len(after), len(before))
	}
}
