package s3store

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/store"
)

const bucket = "segpilot-test"

type fixture struct {
	store    *Store
	client   *s3.Client
	listReqs *atomic.Int32
}

// newFixture serves gofakes3 over plain HTTP (over TLS the SDK's aws-chunked
// uploads get stored as object data) and returns a Store on a fresh bucket.
func newFixture(t *testing.T, opts ...Option) fixture {
	t.Helper()
	faker := gofakes3.New(s3mem.New()).Server()
	var listReqs atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "2" {
			listReqs.Add(1)
		}
		faker.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f := fixtureAt(t, srv.URL, opts...)
	f.listReqs = &listReqs
	return f
}

// fixtureAt returns a Store on a fresh bucket of the S3 emulator at endpoint.
func fixtureAt(t *testing.T, endpoint string, opts ...Option) fixture {
	t.Helper()
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "not-a-secret", ""),
	}
	client := awsx.NewS3Client(cfg, endpoint)
	if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("creating bucket: %v", err)
	}
	return fixture{store: New(client, bucket, opts...), client: client}
}

// emulators are the S3 emulators the conditional writes are checked on:
// they answer some preconditions differently (see TestConditionalAnswers).
var emulators = []struct {
	name    string
	fixture func(t *testing.T) fixture
}{
	{"gofakes3", func(t *testing.T) fixture { return newFixture(t) }},
	{"moto", func(t *testing.T) fixture { return fixtureAt(t, testutil.Moto(t)) }},
}

func md5hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

func readAll(t *testing.T, s *Store, key string) ([]byte, store.ObjectInfo) {
	t.Helper()
	rc, info, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %q: %v", key, err)
	}
	return b, info
}

func TestPutGetHead(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body func(data []byte) io.Reader
	}{
		{"seekable", func(d []byte) io.Reader { return bytes.NewReader(d) }},
		{"non-seekable small, kept in memory", func(d []byte) io.Reader { return bytes.NewBuffer(d) }},
		{"non-seekable over the memory limit, spooled", func(d []byte) io.Reader {
			return iotest.HalfReader(bytes.NewReader(append(d, bytes.Repeat([]byte("x"), 64)...)))
		}},
	}
	f := newFixture(t, WithMemoryLimit(64), WithTempDir(t.TempDir()))
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key := fmt.Sprintf("runs/exp/run-%d/batches/000001.json", i)
			body := tt.body([]byte(`{"contacts":[]}`))
			want, err := io.ReadAll(tt.body([]byte(`{"contacts":[]}`)))
			if err != nil {
				t.Fatal(err)
			}
			put, err := f.store.Put(context.Background(), key, body, store.PutOptions{ContentType: "application/json"})
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if put.Key != key || put.Size != int64(len(want)) || put.ETag != md5hex(want) {
				t.Fatalf("Put info = %+v, want key %s size %d etag %s", put, key, len(want), md5hex(want))
			}
			got, info := readAll(t, f.store, key)
			if !bytes.Equal(got, want) {
				t.Fatalf("Get body = %q, want %q", got, want)
			}
			if info.ETag != put.ETag || info.Size != put.Size || info.LastModified.IsZero() {
				t.Fatalf("Get info = %+v, want etag %s size %d and a time", info, put.ETag, put.Size)
			}
			head, err := f.store.Head(context.Background(), key)
			if err != nil {
				t.Fatalf("Head: %v", err)
			}
			if head.ETag != put.ETag || head.Size != put.Size || strings.Contains(head.ETag, `"`) {
				t.Fatalf("Head info = %+v, want etag %s size %d", head, put.ETag, put.Size)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, _, err := f.store.Get(ctx, "state/missing/snapshot"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get missing: err = %v, want ErrNotFound", err)
	}
	if _, err := f.store.Head(ctx, "state/missing/snapshot"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Head missing: err = %v, want ErrNotFound", err)
	}
	list, err := f.store.List(ctx, "state/missing/")
	if err != nil || len(list) != 0 {
		t.Errorf("List missing prefix = %v, %v; want empty", list, err)
	}
}

