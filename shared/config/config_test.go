package config

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/segment"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/invalid")

func loadExample(t *testing.T) *Config {
	t.Helper()
	cfg, err := LoadFile(filepath.Join("testdata", "exports.yaml"))
	if err != nil {
		t.Fatalf("loading the example: %v", err)
	}
	return cfg
}

func TestLoadExample(t *testing.T) {
	t.Parallel()
	cfg := loadExample(t)

	wantConns := map[string]*Connection{
		"autopilot-main": {
			Name:              "autopilot-main",
			Kind:              "autopilot",
			APIKeySecret:      "segpilot/autopilot",
			BaseURL:           DefaultBaseURL,
			Consent:           true,
			RequestsPerSecond: 5,
		},
	}
	wantExports := map[string]*Export{
		"vip-newsletter": {
			Name:       "vip-newsletter",
			Connection: "autopilot-main",
			Kind:       "autopilot",
			Segment:    "vip-customers",
			List:       "VIP customers",
			Match: Match{
				Email: "EmailAddress", FirstName: "FirstName", LastName: "LastName",
				Custom: map[string]string{"LoyaltyTier": "string--Loyalty--Tier"},
			},
			Mode:            plan.ModeMirror,
			MaxProfiles:     100000,
			MaxRemovalShare: 0.2,
			Enabled:         true,
		},
		"lapsed-winback": {
			Name:       "lapsed-winback",
			Connection: "autopilot-main",
			Kind:       "autopilot",
			Segment:    "lapsed-customers",
			List:       "Win-back 2024",
			Match: Match{
				Email: "email",
				Custom: map[string]string{
					"orders":    "integer--Orders",
					"lastOrder": "date--Last--Order",
					"spend":     "float--Lifetime--Spend",
					"optedIn":   "boolean--Marketing--OptIn",
				},
			},
			Mode:            plan.ModeUpsert,
			MaxProfiles:     100000,
			MaxRemovalShare: 0.5,
			Enabled:         false,
			ShowEmails:      true,
		},
	}
	if !reflect.DeepEqual(cfg.Connections, wantConns) {
		t.Errorf("connections:\n got %+v\nwant %+v", cfg.Connections, wantConns)
	}
	for name, want := range wantExports {
		if got := cfg.Exports[name]; !reflect.DeepEqual(got, want) {
			t.Errorf("export %s:\n got %+v\nwant %+v", name, got, want)
		}
	}
	if len(cfg.Exports) != len(wantExports) {
		t.Errorf("got %d exports, want %d", len(cfg.Exports), len(wantExports))
	}
	if cfg.File != filepath.Join("testdata", "exports.yaml") {
		t.Errorf("File = %q", cfg.File)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("testdata", "exports.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := Load("a.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.Version, "sha256:") || len(a.Version) != len("sha256:")+16 {
		t.Fatalf("Version = %q, want sha256: and 16 hex chars", a.Version)
	}
	b, err := Load("b.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if a.Version != b.Version {
		t.Errorf("same bytes gave versions %q and %q", a.Version, b.Version)
	}
	c, err := Load("a.yaml", append(data, "# changed\n"...))
	if err != nil {
		t.Fatal(err)
	}
	if c.Version == a.Version {
		t.Errorf("a changed file kept version %q", a.Version)
	}
}

const minimal = `
connections:
  c:
    kind: autopilot
    apiKeySecret: s
exports:
  e:
    connection: c
    segment: seg
    list: L
    match: {email: Email}
`

func TestDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Load("min.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Connections["c"]
	if c.BaseURL != DefaultBaseURL || c.RequestsPerSecond != 5 || c.Consent {
		t.Errorf("connection defaults: %+v", c)
	}
	e := cfg.Exports["e"]
	if e.Mode != plan.ModeUpsert || e.MaxProfiles != 100000 || e.MaxRemovalShare != 0.2 || !e.Enabled || e.AllowLargeRemoval || e.ShowEmails {
		t.Errorf("export defaults: %+v", e)
	}
	if e.Match.Custom != nil {
		t.Errorf("custom = %v, want nil", e.Match.Custom)
	}
}

func TestBaseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url, want string // want "" means rejected
	}{
		{"https://api2.autopilothq.com/v1", "https://api2.autopilothq.com/v1"},
		{"https://api2.autopilothq.com/v1/", "https://api2.autopilothq.com/v1"},
		{"HTTPS://example.com", "HTTPS://example.com"},
		{"http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"},
		{"http://127.9.8.7", "http://127.9.8.7"},
		{"http://[::1]:9000/v1", "http://[::1]:9000/v1"},
		{"http://localhost:1234", "http://localhost:1234"},
		{"http://LOCALHOST", "http://LOCALHOST"},
		{"http://api2.autopilothq.com/v1", ""},
		{"http://10.0.0.1/v1", ""},
		{"http://128.0.0.1/v1", ""},
		{"http://localhost.example.com/v1", ""},
		{"http://[::2]/v1", ""},
		{"ws://127.0.0.1", ""},
		{"https://u:p@example.com", ""},
		{"example.com/v1", ""},
		{"https://example.com/v1#x", ""},
		{"https://example.com/v1?", ""},
		{"https://exa mple.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			t.Parallel()
			src := strings.Replace(minimal, "    apiKeySecret: s\n", "    apiKeySecret: s\n    baseURL: '"+tt.url+"'\n", 1)
			cfg, err := Load("u.yaml", []byte(src))
			if tt.want == "" {
				var ve *ValidationError
				if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Path != "connections.c.baseURL" {
					t.Fatalf("want one baseURL problem, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Connections["c"].BaseURL; got != tt.want {
				t.Errorf("BaseURL = %q, want %q", got, tt.want)
			}
		})
	}
}

