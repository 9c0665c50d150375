package templatetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/run"
)

// subVar is a variable !Sub substitutes: ${Name} or ${Resource.Attribute};
// ${!Literal} is not one (it becomes ${Literal}).
var subVar = regexp.MustCompile(`\$\{([^!}][^}]*)\}`)

// emittedMetrics returns the namespace and metric names finalize emits,
// read from run.EmitMetrics itself so the dashboard cannot drift from it.
func emittedMetrics(t *testing.T) (string, []string) {
	t.Helper()
	var buf bytes.Buffer
	if err := run.EmitMetrics(&buf, &run.Report{Export: "x", RunID: "x-0", Status: run.StatusSucceeded}); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		AWS struct {
			CloudWatchMetrics []struct {
				Namespace string
				Metrics   []struct{ Name string }
			}
		} `json:"_aws"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil || len(doc.AWS.CloudWatchMetrics) != 1 {
		t.Fatalf("EmitMetrics wrote %s (%v)", buf.Bytes(), err)
	}
	var names []string
	for _, m := range doc.AWS.CloudWatchMetrics[0].Metrics {
		names = append(names, m.Name)
	}
	return doc.AWS.CloudWatchMetrics[0].Namespace, names
}

// TestDashboard: the dashboard's body is valid JSON once !Sub has done its
// work, every variable it substitutes exists, and it shows every metric
// finalize emits (per export), the four functions' errors and every alarm
// in the template.
func TestDashboard(t *testing.T) {
	tmpl := rawTemplate(t)
	dash := resource(t, tmpl, "Dashboard")
	if at(dash, "Type") != "AWS::CloudWatch::Dashboard" {
		t.Fatalf("Dashboard is a %v", at(dash, "Type"))
	}
	body, ok := at(dash, "Properties", "DashboardBody", "Fn::Sub").(string)
	if !ok {
		t.Fatalf("DashboardBody is not a one-argument !Sub: %v", at(dash, "Properties", "DashboardBody"))
	}
	resources := tmpl["Resources"].(obj)
	for _, m := range subVar.FindAllStringSubmatch(body, -1) {
		id, _, _ := strings.Cut(m[1], ".")
		if !strings.HasPrefix(id, "AWS::") && resources[id] == nil {
			t.Errorf("the dashboard substitutes ${%s}, but there is no resource %s", m[1], id)
		}
	}
	subbed := strings.ReplaceAll(subVar.ReplaceAllString(body, "SUBSTITUTED"), "${!", "${")
	var parsed struct {
		Widgets []struct {
			Type       string
			Properties struct {
				Alarms  []string
				Metrics [][]any
			}
		}
	}
	if err := json.Unmarshal([]byte(subbed), &parsed); err != nil {
		t.Fatalf("the dashboard's body is not valid JSON after !Sub: %v", err)
	}

	var expressions, metrics, alarms []string
	for _, w := range parsed.Widgets {
		alarms = append(alarms, w.Properties.Alarms...)
		for _, m := range w.Properties.Metrics {
			if e, ok := m[0].(map[string]any); ok {
				expressions = append(expressions, fmt.Sprint(e["expression"]))
			} else {
				metrics = append(metrics, fmt.Sprint(m...))
			}
		}
	}
	namespace, names := emittedMetrics(t)
	for _, name := range names {
		want := fmt.Sprintf(`SEARCH('{%s,Export} MetricName="%s"'`, namespace, name)
		if !slices.ContainsFunc(expressions, func(e string) bool { return strings.HasPrefix(e, want) }) {
			t.Errorf("the dashboard does not show %s per export (no %s…)", name, want)
		}
	}
	for _, id := range functionIDs {
		// In the raw body, before substitution: the function's name by !Sub.
		if !strings.Contains(body, `["AWS/Lambda", "Errors", "FunctionName", "${`+id+`}"]`) {
			t.Errorf("the dashboard does not show %s's errors", id)
		}
	}
	var wantAlarms []string
	for id, r := range resources {
		if at(r, "Type") == "AWS::CloudWatch::Alarm" {
			wantAlarms = append(wantAlarms, "${"+id+".Arn}")
		}
	}
	sort.Strings(wantAlarms)
	var gotAlarms []string
	for _, m := range subVar.FindAllString(body, -1) {
		if strings.HasSuffix(m, ".Arn}") && slices.Contains(wantAlarms, m) {
			gotAlarms = append(gotAlarms, m)
		}
	}
	sort.Strings(gotAlarms)
	if len(wantAlarms) == 0 || !slices.Equal(gotAlarms, wantAlarms) || len(alarms) != len(wantAlarms) {
		t.Errorf("the dashboard's alarm widget shows %v, want every alarm of the template %v", gotAlarms, wantAlarms)
	}
	if len(metrics) == 0 {
		t.Error("the dashboard shows no Step Functions or Lambda metric")
	}
	if at(tmpl, "Outputs", "DashboardURL", "Value") == nil {
		t.Error("output DashboardURL is missing")
	}
}