func TestOtherErrorsAreNotNotFound(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	other := New(f.client, "no-such-bucket")
	_, _, err := other.Get(context.Background(), "k")
	if err == nil || errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "s3://no-such-bucket/k") {
		t.Fatalf("Get on a missing bucket: err = %v, want an untyped error naming the object", err)
	}
	_, err = other.Put(context.Background(), "k", strings.NewReader("x"), store.PutOptions{})
	if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExists) {
		t.Fatalf("Put on a missing bucket: err = %v, want an untyped error", err)
	}
}

func TestPutIfNoneMatch(t *testing.T) {
	t.Parallel()
	for _, em := range emulators {
		t.Run(em.name, func(t *testing.T) {
			t.Parallel()
			testPutIfNoneMatch(t, em.fixture(t))
		})
	}
}

func testPutIfNoneMatch(t *testing.T, f fixture) {
	ctx := context.Background()
	key := "runs/exp/run-1/manifest.json"
	if _, err := f.store.Put(ctx, key, strings.NewReader("first"), store.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatalf("first Put: %v", err)
	}
	_, err := f.store.Put(ctx, key, strings.NewReader("second"), store.PutOptions{IfNoneMatch: true})
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("second Put: err = %v, want ErrExists", err)
	}
	if got, _ := readAll(t, f.store, key); string(got) != "first" {
		t.Fatalf("object = %q, want the first writer's %q", got, "first")
	}
	// Without IfNoneMatch the put overwrites.
	if _, err := f.store.Put(ctx, key, strings.NewReader("third"), store.PutOptions{}); err != nil {
		t.Fatalf("plain Put: %v", err)
	}
	if got, _ := readAll(t, f.store, key); string(got) != "third" {
		t.Fatalf("object = %q, want %q", got, "third")
	}
}

