package delivery

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key  string
		want Kind
	}{
		{"segments/vip/customers.csv", Data},
		{"segments/vip/run1/part-00000-1f2e.snappy.parquet", Data},
		{"segments/vip/run1/data_0_0_0.csv.gz", Data},
		{"segments/vip/run1/0000_part_00", Data},
		{"segments/vip/run1/_SUCCESS", Marker},
		{"segments/vip/run1/manifest", Manifest},
		{"segments/vip/run1/vip_manifest", Manifest},
		{"segments/vip/run1/manifest.json", Manifest},
		{"segments/vip/run1/4f1e-manifest.csv", Manifest},
		{"segments/vip/cdm/model.json", Manifest},
		{"segments/vip/run1/_temporary/0/part-00000", Ignored},
		{"segments/vip/run1/.part-00000.crc", Ignored},
		{"segments/vip/run1/part-00000.crc", Ignored},
		{"segments/vip/run1/_SUCCESS.crc", Ignored},
		{"segments/vip/.DS_Store", Ignored},
		{"segments/vip/~$customers.csv", Ignored},
		{"segments/vip/._customers.csv", Ignored},
		{"segments/vip/run1/_committed_123", Ignored},
		{"segments/vip/run1/_started_123", Ignored},
		{"segments/vip/run1/_metadata", Ignored},
		{"segments/vip/run1_$folder$", Ignored},
		{"segments/vip/.hidden/part-0.csv", Ignored},
		{"part-00000.csv", Data}, // a key of a folder read on its own
		{"_SUCCESS", Marker},
	}
	for _, tt := range tests {
		if got := Classify(tt.key); got != tt.want {
			t.Errorf("Classify(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}

func TestOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key, segment, folder string
		wantErr              bool
	}{
		{"segments/vip/a.csv", "vip", "", false},
		{"segments/vip/run1/part-0.csv", "vip", "segments/vip/run1/", false},
		{"segments/vip/cdm/vip/2026/12/06/0800/vip_1.csv", "vip", "segments/vip/cdm/", false},
		{"segments/vip/run1/", "", "", true},
		{"segments/vip", "", "", true},
		{"other/vip/a.csv", "", "", true},
	}
	for _, tt := range tests {
		seg, folder, err := Of(tt.key)
		if seg != tt.segment || folder != tt.folder || (err != nil) != tt.wantErr {
			t.Errorf("Of(%q) = %q, %q, %v; want %q, %q, error %v", tt.key, seg, folder, err, tt.segment, tt.folder, tt.wantErr)
		}
	}
}

var t0 = time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)

// folderOf lays out objects under segments/vip/run1/, a minute apart.
func folderOf(names ...string) []Object {
	var objs []Object
	for i, n := range names {
		objs = append(objs, Object{Key: "segments/vip/run1/" + n, ETag: fmt.Sprint("e", i), Size: 100, LastModified: t0.Add(time.Duration(i) * time.Minute)})
	}
	return objs
}

func reading(files map[string]string) Reader {
	return func(key string) ([]byte, error) {
		if s, ok := files[key]; ok {
			return []byte(s), nil
		}
		return nil, errors.New("no such object")
	}
}

func redshiftManifest(sizes map[string]int64, names ...string) string {
	var es []string
	for _, n := range names {
		meta := ""
		if s, ok := sizes[n]; ok {
			meta = fmt.Sprintf(`, "meta": {"content_length": %d}`, s)
		}
		es = append(es, fmt.Sprintf(`{"url": "s3://warehouse-unload/exports/run1/%s", "mandatory": true%s}`, n, meta))
	}
	return `{"entries": [` + strings.Join(es, ",") + `]}`
}

