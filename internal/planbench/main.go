// Command planbench measures the planning engine end to end: segment.Read
// over a CSV file feeding plan.Build. It prints one JSON line with rows/s,
// elapsed time and peak RSS (VmHWM). Run by scripts/bench-plan.sh.
package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/snappy"

	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/segment"
)

func main() {
	rows := flag.Int("rows", 1000000, "rows to generate")
	file := flag.String("file", "", "CSV to plan (generated into a temp file when empty)")
	generate := flag.Bool("generate", false, "only write -file with -rows rows and exit")
	changed := flag.Float64("changed", 0, "share of rows whose Orders differ from the base data (for re-run benchmarks)")
	snapshot := flag.String("snapshot", "", "previous snapshot to diff against")
	saveSnapshot := flag.String("save-snapshot", "", "copy the new snapshot here")
	mode := flag.String("mode", plan.ModeMirror, "upsert or mirror")
	tmp := flag.String("tmp", "", "folder for spill files and the plan output (default: system temp)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the plan here")
	toParquet := flag.String("to-parquet", "", "only write -file's rows into this folder as -parts snappy Parquet files, and exit")
	parts := flag.Int("parts", 8, "with -to-parquet: how many files")
	flag.Parse()
	if *toParquet != "" {
		if err := writeParquetParts(*file, *toParquet, *parts); err != nil {
			fmt.Fprintln(os.Stderr, "planbench:", err)
			os.Exit(1)
		}
		return
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "planbench:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "planbench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*rows, *file, *generate, *changed, *snapshot, *saveSnapshot, *mode, *tmp); err != nil {
		fmt.Fprintln(os.Stderr, "planbench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(rows int, file string, generate bool, changed float64, snapshot, saveSnapshot, mode, tmp string) error {
	if file == "" || generate {
		if file == "" {
			f, err := os.CreateTemp(tmp, "planbench-*.csv")
			if err != nil {
				return err
			}
			file = f.Name()
			if err := f.Close(); err != nil {
				return err
			}
			defer os.Remove(file)
		}
		if err := writeCSV(file, rows, changed); err != nil {
			return fmt.Errorf("generating %s: %w", file, err)
		}
		if generate {
			return nil
		}
	}

	out, err := os.MkdirTemp(tmp, "planbench-out-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(out)

	var snap io.Reader
	if snapshot != "" {
		f, err := os.Open(snapshot)
		if err != nil {
			return err
		}
		defer f.Close()
		snap = f
	}
	src := func(ctx context.Context, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
		f, err := os.Open(file)
		if err != nil {
			return segment.Stats{}, err
		}
		defer f.Close()
		return segment.Read(ctx, f, segment.Options{Name: filepath.Base(file), Mapping: mapping}, emit, reject)
	}

	cpuStart, err := cpuTime()
	if err != nil {
		return err
	}
	start := time.Now()
	p, err := plan.Build(context.Background(), src, snap, out, plan.Options{
		Mode: mode, MaxRemovalShare: 0.2, TempDir: tmp,
	})
	elapsed := time.Since(start)
	if err != nil {
		return err
	}
	cpuEnd, err := cpuTime()
	if err != nil {
		return err
	}
	if saveSnapshot != "" {
		if err := copyFile(filepath.Join(out, p.Files.Snapshot), saveSnapshot); err != nil {
			return fmt.Errorf("saving snapshot: %w", err)
		}
	}
	hwm, err := peakRSS()
	if err != nil {
		return err
	}
	fi, err := os.Stat(filepath.Join(out, p.Files.Batches))
	if err != nil {
		return err
	}
	files, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"rows":           p.Counts.Rows,
		"elapsed_s":      elapsed.Seconds(),
		"rows_per_s":     float64(p.Counts.Rows) / elapsed.Seconds(),
		"peak_rss_bytes": hwm,
		"cpu_s":          (cpuEnd - cpuStart).Seconds(),
		"batches":        len(p.Batches),
		"batch_bytes":    fi.Size(),
		"files":          len(files), // in the plan folder
		"counts":         p.Counts,
	})
}

var mapping = segment.Mapping{
	Email: "EmailAddress", FirstName: "FirstName", LastName: "LastName",
	Custom: []segment.CustomField{
		{Source: "LoyaltyTier", Key: "string--Loyalty--Tier", Type: "string"},
		{Source: "Orders", Key: "integer--Orders", Type: "integer"},
	},
}

// writeCSV writes n rows: about 1% repeat an earlier email (in another
// case, so normalisation matters) and 0.5% have an invalid email. The same
// n always gives the same emails; changed alters that share of Orders.
func writeCSV(path string, n int, changed float64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	chg := rand.New(rand.NewPCG(3, 4))
	tiers := []string{"gold", "silver", "bronze", ""}
	first := []string{"Ann", "Bob", "Chloé", "Dara", "Eve", "Finn"}
	last := []string{"Smith", "Jones", "Nguyen", "O'Brien", "Müller", "Garcia"}
	if _, err := w.WriteString("EmailAddress,FirstName,LastName,LoyaltyTier,Orders\n"); err != nil {
		return errors.Join(err, f.Close())
	}
	var b []byte
	for i := range n {
		id := i
		switch r := rng.IntN(1000); {
		case r < 10 && i > 0:
			id = rng.IntN(i)
		case r < 15:
			id = -1
		}
		b = b[:0]
		if id < 0 {
			b = append(b, "not-an-email"...)
		} else {
			email := "customer" + strconv.Itoa(id) + "@example.com"
			if id != i {
				email = strings.ToUpper(email[:1]) + email[1:]
			}
			b = append(b, email...)
		}
		orders := id % 97
		if changed > 0 && chg.Float64() < changed {
			orders += 1000
		}
		b = append(b, ',')
		b = append(b, first[i%len(first)]...)
		b = append(b, ',')
		b = append(b, last[i%len(last)]...)
		b = append(b, ',')
		b = append(b, tiers[i%len(tiers)]...)
		b = append(b, ',')
		b = strconv.AppendInt(b, int64(orders), 10)
		b = append(b, '\n')
		if _, err := w.Write(b); err != nil {
			return errors.Join(err, f.Close())
		}
	}
	if err := w.Flush(); err != nil {
		return errors.Join(err, f.Close())
	}
	return f.Close()
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		return errors.Join(err, out.Close())
	}
	return out.Close()
}

