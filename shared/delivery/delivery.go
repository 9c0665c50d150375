// Package delivery tells what an object under segments/<segment>/ is, and
// when a folder of parts is a whole delivery. A delivery is what one run
// covers: a single file directly under the segment, or a folder of parts
// (as warehouses write them), complete when a manifest's parts are all
// there, when a _SUCCESS marker has landed, or, if the export allows it,
// when no part has arrived for a quiet period. A partial folder is never a
// delivery: a part still on its way would read as leavers.
package delivery

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"
)

// Kind is what an object is to segpilot, from its key alone.
type Kind int

const (
	// Data is a segment file, or one part of a folder delivery.
	Data Kind = iota
	// Marker is a folder's completion marker (_SUCCESS).
	Marker
	// Manifest lists a folder's parts (Redshift's manifest, Athena's data
	// manifest, Customer Insights' model.json).
	Manifest
	// Ignored is never a segment: a job's scratch (_temporary/), checksums
	// (*.crc), a desktop's litter (.DS_Store, ~$ lock files, ._ forks).
	Ignored
)

func (k Kind) String() string {
	switch k {
	case Data:
		return "data"
	case Marker:
		return "marker"
	case Manifest:
		return "manifest"
	}
	return "ignored"
}

// Classify says what the object at key is.
func Classify(key string) Kind {
	for _, dir := range strings.Split(path.Dir(key), "/") {
		if dir == "_temporary" || (strings.HasPrefix(dir, ".") && dir != ".") {
			return Ignored
		}
	}
	name := path.Base(key)
	lower := strings.ToLower(name)
	switch {
	case name == "_SUCCESS":
		return Marker
	case manifestFormat(name) != "":
		return Manifest
	case strings.HasSuffix(lower, ".crc"), strings.HasPrefix(name, "."), strings.HasPrefix(name, "~$"),
		strings.HasPrefix(name, "_committed_"), strings.HasPrefix(name, "_started_"), name == "_SUCCESS.crc",
		strings.HasSuffix(name, "_$folder$"), name == "Thumbs.db":
		return Ignored
	case strings.HasPrefix(name, "_"):
		// Spark's and Hadoop's bookkeeping (_metadata, _common_metadata …)
		// is not data.
		return Ignored
	}
	return Data
}

// Of splits key, under segments/<segment>/, into its segment and the
// folder delivery it belongs to: "" for a file directly under the
// segment (a delivery of its own), else the folder's key, ending in "/".
func Of(key string) (segment, folder string, err error) {
	rest, ok := strings.CutPrefix(key, "segments/")
	seg, inSeg, found := strings.Cut(rest, "/")
	if !ok || !found || seg == "" || inSeg == "" || strings.HasSuffix(inSeg, "/") {
		return "", "", fmt.Errorf("%q is not a segment file: expected segments/<segment>/<file> or segments/<segment>/<folder>/<part>", key)
	}
	if top, _, deeper := strings.Cut(inSeg, "/"); deeper {
		return seg, "segments/" + seg + "/" + top + "/", nil
	}
	return seg, "", nil
}

// Object is one object of a folder, as a listing gives it.
type Object struct {
	Key          string
	ETag         string
	Size         int64
	LastModified time.Time
}

// Entry is one part a manifest names: its key (resolved against the
// folder), its size in bytes when the manifest gives one (-1: not), and
// its columns when the part has no header row and the manifest names them
// (Customer Insights' partitions).
type Entry struct {
	Key     string
	Size    int64
	Columns []string
}

// Options are an export's rules for folder deliveries.
type Options struct {
	// QuietPeriod completes a folder with neither manifest nor marker once
	// no object has arrived for this long; 0: never.
	QuietPeriod time.Duration
	// Whole: the folder is known to be whole (a person named it): with
	// neither manifest nor marker, it is every data file in it.
	Whole bool
}

// Decision is whether a folder is a whole delivery, and which parts.
type Decision struct {
	Folder   string
	Complete bool
	By       string   // what completed it: "manifest <key>", "marker", "quiet period"
	Parts    []Object // the parts to read, in order
	// Columns are the column names of parts that have no header row, by
	// key, as their manifest gives them.
	Columns  map[string][]string
	Missing  []string // what keeps it incomplete: parts a manifest names that are absent or of another size
	Identity string   // names the delivery's content: the same parts, the same identity
	Size     int64    // bytes in its parts
	Last     time.Time
}

// Reader reads a manifest's bytes, to parse it.
type Reader func(key string) ([]byte, error)