func TestListPagesInKeyOrder(t *testing.T) {
	t.Parallel()
	f := newFixture(t, WithMaxKeys(7))
	ctx := context.Background()
	const n = 30
	var want []string
	// Written in reverse so the order comes from the store, not from us.
	for i := n - 1; i >= 0; i-- {
		key := fmt.Sprintf("runs/exp/run-1/results/%06d.json", i)
		if _, err := f.store.Put(ctx, key, strings.NewReader(key), store.PutOptions{}); err != nil {
			t.Fatalf("Put %s: %v", key, err)
		}
	}
	for i := range n {
		want = append(want, fmt.Sprintf("runs/exp/run-1/results/%06d.json", i))
	}
	if _, err := f.store.Put(ctx, "runs/exp/run-2/results/000000.json", strings.NewReader("other run"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	before := f.listReqs.Load()
	got, err := f.store.List(ctx, "runs/exp/run-1/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if pages := f.listReqs.Load() - before; pages != (n+6)/7 {
		t.Errorf("List made %d requests, want %d pages of 7", pages, (n+6)/7)
	}
	if len(got) != n {
		t.Fatalf("List returned %d objects, want %d", len(got), n)
	}
	for i, obj := range got {
		if obj.Key != want[i] {
			t.Fatalf("List[%d].Key = %q, want %q", i, obj.Key, want[i])
		}
		if obj.Size != int64(len(want[i])) || obj.ETag != md5hex([]byte(want[i])) {
			t.Fatalf("List[%d] = %+v, want size %d etag %s", i, obj, len(want[i]), md5hex([]byte(want[i])))
		}
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	key := "runs/exp/run-1/report.json"
	if _, err := f.store.Put(ctx, key, strings.NewReader("{}"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Delete(ctx, key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := f.store.Head(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Head after Delete: err = %v, want ErrNotFound", err)
	}
	if err := f.store.Delete(ctx, key); err != nil {
		t.Fatalf("Delete of a missing key: %v, want nil (S3 semantics)", err)
	}
}

func TestVersionID(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.client.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{
		Bucket:                  aws.String(bucket),
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
	})
	if err != nil {
		t.Fatalf("enabling versioning: %v", err)
	}
	key := "state/exp/snapshot"
	put, err := f.store.Put(ctx, key, strings.NewReader("v1"), store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if put.VersionID == "" {
		t.Fatal("Put on a versioned bucket returned no VersionID")
	}
	_, info := readAll(t, f.store, key)
	head, err := f.store.Head(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if info.VersionID != put.VersionID || head.VersionID != put.VersionID {
		t.Fatalf("VersionID: put %q get %q head %q, want all equal", put.VersionID, info.VersionID, head.VersionID)
	}
}

// TestStreamedPutIsByteExact sends 5 MB through a pipe (not seekable, length
// unknown) and checks the stored object byte for byte.
func TestStreamedPutIsByteExact(t *testing.T) {
	t.Parallel()
	spool := t.TempDir()
	f := newFixture(t, WithTempDir(spool))
	data := make([]byte, 5<<20+13)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	go func() {
		// Odd-sized writes, so nothing lines up with buffer sizes by luck.
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 33333)
			if _, err := pw.Write(rest[:n]); err != nil {
				pw.CloseWithError(err)
				return
			}
			rest = rest[n:]
		}
		pw.Close()
	}()
	key := "segments/vip/export.csv"
	put, err := f.store.Put(context.Background(), key, pr, store.PutOptions{})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if put.Size != int64(len(data)) || put.ETag != md5hex(data) {
		t.Fatalf("Put info = %+v, want size %d etag %s", put, len(data), md5hex(data))
	}
	got, _ := readAll(t, f.store, key)
	if !bytes.Equal(got, data) {
		t.Fatalf("stored %d bytes (md5 %s), want %d bytes (md5 %s)", len(got), md5hex(got), len(data), md5hex(data))
	}
	if left, err := os.ReadDir(spool); err != nil || len(left) != 0 {
		t.Fatalf("spool folder after Put = %v, %v; want empty", left, err)
	}
}

func TestPutReadErrorIsReported(t *testing.T) {
	t.Parallel()
	f := newFixture(t, WithMemoryLimit(4), WithTempDir(t.TempDir()))
	boom := errors.New("upstream reset")
	body := io.MultiReader(strings.NewReader("0123456789"), iotest.ErrReader(boom))
	_, err := f.store.Put(context.Background(), "runs/x", body, store.PutOptions{})
	if !errors.Is(err, boom) {
		t.Fatalf("Put: err = %v, want %v", err, boom)
	}
	if _, err := f.store.Head(context.Background(), "runs/x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed Put left an object behind: %v", err)
	}
}

func TestPutIfMatch(t *testing.T) {
	t.Parallel()
	for _, em := range emulators {
		t.Run(em.name, func(t *testing.T) {
			t.Parallel()
			testPutIfMatch(t, em.fixture(t))
		})
	}
}

func testPutIfMatch(t *testing.T, f fixture) {
	ctx := context.Background()
	key := "state/exp/lock.json"
	if _, err := f.store.Put(ctx, key, strings.NewReader("free"), store.PutOptions{IfMatch: "0123"}); !errors.Is(err, store.ErrChanged) {
		t.Fatalf("Put IfMatch on a missing key: err = %v, want ErrChanged", err)
	}
	first, err := f.store.Put(ctx, key, strings.NewReader("free"), store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.store.Put(ctx, key, strings.NewReader("held by a"), store.PutOptions{IfMatch: first.ETag})
	if err != nil {
		t.Fatalf("Put IfMatch with the current ETag: %v", err)
	}
	// A writer still holding the first ETag lost the race.
	if _, err := f.store.Put(ctx, key, strings.NewReader("held by b"), store.PutOptions{IfMatch: first.ETag}); !errors.Is(err, store.ErrChanged) {
		t.Fatalf("Put IfMatch with a stale ETag: err = %v, want ErrChanged", err)
	}
	got, info := readAll(t, f.store, key)
	if string(got) != "held by a" || info.ETag != second.ETag {
		t.Fatalf("object = %q (etag %s), want %q (etag %s)", got, info.ETag, "held by a", second.ETag)
	}
}

// TestConditionalAnswers pins what each emulator answers to the
// conditional writes the export lock makes, so the mapping in Put is
// tested on both answers to an If-Match on a missing key.
//
// Where moto 5 differs from AWS S3 (tried against moto_server 5.2.1):
//   - it never answers 409 ConditionalRequestConflict, which S3 may answer
//     when two conditional writes of one key race (Put maps it as 412);
//   - it ignores an If-None-Match with an ETag and overwrites, where S3
//     accepts only "*" (the lock sends only "*");
//   - it compares If-Match values with or without quotes.
//
// Like S3, it answers If-None-Match: * on an existing key and If-Match
// with a stale ETag with 412 PreconditionFailed, and If-Match on a missing
// key with 404 NoSuchKey. gofakes3 answers the last with 412.
func TestConditionalAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		emulator string
		fixture  func(t *testing.T) fixture
		// error codes for: If-Match on a missing key, If-Match with a
		// stale ETag, If-None-Match: * on an existing key
		missing, stale, exists string
	}{
		{"gofakes3", emulators[0].fixture, "PreconditionFailed", "PreconditionFailed", "PreconditionFailed"},
		{"moto", emulators[1].fixture, "NoSuchKey", "PreconditionFailed", "PreconditionFailed"},
	}
	for _, tt := range tests {
		t.Run(tt.emulator, func(t *testing.T) {
			t.Parallel()
			f := tt.fixture(t)
			ctx := context.Background()
			put := func(key, body string, in func(*s3.PutObjectInput)) (string, error) {
				req := &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(body)}
				in(req)
				out, err := f.client.PutObject(ctx, req)
				if err != nil {
					var apiErr smithy.APIError
					if errors.As(err, &apiErr) {
						return apiErr.ErrorCode(), err
					}
					return "", err
				}
				return aws.ToString(out.ETag), nil
			}
			code, err := put("state/exp/lock.json", "x", func(in *s3.PutObjectInput) { in.IfMatch = aws.String(`"0123"`) })
			if err == nil || code != tt.missing {
				t.Errorf("If-Match on a missing key: %q (%v), want %s", code, err, tt.missing)
			}
			etag, err := put("state/exp/lock.json", "free", func(*s3.PutObjectInput) {})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := put("state/exp/lock.json", "held", func(in *s3.PutObjectInput) { in.IfMatch = aws.String(etag) }); err != nil {
				t.Fatalf("If-Match with the current ETag: %v", err)
			}
			if code, err := put("state/exp/lock.json", "late", func(in *s3.PutObjectInput) { in.IfMatch = aws.String(etag) }); err == nil || code != tt.stale {
				t.Errorf("If-Match with a stale ETag: %q (%v), want %s", code, err, tt.stale)
			}
			if code, err := put("state/exp/lock.json", "new", func(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String("*") }); err == nil || code != tt.exists {
				t.Errorf("If-None-Match on an existing key: %q (%v), want %s", code, err, tt.exists)
			}
		})
	}
}

// GetRange is one ranged GET: the bytes asked for, fewer where the object
// ends sooner, none past its end (S3 answers that with 416 InvalidRange).
func TestGetRange(t *testing.T) {
	t.Parallel()
	for _, em := range emulators {
		t.Run(em.name, func(t *testing.T) {
			t.Parallel()
			f := em.fixture(t)
			ctx := context.Background()
			const key = "runs/exp/run-1/batches.jsonl"
			if _, err := f.store.Put(ctx, key, strings.NewReader("0123456789"), store.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, tt := range []struct {
				offset, length int64
				want           string
			}{{0, 10, "0123456789"}, {3, 4, "3456"}, {9, 1, "9"}, {8, 5, "89"}, {10, 3, ""}, {42, 1, ""}} {
				rc, err := f.store.GetRange(ctx, key, tt.offset, tt.length)
				if err != nil {
					t.Fatalf("GetRange(%d, %d): %v", tt.offset, tt.length, err)
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || string(got) != tt.want {
					t.Errorf("GetRange(%d, %d) = %q, %v; want %q", tt.offset, tt.length, got, err, tt.want)
				}
			}
			if _, err := f.store.GetRange(ctx, "runs/exp/run-1/none", 0, 1); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("GetRange of a missing key: %v, want ErrNotFound", err)
			}
		})
	}
}
