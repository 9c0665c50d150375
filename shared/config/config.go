// Package config loads and validates exports.yaml: the connections
// (destinations and their API key, consent and budget) and the exports
// (which segment goes to which list, how) that segpilot runs.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/autopilot"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/kinds"
	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/split"
)

// DefaultBaseURL is the Autopilot API used when an autopilot connection
// names none.
const DefaultBaseURL = autopilot.DefaultBaseURL

// Defaults for optional settings.
const (
	DefaultRequestsPerSecond = 5.0
	DefaultMaxProfiles       = 100000
	DefaultMaxRemovalShare   = 0.2
)

// Config is a validated exports.yaml.
type Config struct {
	File        string // as given to Load, used in error messages
	Version     string // "sha256:" + first 16 hex chars of sha256(file bytes): recorded in run reports
	Connections map[string]*Connection
	Exports     map[string]*Export
	// Splits names, for each split export, the exports of its groups that
	// have a list (exports.<name>.split), as Exports holds them.
	Splits map[string][]string
}

// Split is a split export's division of its segment: Parent's contacts,
// by a stable hash of Salt and their email, into Groups (shared/split).
// Each group with a list is an export of its own, named Parent.Group.
type Split struct {
	Parent    string
	Salt      string
	Group     string       // the group this export sends
	Groups    []SplitGroup // every group, in the config's order
	listLines []int        // for the route checks
}

// SplitGroup is one group: its share in hundredths of a percent, and its
// list ("" for a holdout, sent nowhere).
type SplitGroup struct {
	Name  string
	Share int
	List  string
}

// AllocationGroups are the split's groups as shared/split takes them.
func (s *Split) AllocationGroups() []split.Group {
	out := make([]split.Group, len(s.Groups))
	for i, g := range s.Groups {
		out[i] = split.Group{Name: g.Name, Share: g.Share}
	}
	return out
}

// Named returns the export called name, or the exports of the split
// export called so.
func (c *Config) Named(name string) ([]*Export, error) {
	if names, ok := c.Splits[name]; ok {
		out := make([]*Export, 0, len(names))
		for _, n := range names {
			out = append(out, c.Exports[n])
		}
		return out, nil
	}
	e, err := c.Export(name)
	if err != nil {
		return nil, err
	}
	return []*Export{e}, nil
}

// Connection is one destination account and how it may be used.
type Connection struct {
	Name              string
	Kind              string // a kind of shared/kinds: "autopilot", "ortto"
	Region            string `json:",omitempty"` // the account's region, for kinds that have them (Ortto: global, au, eu)
	APIKeySecret      string // Secrets Manager id of the API key
	BaseURL           string // https://, or http:// on a loopback host only; by default the kind's (region's) host
	Consent           bool   // "I agree" to sending personal data outside AWS; exports refuse to run without it
	RequestsPerSecond float64
}

// Match names the segment columns (or JSON keys) that feed a contact.
type Match struct {
	Email, FirstName, LastName string
	// Custom maps a source column to the destination's custom field key:
	// Autopilot's "string--Loyalty--Tier", Ortto's "str:cm:loyalty-tier".
	Custom map[string]string
	// Decimal marks the source columns whose field holds decimals (Ortto's
	// int fields: {field: int:cm:spend, decimal: true}).
	Decimal map[string]bool `json:",omitempty"`
}

// Export sends one segment to one list on one connection.
type Export struct {
	Name              string
	Connection        string
	Kind              string // the connection's kind
	Segment           string // folder name under segments/
	List              string // Autopilot list title, Ortto tag
	Match             Match
	Mode              string // plan.ModeUpsert or plan.ModeMirror: the planner implements them
	MaxProfiles       int
	MaxRemovalShare   float64 // mirror safety brake: refuse to remove more than this share of the list
	AllowLargeRemoval bool    // lift the brake permanently for this export
	Enabled           bool
	// CreateFields lets a run create the custom fields the destination
	// lacks (Ortto) instead of refusing to start.
	CreateFields bool
	// ShowEmails writes rejected rows' emails unmasked into report.json and
	// report.html; by default they are masked there, as in the logs.
	ShowEmails bool
	// QuietPeriod takes a folder of parts with neither manifest nor marker
	// as a whole delivery once no part has arrived for this long; 0: never.
	QuietPeriod time.Duration
	// Split is set for a group of a split export: the export sends only
	// its group's contacts.
	Split *Split
}

// LoadFile reads and validates the config file at path.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Load(path, data)
}