func TestDecide(t *testing.T) {
	t.Parallel()
	const folder = "segments/vip/run1/"
	later := t0.Add(time.Hour)
	tests := []struct {
		name     string
		objs     []Object
		files    map[string]string
		now      time.Time
		opts     Options
		complete bool
		by       string
		parts    []string
		missing  string // in Missing
	}{
		{name: "parts and a manifest naming them all", objs: folderOf("0001_part_00", "0000_part_00", "manifest"),
			files:    map[string]string{folder + "manifest": redshiftManifest(map[string]int64{"0000_part_00": 100, "0001_part_00": 100}, "0000_part_00", "0001_part_00")},
			complete: true, by: "manifest " + folder + "manifest", parts: []string{"0000_part_00", "0001_part_00"}},
		{name: "a manifest naming a part not there yet", objs: folderOf("0000_part_00", "manifest"),
			files:    map[string]string{folder + "manifest": redshiftManifest(nil, "0000_part_00", "0001_part_00")},
			complete: false, missing: folder + "0001_part_00"},
		{name: "a part of another size than its manifest says", objs: folderOf("0000_part_00", "manifest"),
			files:    map[string]string{folder + "manifest": redshiftManifest(map[string]int64{"0000_part_00": 99}, "0000_part_00")},
			complete: false, missing: "100 bytes, the manifest says 99"},
		{name: "an Athena data manifest", objs: folderOf("a.parquet", "b.parquet", "q1-manifest.csv"),
			files:    map[string]string{folder + "q1-manifest.csv": "s3://athena-out/tables/q1/b.parquet\ns3://athena-out/tables/q1/a.parquet\n"},
			complete: true, by: "manifest " + folder + "q1-manifest.csv", parts: []string{"b.parquet", "a.parquet"}},
		{name: "a marker: every data file, in key order", objs: folderOf("part-00001.csv", "part-00000.csv", "_SUCCESS", ".part-00000.csv.crc"),
			complete: true, by: "marker", parts: []string{"part-00000.csv", "part-00001.csv"}},
		{name: "the marker alone", objs: folderOf("_SUCCESS"), complete: false, missing: "only its marker"},
		{name: "parts without marker or manifest", objs: folderOf("data_0_0_0.csv.gz", "data_0_0_1.csv.gz"), now: later,
			complete: false, missing: "a manifest or a _SUCCESS marker"},
		{name: "parts quiet for the quiet period", objs: folderOf("data_0_0_0.csv.gz", "data_0_0_1.csv.gz"), now: later,
			opts: Options{QuietPeriod: 10 * time.Minute}, complete: true, by: "quiet period", parts: []string{"data_0_0_0.csv.gz", "data_0_0_1.csv.gz"}},
		{name: "parts still arriving within the quiet period", objs: folderOf("data_0_0_0.csv.gz", "data_0_0_1.csv.gz"), now: t0.Add(5 * time.Minute),
			opts: Options{QuietPeriod: 10 * time.Minute}, complete: false, missing: "10m0s without a new part"},
		{name: "two manifests", objs: folderOf("0000_part_00", "a_manifest", "b_manifest"),
			files:    map[string]string{},
			complete: false, missing: "one manifest"},
		{name: "scratch and checksums are not parts", objs: folderOf("_temporary/0/part-00000.csv", "part-00000.csv", "part-00000.csv.crc", "_SUCCESS"),
			complete: true, by: "marker", parts: []string{"part-00000.csv"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := tt.now
			if now.IsZero() {
				now = t0.Add(24 * time.Hour)
			}
			d, err := Decide(folder, tt.objs, reading(tt.files), now, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, p := range d.Parts {
				parts = append(parts, strings.TrimPrefix(p.Key, folder))
			}
			if d.Complete != tt.complete || (tt.complete && (d.By != tt.by || !slices.Equal(parts, tt.parts))) {
				t.Fatalf("%s; complete %v by %q, parts %v", d.Describe(), d.Complete, d.By, parts)
			}
			if tt.missing != "" && !strings.Contains(strings.Join(d.Missing, "; "), tt.missing) {
				t.Fatalf("missing %q, want it to say %q", d.Missing, tt.missing)
			}
			if tt.complete && d.Size != int64(100*len(tt.parts)) {
				t.Fatalf("size %d, want %d", d.Size, 100*len(tt.parts))
			}
		})
	}
}

// The identity names the parts, not the order a listing gave them: the
// same folder listed twice is the same delivery, and a part replaced is
// another.
func TestIdentity(t *testing.T) {
	t.Parallel()
	objs := folderOf("part-1.csv", "part-0.csv", "_SUCCESS")
	a, _ := Decide("segments/vip/run1/", objs, nil, t0, Options{})
	slices.Reverse(objs)
	b, _ := Decide("segments/vip/run1/", objs, nil, t0, Options{})
	objs[slices.IndexFunc(objs, func(o Object) bool { return strings.HasSuffix(o.Key, "part-0.csv") })].ETag = "changed"
	c, _ := Decide("segments/vip/run1/", objs, nil, t0, Options{})
	if a.Identity != b.Identity || a.Identity == c.Identity || a.Identity == "" {
		t.Fatalf("identities %s, %s (relisted), %s (a part replaced)", a.Identity, b.Identity, c.Identity)
	}
	// A listing without ETags (a local folder): a part rewritten with as
	// many bytes is another delivery all the same.
	for i := range objs {
		objs[i].ETag = ""
	}
	d, _ := Decide("segments/vip/run1/", objs, nil, t0, Options{})
	part := slices.IndexFunc(objs, func(o Object) bool { return strings.HasSuffix(o.Key, "part-1.csv") })
	objs[part].LastModified = objs[part].LastModified.Add(time.Second)
	e, _ := Decide("segments/vip/run1/", objs, nil, t0, Options{})
	if d.Identity == e.Identity {
		t.Fatalf("a part rewritten (no ETags) kept the identity %s", d.Identity)
	}
}

// Customer Insights writes model.json at the root of its folder, naming
// each partition by its Azure URL; the folder copied to S3 keeps the
// layout under it.
func TestParseCDM(t *testing.T) {
	t.Parallel()
	data := []Object{
		{Key: "segments/vip/cdm/vip/2026/12/06/0800/vip_1.csv"},
		{Key: "segments/vip/cdm/vip/2026/12/06/0800/vip_2.csv"},
	}
	model := `{"name": "cdm", "version": "1.0", "entities": [{"$type": "LocalEntity", "name": "vip",
		"attributes": [{"name": "EmailAddress", "dataType": "string"}, {"name": "FirstName", "dataType": "string"}],
		"partitions": [
		{"name": "vip_1", "location": "https://acct.dfs.core.windows.net/ci-export/vip/2026/12/06/0800/vip_1.csv"},
		{"name": "vip_2", "location": "https://acct.dfs.core.windows.net/ci-export/vip/2026/12/06/0800/vip_2.csv",
		 "fileFormatSettings": {"$type": "CsvFormatSettings", "columnHeaders": true}},
		{"name": "vip_3", "location": "https://acct.dfs.core.windows.net/ci-export/vip/2026/12/06/0800/vip_3.csv"}]}]}`
	got, err := Parse("segments/vip/cdm/model.json", []byte(model), data)
	if err != nil {
		t.Fatal(err)
	}
	columns := []string{"EmailAddress", "FirstName"}
	want := []Entry{{data[0].Key, -1, columns}, {data[1].Key, -1, nil}, {"segments/vip/cdm/vip_3.csv", -1, columns}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("entries %v, want %v (the third absent, so reported missing; columns from the attributes where a partition has no header)", got, want)
	}
}

func TestParseRefusesWhatIsNotAManifest(t *testing.T) {
	t.Parallel()
	for key, raw := range map[string]string{
		"segments/vip/run1/manifest":   "not json",
		"segments/vip/cdm/model.json":  "[1,2]",
		"segments/vip/run1/data.csv":   "{}",
		"segments/vip/run1/x_manifest": `{"entries": [{"url": "::bad"}]}`,
	} {
		if _, err := Parse(key, []byte(raw), nil); err == nil {
			t.Errorf("Parse(%s, %q) accepted it", key, raw)
		}
	}
}
