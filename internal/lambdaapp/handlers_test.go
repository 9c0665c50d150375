package lambdaapp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/segpilot/segpilot/internal/lambdaapp"
	"github.com/segpilot/segpilot/shared/autopilot/sim"
	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
	"github.com/segpilot/segpilot/shared/local"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

const testConfig = `connections:
  main:
    kind: autopilot
    apiKeySecret: segpilot/autopilot
    baseURL: https://api2.autopilothq.com/v1
    consent: true
    requestsPerSecond: 100
exports:
  vip:
    connection: main
    segment: vip-customers
    list: VIP customers
    match: { email: Email, firstName: First }
`

type fixedKey string

func (k fixedKey) Secret(context.Context, string) (string, error) { return string(k), nil }

// TestIngestOverS3 drives the ingest handler with a real S3 event shape
// against gofakes3, runs the state machine in process, and checks the
// simulator holds exactly the file's contacts.
func TestIngestOverS3(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	faker := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(faker.Close)
	client := awsx.NewS3Client(aws.Config{Region: "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "not-a-secret", "")}, faker.URL)
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("segpilot-data")}); err != nil {
		t.Fatal(err)
	}
	st := s3store.New(client, "segpilot-data")

	autopilot := sim.New(sim.Options{APIKey: "k-123"})
	simSrv := httptest.NewServer(autopilot)
	t.Cleanup(simSrv.Close)
	p, err := local.New(local.Options{Store: st, Secrets: fixedKey("k-123"), BaseURLs: map[string]string{"autopilot": simSrv.URL + "/v1"},
		RetrySleep: func(ctx context.Context, d time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}

	put := func(key, body string) store.ObjectInfo {
		info, err := st.Put(ctx, key, strings.NewReader(body), store.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	put(run.ConfigKey, testConfig)
	var csv bytes.Buffer
	csv.WriteString("Email,First\n")
	for i := range 250 {
		csv.WriteString("Person" + itoa(i) + "@Example.com,P" + itoa(i) + "\n")
	}
	key := "segments/vip-customers/week 48+final.csv"
	info := put(key, csv.String())

	// The event as S3 sends it: key URL-encoded (space as '+', '+' as %2B).
	raw, err := os.ReadFile("../../events/s3-put.json")
	if err != nil {
		t.Fatal(err)
	}
	var ev events.S3Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	ev.Records[0].S3.Object.Key = url.QueryEscape(key)
	ev.Records[0].S3.Object.URLDecodedKey = key
	ev.Records[0].S3.Object.ETag = info.ETag
	ev.Records[0].S3.Object.VersionID = ""
	handler := lambdaapp.Ingest(p.Service)

	res, err := handler(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Status != run.StatusRunning || !res[0].Started {
		t.Fatalf("results %+v", res)
	}
	// The execution runs on its own, as in Step Functions; the test waits
	// for it as the CLI does.
	if res[0], err = p.Service.Await(ctx, res[0], time.Millisecond); err != nil || res[0].Status != run.StatusSucceeded {
		t.Fatalf("the run: %+v, %v", res[0], err)
	}
	state := autopilot.Dump()
	if len(state.Contacts) != 250 || len(state.Lists) != 1 || len(state.Lists[0].Members) != 250 {
		t.Fatalf("Autopilot holds %d contacts, %d lists", len(state.Contacts), len(state.Lists))
	}
	for _, c := range state.Contacts {
		if !strings.HasPrefix(c.Email, "person") || c.Fields["FirstName"] == "" {
			t.Fatalf("contact %+v", c)
		}
	}
	rep, err := run.ReadReport(ctx, st, "vip", res[0].RunID)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Outcome.Reconciles() || rep.Outcome.Sent != 250 || rep.Source.Key != key {
		t.Fatalf("report %+v", rep)
	}

	// The same event delivered again starts nothing.
	before := autopilot.Counters().Total
	res, err = handler(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Started || res[0].Status != run.StatusUpToDate || autopilot.Counters().Total != before {
		t.Fatalf("duplicate event started a run: %+v", res[0])
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