// cpuTime is the process's user+system CPU time so far: on a shared
// machine it says more about cost than wall time does.
func cpuTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("reading CPU time: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// peakRSS reads VmHWM, the process's peak resident set, in bytes.
func peakRSS() (int64, error) {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("reading peak RSS: %w", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing VmHWM %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}

// writeParquetParts writes the rows of the CSV file (as writeCSV makes it)
// into dir as n snappy Parquet files, typed as a warehouse would write
// them: text columns as strings, Orders as INT64. A row group of 64k rows.
func writeParquetParts(file, dir string, n int) error {
	total, err := countRows(file)
	if err != nil {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReaderSize(f, 1<<20))
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return err
	}
	header = slices.Clone(header)
	group := parquet.Group{}
	// As warehouses write them (Spark, DuckDB, Athena): columns of few
	// distinct values dictionary-encoded; the email, every value distinct,
	// plain (where they fall back to once a dictionary grows too big).
	for _, c := range header {
		switch c {
		case "Orders":
			group[c] = parquet.Optional(parquet.Encoded(parquet.Int(64), &parquet.RLEDictionary))
		case "EmailAddress":
			group[c] = parquet.Optional(parquet.String())
		default:
			group[c] = parquet.Optional(parquet.Encoded(parquet.String(), &parquet.RLEDictionary))
		}
	}
	schema := parquet.NewSchema("segment", group)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	writers := make([]interface {
		Write(row any) error
		Flush() error
		Close() error
	}, n)
	outs := make([]*os.File, n)
	for i := range n {
		if outs[i], err = os.Create(filepath.Join(dir, fmt.Sprintf("part-%05d.snappy.parquet", i))); err != nil {
			return err
		}
		writers[i] = parquet.NewWriter(outs[i], schema, parquet.Compression(&snappy.Codec{}), parquet.PageBufferSize(1<<20))
	}
	written := make([]int, n)
	for row := 0; ; row++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		values := make(map[string]any, len(header))
		for i, c := range header {
			switch {
			case rec[i] == "":
			case c == "Orders":
				if v, err := strconv.ParseInt(rec[i], 10, 64); err == nil {
					values[c] = v
				}
			default:
				values[c] = rec[i]
			}
		}
		w := row * n / max(total, 1) // consecutive rows: the CSV's order, part after part
		if err := writers[w].Write(values); err != nil {
			return err
		}
		if written[w]++; written[w]%65536 == 0 {
			if err := writers[w].Flush(); err != nil {
				return err
			}
		}
	}
	for i := range n {
		if err := writers[i].Close(); err != nil {
			return err
		}
		if err := outs[i].Close(); err != nil {
			return err
		}
	}
	return nil
}

// countRows counts the CSV rows of file after its header.
func countRows(file string) (int, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReaderSize(f, 1<<20))
	r.ReuseRecord = true
	n := -1 // the header
	for {
		_, err := r.Read()
		if err == io.EOF {
			return max(n, 0), nil
		}
		if err != nil {
			return 0, err
		}
		n++
	}
}