// Decide judges folder from its listing (every object under it) at now.
// A manifest wins over a marker, a marker over the quiet period. The
// parts are in the manifest's order, else in key order.
func Decide(folder string, objs []Object, read Reader, now time.Time, opts Options) (Decision, error) {
	d := Decision{Folder: folder}
	byKey := make(map[string]Object, len(objs))
	var data []Object
	var manifests []Object
	marker := false
	for _, o := range objs {
		if !strings.HasPrefix(o.Key, folder) {
			continue
		}
		byKey[o.Key] = o
		if o.LastModified.After(d.Last) {
			d.Last = o.LastModified
		}
		switch Classify(o.Key) {
		case Data:
			data = append(data, o)
		case Manifest:
			manifests = append(manifests, o)
		case Marker:
			marker = true
		}
	}
	slices.SortFunc(data, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	slices.SortFunc(manifests, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })

	switch {
	case len(manifests) > 0:
		m := manifests[len(manifests)-1]
		if len(manifests) > 1 {
			// Two manifests in one folder name two deliveries: refuse to
			// guess which one is whole.
			var keys []string
			for _, o := range manifests {
				keys = append(keys, o.Key)
			}
			d.Missing = []string{"one manifest (the folder holds " + strings.Join(keys, ", ") + ")"}
			return d, nil
		}
		raw, err := read(m.Key)
		if err != nil {
			return d, fmt.Errorf("reading the manifest %s: %w", m.Key, err)
		}
		entries, err := Parse(m.Key, raw, data)
		if err != nil {
			return d, err
		}
		d.By = "manifest " + m.Key
		for _, e := range entries {
			o, ok := byKey[e.Key]
			switch {
			case !ok:
				d.Missing = append(d.Missing, e.Key)
			case e.Size >= 0 && o.Size != e.Size:
				d.Missing = append(d.Missing, fmt.Sprintf("%s (%d bytes, the manifest says %d)", e.Key, o.Size, e.Size))
			default:
				d.Parts = append(d.Parts, o)
				if e.Columns != nil {
					if d.Columns == nil {
						d.Columns = map[string][]string{}
					}
					d.Columns[o.Key] = e.Columns
				}
			}
		}
		d.Complete = len(d.Missing) == 0 && len(d.Parts) > 0
		if len(entries) == 0 {
			d.Missing = []string{"a part: the manifest lists none"}
		}
		d.Parts = append([]Object{m}, d.Parts...) // the manifest is part of the identity, not read
		d.finish(1)
		return d, nil
	case marker:
		d.By, d.Parts, d.Complete = "marker", data, len(data) > 0
		if len(data) == 0 {
			d.Missing = []string{"a data file: the folder holds only its marker"}
		}
	case opts.QuietPeriod > 0 && len(data) > 0 && now.Sub(d.Last) >= opts.QuietPeriod:
		d.By, d.Parts, d.Complete = "quiet period", data, true
	case opts.Whole && len(data) > 0:
		d.By, d.Parts, d.Complete = "naming", data, true
	default:
		d.Parts = data
		d.Missing = []string{"a manifest or a _SUCCESS marker"}
		if opts.QuietPeriod > 0 {
			d.Missing = []string{fmt.Sprintf("a manifest, a _SUCCESS marker, or %v without a new part", opts.QuietPeriod)}
		}
	}
	d.finish(0)
	return d, nil
}

// finish names the delivery by its parts (from skip on, after the
// manifest) and sums their sizes.
func (d *Decision) finish(skip int) {
	h := sha256.New()
	for i, p := range d.Parts {
		tag := p.ETag
		if tag == "" { // a listing without ETags (a local folder): its time stands in
			tag = p.LastModified.UTC().Format(time.RFC3339Nano)
		}
		fmt.Fprintf(h, "%s\x00%s\x00%d\x00", p.Key, tag, p.Size)
		if i >= skip {
			d.Size += p.Size
		}
	}
	d.Identity = hex.EncodeToString(h.Sum(nil)[:16])
	if skip > 0 {
		d.Parts = d.Parts[skip:]
	}
}

// Describe says in a sentence what the folder holds and what it lacks.
func (d Decision) Describe() string {
	if d.Complete {
		return fmt.Sprintf("%s: %d parts, %d bytes, complete by its %s", d.Folder, len(d.Parts), d.Size, d.By)
	}
	what := fmt.Sprintf("%s: %d parts", d.Folder, len(d.Parts))
	if len(d.Missing) > 0 {
		shown := d.Missing
		if len(shown) > 5 {
			shown = append(shown[:5:5], fmt.Sprintf("and %d more", len(d.Missing)-5))
		}
		what += ", waiting for " + strings.Join(shown, ", ")
	}
	return what
}