// Golden files hold the exact error text for each invalid config; run
// `go test ./shared/config -update` after a deliberate change of wording.
func TestInvalidGolden(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "invalid", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("found only %d invalid configs", len(files))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(name+".yaml", data)
			if err == nil {
				t.Fatalf("loaded without error: %+v", cfg)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("want a *ValidationError with problems, got %T %v", err, err)
			}
			for _, p := range ve.Problems {
				if p.Line <= 0 || p.Message == "" {
					t.Errorf("problem without line or message: %+v", p)
				}
			}
			got := err.Error() + "\n"
			golden := filepath.Join("testdata", "invalid", name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("error text differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func TestSecretsNeverEchoed(t *testing.T) {
	t.Parallel()
	tests := []struct{ file, secret string }{
		{"kinds-and-secrets.yaml", "0123456789abcdef"},
		{"kinds-and-secrets.yaml", "my secret key"},
		{"base-url.yaml", "hunter2"},
	}
	for _, tt := range tests {
		data, err := os.ReadFile(filepath.Join("testdata", "invalid", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Load(tt.file, data)
		if err == nil {
			t.Fatalf("%s loaded", tt.file)
		}
		if strings.Contains(err.Error(), tt.secret) {
			t.Errorf("%s: error shows %q:\n%v", tt.file, tt.secret, err)
		}
	}
}

func TestProblemsInFileOrder(t *testing.T) {
	t.Parallel()
	// exports come before connections here; problems must still follow the file.
	src := `exports:
  e:
    connection: c
    segment: seg
    list: L
    match: {email: Email}
    mode: sync
connections:
  c:
    kind: autopilot
    apiKeySecret: s
    consent: maybe
`
	_, err := Load("order.yaml", []byte(src))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want *ValidationError, got %v", err)
	}
	var paths []string
	for _, p := range ve.Problems {
		paths = append(paths, p.Path)
	}
	want := []string{"exports.e.mode", "connections.c.consent"}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("paths = %v, want %v", paths, want)
	}
}

func TestValidationErrorFormat(t *testing.T) {
	t.Parallel()
	e := &ValidationError{File: "x.yaml", Problems: []Problem{
		{Path: "exports.a.list", Line: 3, Message: "required"},
		{Line: 1, Message: "not valid YAML"},
		{Message: "too big"},
	}}
	want := "x.yaml:3: exports.a.list: required\nx.yaml:1: not valid YAML\nx.yaml: too big"
	if got := e.Error(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	data := []byte(minimal + "#" + strings.Repeat("x", maxFileSize) + "\n")
	_, err := Load("big.yaml", data)
	var ve *ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("want a size problem, got %v", err)
	}
}

func TestLoadFileMissing(t *testing.T) {
	t.Parallel()
	_, err := LoadFile(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("want fs.ErrNotExist, got %v", err)
	}
}

func TestExport(t *testing.T) {
	t.Parallel()
	cfg := loadExample(t)
	e, err := cfg.Export("vip-newsletter")
	if err != nil || e.Name != "vip-newsletter" {
		t.Fatalf("Export = %v, %v", e, err)
	}
	tests := []struct{ name, want string }{
		{"vip-newsleter", `export "vip-newsleter" is not defined in testdata/exports.yaml (did you mean "vip-newsletter"?); defined: lapsed-winback, vip-newsletter`},
		{"zzz", `export "zzz" is not defined in testdata/exports.yaml; defined: lapsed-winback, vip-newsletter`},
	}
	for _, tt := range tests {
		_, err := cfg.Export(tt.name)
		var ue *UnknownExportError
		if !errors.As(err, &ue) || ue.Name != tt.name {
			t.Fatalf("want *UnknownExportError, got %v", err)
		}
		if err.Error() != tt.want {
			t.Errorf("got  %q\nwant %q", err, tt.want)
		}
	}
}

func TestExportsForSegment(t *testing.T) {
	t.Parallel()
	src := minimal + `  b:
    connection: c
    segment: seg
    list: L2
    match: {email: Email}
    enabled: false
  a:
    connection: c
    segment: seg
    list: L3
    match: {email: Email}
  other:
    connection: c
    segment: other
    list: L
    match: {email: Email}
`
	cfg, err := Load("s.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range cfg.ExportsForSegment("seg") {
		names = append(names, e.Name)
	}
	if want := []string{"a", "b", "e"}; !reflect.DeepEqual(names, want) {
		t.Errorf("got %v, want %v", names, want)
	}
	if got := cfg.ExportsForSegment("none"); len(got) != 0 {
		t.Errorf("unknown segment gave %v", got)
	}
}

func TestRunnable(t *testing.T) {
	t.Parallel()
	cfg := loadExample(t)
	if err := cfg.Runnable(cfg.Exports["vip-newsletter"]); err != nil {
		t.Errorf("vip-newsletter: %v", err)
	}
	var nr *NotRunnableError
	err := cfg.Runnable(cfg.Exports["lapsed-winback"])
	if !errors.As(err, &nr) || nr.Code != CodeDisabled || nr.Export != "lapsed-winback" {
		t.Errorf("disabled export: %v", err)
	}

	noConsent, err := Load("nc.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	e := noConsent.Exports["e"]
	if err := noConsent.Runnable(e); !errors.As(err, &nr) || nr.Code != CodeNoConsent || !strings.Contains(err.Error(), "consent: true") {
		t.Errorf("no consent: %v", err)
	}
	if got := noConsent.ConnectionOf(e); got != noConsent.Connections["c"] {
		t.Errorf("ConnectionOf = %v", got)
	}
}

func TestMapping(t *testing.T) {
	t.Parallel()
	cfg := loadExample(t)
	got := cfg.Exports["lapsed-winback"].Mapping()
	want := segment.Mapping{
		Email: "email",
		Custom: []segment.CustomField{
			{Source: "lastOrder", Key: "date--Last--Order", Type: "date"},
			{Source: "optedIn", Key: "boolean--Marketing--OptIn", Type: "boolean"},
			{Source: "orders", Key: "integer--Orders", Type: "integer"},
			{Source: "spend", Key: "float--Lifetime--Spend", Type: "float"},
		},
		Destination: segment.Destination{Title: "Autopilot", TextField: "string--Name"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	got = cfg.Exports["vip-newsletter"].Mapping()
	if got.FirstName != "FirstName" || got.LastName != "LastName" || len(got.Custom) != 1 {
		t.Errorf("vip-newsletter mapping: %+v", got)
	}
}

func TestSuggest(t *testing.T) {
	t.Parallel()
	keys := []string{"connection", "segment", "list", "match", "mode", "maxProfiles"}
	tests := []struct{ in, want string }{
		{"mach", "match"},
		{"maxprofiles", "maxProfiles"},
		{"segmnet", "segment"},
		{"lsit", "list"},
		{"conection", "connection"},
		{"colour", ""},
		{"x", ""},
		{strings.Repeat("a", 100), ""},
	}
	for _, tt := range tests {
		got, ok := closest(tt.in, keys)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("closest(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

// An alias-heavy file must be refused quickly instead of expanding to
// exports × custom fields entries.
func TestAliasExpansionBounded(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("connections:\n  c: {kind: autopilot, apiKeySecret: s}\nexports:\n  base: &e\n    connection: c\n    segment: s\n    list: L\n    match:\n      email: e\n      custom:\n")
	for i := range 2000 {
		fmt.Fprintf(&b, "        k%d: string--K%d\n", i, i)
	}
	for i := range 2000 {
		fmt.Fprintf(&b, "  e%d: *e\n", i)
	}
	_, err := Load("bomb.yaml", []byte(b.String()))
	var ve *ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "expands to more than") {
		t.Fatalf("want an expansion problem, got %.300v", err)
	}
	if len(ve.Problems) > maxProblems+1 {
		t.Errorf("%d problems, want at most %d", len(ve.Problems), maxProblems+1)
	}
}

func TestAliasesResolved(t *testing.T) {
	t.Parallel()
	src := strings.Replace(minimal, "match: {email: Email}", "match: &m {email: Email, custom: {Tier: string--Tier}}", 1) +
		"  f:\n    connection: c\n    segment: seg\n    list: Other\n    match: *m\n"
	cfg, err := Load("alias.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Exports["f"].Match; got.Email != "Email" || got.Custom["Tier"] != "string--Tier" {
		t.Errorf("aliased match = %+v", got)
	}
}

// TestOrttoExport: the region picks the host, custom field ids give the
// reader its types (a decimal one marked), and createFields is kept.
func TestOrttoExport(t *testing.T) {
	t.Parallel()
	src := `
connections:
  ortto-eu:
    kind: ortto
    region: eu
    apiKeySecret: segpilot/ortto
  ortto-global:
    kind: ortto
    apiKeySecret: segpilot/ortto-global
exports:
  vip:
    connection: ortto-eu
    segment: vip
    list: VIP customers
    createFields: true
    match:
      email: EmailAddress
      custom:
        Tier: str:cm:loyalty-tier
        Orders: int:cm:lifetime-orders
        Spend: {field: int:cm:lifetime-spend, decimal: true}
        Vip: bol:cm:vip
        Joined: dtz:cm:joined
`
	cfg, err := Load("o.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Connections["ortto-eu"]; c.BaseURL != "https://api.eu.ap3api.com" || c.Region != "eu" || c.Title() != "Ortto" {
		t.Errorf("ortto-eu: %+v", c)
	}
	if c := cfg.Connections["ortto-global"]; c.BaseURL != "https://api.ap3api.com" || c.Region != "" {
		t.Errorf("ortto-global: %+v", c)
	}
	e := cfg.Exports["vip"]
	if !e.CreateFields || e.Kind != "ortto" {
		t.Errorf("export %+v", e)
	}
	var got []string
	for _, f := range e.Mapping().Custom {
		got = append(got, f.Source+"="+f.Key+":"+f.Type)
	}
	want := "Joined=dtz:cm:joined:date,Orders=int:cm:lifetime-orders:integer,Spend=int:cm:lifetime-spend:float,Tier=str:cm:loyalty-tier:string,Vip=bol:cm:vip:boolean"
	if strings.Join(got, ",") != want {
		t.Errorf("mapping %v\nwant %s", got, want)
	}
	if f := e.Fields(); len(f) != 5 || f[0].Key != "bol:cm:vip" || f[3].Type != "float" {
		t.Errorf("fields %+v", f)
	}
}

// quietPeriod completes a folder without manifest or marker: a duration
// within reason, and never for a mirror export, where a part still on
// its way would read as leavers.
func TestQuietPeriod(t *testing.T) {
	t.Parallel()
	base := `connections:
  main:
    kind: autopilot
    apiKeySecret: segpilot/autopilot
    consent: true
exports:
  vip:
    connection: main
    segment: vip
    list: VIP
    match: {email: Email}
`
	tests := []struct {
		extra   string
		want    time.Duration
		wantErr string
	}{
		{"", 0, ""},
		{"    quietPeriod: 15m\n", 15 * time.Minute, ""},
		{"    quietPeriod: 15\n", 0, "is not a quiet period"},
		{"    quietPeriod: 10s\n", 0, "from 1m to 24h"},
		{"    quietPeriod: 15m\n    mode: mirror\n", 0, "a mirror export cannot take a folder as whole by its quiet period"},
	}
	for _, tt := range tests {
		cfg, err := Load("exports.yaml", []byte(base+tt.extra))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: %v; want an error saying %q", tt.extra, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tt.extra, err)
		}
		if got := cfg.Exports["vip"].QuietPeriod; got != tt.want {
			t.Errorf("%q: quiet period %v, want %v", tt.extra, got, tt.want)
		}
	}
}

func TestSplit(t *testing.T) {
	t.Parallel()
	base := `connections:
  main:
    kind: autopilot
    apiKeySecret: segpilot/autopilot
    consent: true
exports:
  vip:
    connection: main
    segment: vip
    match: {email: Email}
`
	tests := []struct {
		name, extra string
		wantErr     string
	}{
		{"two groups and a holdout", "    split:\n      groups:\n        a: {percent: 45, list: A}\n        b: {percent: 45, list: B}\n        holdout: {percent: 10}\n", ""},
		{"not 100", "    split:\n      groups:\n        a: {percent: 45, list: A}\n        b: {percent: 45, list: B}\n", "add up to 90.00; they must add up to 100"},
		{"a list beside the split", "    list: VIP\n    split:\n      groups:\n        a: {percent: 100, list: A}\n", "give the lists under split.groups, and remove list"},
		{"nothing sent", "    split:\n      groups:\n        holdout: {percent: 100}\n", "no group has a list"},
		{"finer than hundredths", "    split:\n      groups:\n        a: {percent: 33.333, list: A}\n        b: {percent: 66.667, list: B}\n", "in hundredths at most"},
		{"no percent", "    split:\n      groups:\n        a: {list: A}\n", "required: the group's share"},
		{"no groups", "    split:\n      salt: x\n", "required: the groups by name"},
		{"two groups on one list", "    split:\n      groups:\n        a: {percent: 50, list: A}\n        b: {percent: 50, list: A}\n", "they would fight over the list's members"},
		{"neither list nor split", "", "exports.vip.list"},
		{"a group named as another export", "    split:\n      groups:\n        a: {percent: 100, list: A}\n  vip.a:\n    connection: main\n    segment: vip\n    list: Other\n    match: {email: Email}\n", "is also the name of a group of the split export exports.vip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Load("exports.yaml", []byte(base+tt.extra))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("%v; want an error saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			named, err := cfg.Named("vip")
			if err != nil || len(named) != 2 || named[0].Name != "vip.a" || named[0].List != "A" || named[1].List != "B" {
				t.Fatalf("Named(vip) = %+v, %v; want vip.a to A and vip.b to B", named, err)
			}
			if _, ok := cfg.Exports["vip"]; ok {
				t.Error("the split export itself is an export too; want only its groups")
			}
			sp := named[1].Split
			if sp.Parent != "vip" || sp.Salt != "vip" || sp.Group != "b" || len(sp.Groups) != 3 || sp.Groups[2].Share != 1000 || sp.Groups[2].List != "" {
				t.Errorf("vip.b's split %+v", sp)
			}
		})
	}
}
