package delivery

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"strings"
)

// The manifests segpilot reads, by how their files are named.
const (
	formatRedshift = "redshift" // UNLOAD … MANIFEST: <prefix>manifest, JSON {"entries":[{"url", "meta":{"content_length"}}]}
	formatAthena   = "athena"   // UNLOAD's data manifest: <query id>-manifest.csv, one s3:// URL a line
	formatCDM      = "cdm"      // Customer Insights (Common Data Model): model.json, entities' partitions' locations
)

// maxManifest bounds the bytes read of a manifest: 100,000 parts of long
// URLs fit well within it.
const maxManifest = 32 << 20

func manifestFormat(name string) string {
	lower := strings.ToLower(name)
	switch {
	case lower == "model.json":
		return formatCDM
	case strings.HasSuffix(lower, "-manifest.csv"):
		return formatAthena
	case strings.HasSuffix(lower, "manifest"), lower == "manifest.json":
		return formatRedshift
	}
	return ""
}

// Parse reads the manifest at key: the parts it names, resolved against
// the folder's data objects (a manifest names parts by URL, in the bucket
// that wrote them, which may be another than this one).
func Parse(key string, raw []byte, data []Object) ([]Entry, error) {
	if len(raw) > maxManifest {
		return nil, fmt.Errorf("manifest %s: %d bytes, more than the %d segpilot reads", key, len(raw), maxManifest)
	}
	var entries []Entry
	switch manifestFormat(path.Base(key)) {
	case formatRedshift:
		var m struct {
			Entries []struct {
				URL  string `json:"url"`
				Meta struct {
					ContentLength *int64 `json:"content_length"`
				} `json:"meta"`
			} `json:"entries"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("manifest %s: not a Redshift manifest (JSON with \"entries\"): %w", key, err)
		}
		for _, e := range m.Entries {
			size := int64(-1)
			if e.Meta.ContentLength != nil {
				size = *e.Meta.ContentLength
			}
			entries = append(entries, Entry{Key: e.URL, Size: size})
		}
	case formatAthena:
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" {
				entries = append(entries, Entry{Key: line, Size: -1})
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("manifest %s: %w", key, err)
		}
	case formatCDM:
		// Partitions are CSV without a header row unless their format
		// settings say so; the entity's attributes name the columns.
		var m struct {
			Entities []struct {
				Attributes []struct {
					Name string `json:"name"`
				} `json:"attributes"`
				Partitions []struct {
					Location           string `json:"location"`
					FileFormatSettings struct {
						ColumnHeaders bool `json:"columnHeaders"`
					} `json:"fileFormatSettings"`
				} `json:"partitions"`
			} `json:"entities"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("manifest %s: not a Common Data Model model.json: %w", key, err)
		}
		for _, e := range m.Entities {
			var columns []string
			for _, a := range e.Attributes {
				columns = append(columns, a.Name)
			}
			for _, p := range e.Partitions {
				entry := Entry{Key: p.Location, Size: -1}
				if !p.FileFormatSettings.ColumnHeaders {
					if len(columns) == 0 {
						return nil, fmt.Errorf("manifest %s: partition %s has no header row, and its entity names no attributes", key, p.Location)
					}
					entry.Columns = columns
				}
				entries = append(entries, entry)
			}
		}
	default:
		return nil, fmt.Errorf("%s is not a manifest segpilot reads", key)
	}
	for i, e := range entries {
		k, err := resolve(e.Key, path.Dir(key)+"/", data)
		if err != nil {
			return nil, fmt.Errorf("manifest %s, entry %d: %w", key, i+1, err)
		}
		entries[i].Key = k
	}
	return entries, nil
}

// resolve turns a part's URL into a key of this bucket: the data object
// under dir whose path ends with the most of the URL's path (the same
// folder layout under another bucket or root); failing that, the URL's
// own key under dir's segment, so that the part is reported missing.
func resolve(raw, dir string, data []Object) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "" && u.Path == "") {
		return "", fmt.Errorf("%q is not a part's URL", raw)
	}
	p := strings.TrimPrefix(u.Path, "/")
	if u.Scheme == "" && !strings.Contains(p, "/") {
		p = path.Join(path.Dir(dir), p) // a bare name: beside the manifest
	}
	comps := strings.Split(p, "/")
	for i := range comps {
		suffix := strings.Join(comps[i:], "/")
		for _, o := range data {
			if o.Key == suffix || strings.HasSuffix(o.Key, "/"+suffix) {
				return o.Key, nil
			}
		}
	}
	return dir + comps[len(comps)-1], nil
}