// Load validates data, the content of file. A config with any problem is
// refused whole: the error is a *ValidationError listing every problem.
func Load(file string, data []byte) (*Config, error) {
	d := &decoder{file: file}
	cfg := d.decode(data)
	if len(d.problems) > 0 {
		return nil, d.validationError()
	}
	sum := sha256.Sum256(data)
	cfg.File = file
	cfg.Version = "sha256:" + hex.EncodeToString(sum[:])[:16]
	return cfg, nil
}

// Export returns the export called name, or an *UnknownExportError.
func (c *Config) Export(name string) (*Export, error) {
	if e, ok := c.Exports[name]; ok {
		return e, nil
	}
	return nil, &UnknownExportError{File: c.File, Name: name, Known: slices.Sorted(maps.Keys(c.Exports))}
}

// ExportsForSegment returns every export (enabled or not) that reads segment,
// sorted by name.
func (c *Config) ExportsForSegment(segment string) []*Export {
	var out []*Export
	for _, e := range c.Exports {
		if e.Segment == segment {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ConnectionOf returns the connection e sends to (never nil for an export of
// a loaded Config).
func (c *Config) ConnectionOf(e *Export) *Connection {
	return c.Connections[e.Connection]
}

// Runnable says why e must not run, as a *NotRunnableError, or nil if it may.
func (c *Config) Runnable(e *Export) error {
	if !e.Enabled {
		return &NotRunnableError{
			Export: e.Name,
			Code:   CodeDisabled,
			Reason: fmt.Sprintf("it is disabled (enabled: false under exports.%s in %s)", e.Name, c.File),
		}
	}
	conn := c.ConnectionOf(e)
	if conn == nil || !conn.Consent {
		return &NotRunnableError{
			Export: e.Name,
			Code:   CodeNoConsent,
			Reason: fmt.Sprintf("connection %q has no consent to send personal data outside AWS: "+
				"once agreed, set consent: true under connections.%s in %s", e.Connection, e.Connection, c.File),
		}
	}
	return nil
}

// Mapping returns the export's match as the segment reader wants it, custom
// fields sorted by source column, naming the export's destination.
func (e *Export) Mapping() segment.Mapping {
	m := segment.Mapping{
		Email:     e.Match.Email,
		FirstName: e.Match.FirstName,
		LastName:  e.Match.LastName,
	}
	for _, src := range slices.Sorted(maps.Keys(e.Match.Custom)) {
		key := e.Match.Custom[src]
		m.Custom = append(m.Custom, segment.CustomField{Source: src, Key: key, Type: string(e.fieldType(src))})
	}
	if k, ok := kinds.Lookup(e.Kind); ok {
		m.Destination = segment.Destination{Title: k.Title, TextField: k.TextField}
	}
	return m
}

// Fields lists the custom fields the export fills, sorted by key.
func (e *Export) Fields() []dest.Field {
	var out []dest.Field
	for _, src := range slices.Sorted(maps.Keys(e.Match.Custom)) {
		out = append(out, dest.Field{Key: e.Match.Custom[src], Type: e.fieldType(src)})
	}
	slices.SortFunc(out, func(a, b dest.Field) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// fieldType is the value type of the custom field src feeds, as the
// export's kind reads its key (checked when the config was loaded).
func (e *Export) fieldType(src string) dest.Type {
	key := e.Match.Custom[src]
	if k, ok := kinds.Lookup(e.Kind); ok {
		if t, err := k.FieldType(key, e.Match.Decimal[src]); err == nil {
			return t
		}
	}
	typ, _, _ := strings.Cut(key, "--")
	return dest.Type(typ)
}

// Capabilities says how the connection's destination shapes requests
// (Autopilot's when the kind is unknown: a manifest from before kinds).
func (c Connection) Capabilities() dest.Capabilities {
	k, ok := kinds.Lookup(c.Kind)
	if !ok {
		k, _ = kinds.Lookup("autopilot")
	}
	return k.Capabilities
}

// Title is how messages and reports name the connection's destination:
// "Autopilot", "Ortto".
func (c Connection) Title() string {
	if k, ok := kinds.Lookup(c.Kind); ok {
		return k.Title
	}
	return c.Kind
}

// CheckBaseURL refuses a base URL the API key must not be sent to: one
// not on https (http only for a loopback host), or with credentials, a
// query or a fragment. Loading a config checks every baseURL with it;
// an override from elsewhere (AUTOPILOT_BASE_URL) must pass it too. It
// knows no kind, so its example names none.
func CheckBaseURL(raw string) error {
	if msg := baseURLProblem(raw, "https://HOST"); msg != "" {
		return fmt.Errorf("base URL %s", msg)
	}
	return nil
}
