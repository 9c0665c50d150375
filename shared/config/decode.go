package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/kinds"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/split"
)

// maxFileSize keeps a mistaken upload (a segment saved as the config, say)
// from being parsed at length.
const maxFileSize = 1 << 20

const maxNameLen = 40

// Bounds on the work one file can cause: aliases can make a small file
// expand to a huge tree, and a broken file to endless problems.
const (
	maxEntries  = 100000
	maxProblems = 100
)

var (
	namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	// Secrets Manager secret names; ARNs are recognised by their prefix.
	secretIDPattern = regexp.MustCompile(`^[A-Za-z0-9/_+=.@-]{1,512}$`)
	yamlErrPattern  = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
)

var (
	rootKeys       = []string{"connections", "exports"}
	connectionKeys = []string{"kind", "region", "apiKeySecret", "baseURL", "consent", "requestsPerSecond"}
	exportKeys     = []string{"connection", "segment", "list", "match", "mode", "maxProfiles",
		"maxRemovalShare", "allowLargeRemoval", "enabled", "createFields", "showEmails", "quietPeriod", "split"}
	splitKeys      = []string{"salt", "groups"}
	splitGroupKeys = []string{"percent", "list"}
	matchKeys      = []string{"email", "firstName", "lastName", "custom"}
	customKeys     = []string{"field", "decimal"}
	modes          = plan.Modes
)

// defaultKind is assumed for an export whose connection is not defined,
// so its other problems are still reported (in Autopilot's words, as
// before there were other kinds).
const defaultKind = "autopilot"

const nameRule = "may contain only letters, digits, '.', '_' and '-' (it becomes an S3 prefix and a Step Functions execution name)"

// decoder walks the YAML tree, building a Config and collecting every problem.
type decoder struct {
	file     string
	problems []Problem
	dropped  int // problems past maxProblems
	entries  int // mapping entries visited, aliases counted each time
}

// field is one key and its value (aliases resolved).
type field struct{ key, val *yaml.Node }

// object is a YAML mapping with a fixed set of keys.
type object struct {
	path   string
	line   int // of the key holding the mapping: where "required" problems point
	fields map[string]field
}

func (d *decoder) add(path string, line int, format string, args ...any) {
	if len(d.problems) >= maxProblems {
		d.dropped++
		return
	}
	d.problems = append(d.problems, Problem{Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
}

func (d *decoder) validationError() *ValidationError {
	sort.SliceStable(d.problems, func(i, j int) bool { return d.problems[i].Line < d.problems[j].Line })
	if d.dropped > 0 {
		d.problems = append(d.problems, Problem{Message: fmt.Sprintf("and %d more problems not shown: fix these first", d.dropped)})
	}
	return &ValidationError{File: d.file, Problems: d.problems}
}

func (d *decoder) decode(data []byte) *Config {
	cfg := &Config{Connections: map[string]*Connection{}, Exports: map[string]*Export{}}
	if len(data) > maxFileSize {
		d.add("", 0, "file is %d bytes; a config may be at most %d", len(data), maxFileSize)
		return cfg
	}
	root, ok := d.parse(data)
	if !ok {
		return cfg
	}
	if root == nil {
		d.add("", 1, "file is empty: define connections and exports")
		return cfg
	}
	top := d.object(root, "", root.Line, rootKeys)
	if top == nil {
		return cfg
	}

	conns := d.collection(top, "connections", "at least one destination: kind, apiKeySecret, consent")
	for _, f := range conns {
		c := d.connection(f)
		cfg.Connections[c.Name] = c
	}
	type placed struct {
		e              *Export
		line, listLine int
	}
	var exports []placed
	for _, f := range d.collection(top, "exports", "at least one export: connection, segment, list, match") {
		e, listLine := d.export(f, cfg.Connections)
		if e.Split == nil {
			cfg.Exports[e.Name] = e
			exports = append(exports, placed{e, f.key.Line, listLine})
			continue
		}
		// A split export is an export per group that has a list: each
		// keeps its own state, snapshot and runs, and takes only its
		// group's contacts (see shared/split).
		if cfg.Splits == nil {
			cfg.Splits = map[string][]string{}
		}
		for i, g := range e.Split.Groups {
			if g.List == "" {
				continue
			}
			ge := *e
			ge.Name, ge.List = e.Name+"."+g.Name, g.List
			sp := *e.Split
			sp.Group = g.Name
			ge.Split = &sp
			d.name(join(join("exports", e.Name), "split.groups."+g.Name), f.key.Line, ge.Name)
			cfg.Exports[ge.Name] = &ge
			cfg.Splits[e.Name] = append(cfg.Splits[e.Name], ge.Name)
			exports = append(exports, placed{&ge, f.key.Line, e.Split.listLines[i]})
		}
	}
	for _, parent := range slices.Sorted(maps.Keys(cfg.Splits)) {
		for _, name := range cfg.Splits[parent] {
			if e := cfg.Exports[name]; e.Split == nil || e.Split.Parent != parent {
				d.add("exports."+name, 0, "is also the name of a group of the split export exports.%s (its groups are exports named <export>.<group>): rename one", parent)
			}
		}
	}

	// Two exports filling one list from one segment would undo each other's
	// removals in mirror mode, and double the work in upsert mode.
	type route struct{ conn, segment, list string }
	// A mirror export takes a contact off its list when the contact leaves
	// its segment, even while another export filling that list still sends
	// it; that export would not send it again until it changes. So a list
	// a mirror export fills is its alone. Upsert exports may share one.
	type list struct{ conn, title string }
	first := map[route]placed{}
	byList := map[list][]placed{}
	for _, p := range exports {
		e := p.e
		if e.Connection == "" || e.Segment == "" || strings.TrimSpace(e.List) == "" {
			continue
		}
		title := strings.ToLower(strings.TrimSpace(e.List))
		r := route{e.Connection, e.Segment, title}
		if prev, ok := first[r]; ok {
			d.add("exports."+e.Name, p.line,
				"sends segment %s to list %s on connection %s, as exports.%s (line %d) does: they would fight over the list's members; merge them or use another list",
				q(e.Segment), q(e.List), q(e.Connection), prev.e.Name, prev.line)
			continue
		}
		first[r] = p
		l := list{e.Connection, title}
		for _, prev := range byList[l] {
			mirror := e
			if e.Mode != plan.ModeMirror {
				mirror = prev.e
			}
			if mirror.Mode == plan.ModeMirror {
				d.add("exports."+e.Name+".list", p.listLine,
					"%s is also the list of exports.%s (line %d) on connection %s, and exports.%s is in mirror mode: it takes a contact off the list when the contact leaves its segment, even while the other export still sends it; give each mirror export a list of its own",
					q(e.List), prev.e.Name, prev.listLine, q(e.Connection), mirror.Name)
				break
			}
		}
		byList[l] = append(byList[l], p)
	}
	return cfg
}

// parse returns the root node, nil for an empty file; ok is false when the
// YAML itself is broken (reported).
func (d *decoder) parse(data []byte) (root *yaml.Node, ok bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, true
		}
		d.yamlError(err)
		return nil, false
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			d.yamlError(err)
		} else {
			d.add("", docLine(&next), "a second YAML document starts here: keep the whole config in one document")
		}
		return nil, false
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, true
	}
	root = resolve(doc.Content[0])
	if root == nil || isNull(root) {
		return nil, true
	}
	return root, true
}

func docLine(n *yaml.Node) int {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return n.Content[0].Line
	}
	return n.Line
}

func (d *decoder) yamlError(err error) {
	msg := err.Error()
	if m := yamlErrPattern.FindStringSubmatch(msg); m != nil {
		line, convErr := strconv.Atoi(m[1])
		if convErr == nil {
			d.add("", line, "not valid YAML: %s", m[2])
			return
		}
	}
	d.add("", 0, "not valid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}

// pairs returns the entries of mapping n in file order, reporting
// duplicate, non-string and merge keys (and leaving them out).
func (d *decoder) pairs(n *yaml.Node, path string) []field {
	if d.entries > maxEntries {
		return nil
	}
	d.entries += len(n.Content) / 2
	if d.entries > maxEntries {
		d.add(path, n.Line, "the file expands to more than %d keys (aliases count each time they are used): write it out plainly", maxEntries)
		return nil
	}
	var out []field
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.add(path, k.Line, "keys must be plain strings")
			continue
		}
		kp := join(path, k.Value)
		if k.ShortTag() == "!!merge" {
			d.add(kp, k.Line, "merge keys (<<) are not supported: write the keys out")
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.add(kp, k.Line, "duplicate key (first set at line %d): keep one", line)
			continue
		}
		seen[k.Value] = k.Line
		if v == nil {
			d.add(kp, k.Line, "refers to an unknown anchor")
			continue
		}
		out = append(out, field{key: k, val: v})
	}
	return out
}

// object reads a mapping whose keys must come from allowed. A null value
// counts as an empty mapping so that its required keys get reported.
func (d *decoder) object(n *yaml.Node, path string, line int, allowed []string) *object {
	o := &object{path: path, line: line, fields: map[string]field{}}
	if isNull(n) {
		return o
	}
	if n.Kind != yaml.MappingNode {
		d.add(path, n.Line, "must be a mapping with keys %s, got %s", strings.Join(allowed, ", "), describe(n))
		return nil
	}
	for _, f := range d.pairs(n, path) {
		if !slices.Contains(allowed, f.key.Value) {
			d.unknownKey(join(path, f.key.Value), f.key, allowed)
			continue
		}
		o.fields[f.key.Value] = f
	}
	return o
}

func (d *decoder) unknownKey(path string, k *yaml.Node, allowed []string) {
	if looksLikeSecret(k.Value) {
		d.add(path, k.Line, "unknown key: never put an API key in this file; store it in Secrets Manager and name the secret in the connection's apiKeySecret")
		return
	}
	if s, ok := closest(k.Value, allowed); ok {
		d.add(path, k.Line, "unknown key (did you mean %q?)", s)
		return
	}
	d.add(path, k.Line, "unknown key (accepted: %s)", strings.Join(allowed, ", "))
}

func looksLikeSecret(key string) bool {
	k := strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(key))
	return strings.Contains(k, "apikey") || strings.Contains(k, "password") ||
		strings.Contains(k, "token") || k == "key" || k == "secret"
}

// collection reads a mapping of user-chosen names (connections, exports),
// reporting it when missing or empty.
func (d *decoder) collection(top *object, key, hint string) []field {
	f, ok := top.fields[key]
	if !ok {
		d.add(key, top.line, "required (%s)", hint)
		return nil
	}
	if isNull(f.val) || (f.val.Kind == yaml.MappingNode && len(f.val.Content) == 0) {
		d.add(key, f.key.Line, "is empty: define %s", hint)
		return nil
	}
	if f.val.Kind != yaml.MappingNode {
		d.add(key, f.val.Line, "must be a mapping of names to settings, got %s", describe(f.val))
		return nil
	}
	return d.pairs(f.val, key)
}

func (d *decoder) name(path string, line int, name string) {
	switch {
	case name == "":
		d.add(path, line, "name must not be empty")
	case !namePattern.MatchString(name) || name == "." || name == "..":
		d.add(path, line, "name %s %s", q(name), nameRule)
	case len(name) > maxNameLen:
		d.add(path, line, "name is %d characters; the limit is %d (it becomes an S3 prefix and a Step Functions execution name)", len(name), maxNameLen)
	}
}

func (d *decoder) connection(f field) *Connection {
	name := f.key.Value
	path := join("connections", name)
	c := &Connection{Name: name, RequestsPerSecond: DefaultRequestsPerSecond}
	d.name(path, f.key.Line, name)
	o := d.object(f.val, path, f.key.Line, connectionKeys)
	if o == nil {
		return c
	}
	kind, known := kinds.Lookup(defaultKind)
	if v, n, ok := d.required(o, "kind", "the destination type: "+strings.Join(kinds.Names(), " or ")); ok {
		c.Kind = v
		if kind, known = kinds.Lookup(v); !known {
			d.add(o.sub("kind"), n.Line, "%s is not a supported kind%s; supported: %s", q(v), didYouMean(v, kinds.Names()), strings.Join(kinds.Names(), ", "))
		}
	}
	// The value is never echoed: a misplaced API key must not reach logs.
	if v, n, ok := d.required(o, "apiKeySecret", "the Secrets Manager secret id holding the API key, e.g. segpilot/autopilot"); ok {
		c.APIKeySecret = v
		if !secretIDPattern.MatchString(v) && !(strings.HasPrefix(v, "arn:") && !strings.ContainsAny(v, " \t\r\n")) {
			d.add(o.sub("apiKeySecret"), n.Line, "is not a Secrets Manager secret id (letters, digits and /_+=.@- only, or an ARN); keep the key itself in Secrets Manager, never in this file")
		}
	}
	c.BaseURL = kind.DefaultBaseURL
	region, regionNode, hasRegion := d.str(o, "region")
	if hasRegion {
		regions := slices.Sorted(maps.Keys(kind.Regions))
		switch {
		case !known:
		case len(regions) == 0:
			d.add(o.sub("region"), regionNode.Line, "%s connections have no region: remove it", kind.Title)
		case kind.Regions[region] == "":
			d.add(o.sub("region"), regionNode.Line, "%s is not one of %s's regions%s; use %s (your %s instance's region)",
				q(region), kind.Title, didYouMean(region, regions), strings.Join(regions, ", "), kind.Title)
		default:
			c.Region, c.BaseURL = region, kind.Regions[region]
		}
	}
	if v, n, ok := d.str(o, "baseURL"); ok {
		switch msg := baseURLProblem(v, kind.DefaultBaseURL); {
		case msg != "":
			d.add(o.sub("baseURL"), n.Line, "%s", msg)
		case hasRegion:
			d.add(o.sub("baseURL"), n.Line, "give region (which picks %s's host) or baseURL (a proxy, or the simulator), not both", kind.Title)
		default:
			c.BaseURL = strings.TrimRight(v, "/")
		}
	}
	if v, ok := d.boolean(o, "consent"); ok {
		c.Consent = v
	}
	if v, n, ok := d.number(o, "requestsPerSecond"); ok {
		if v > 0 && v <= 100 {
			c.RequestsPerSecond = v
		} else {
			d.add(o.sub("requestsPerSecond"), n.Line, "must be more than 0 and at most 100 (the API key's whole budget, shared by every worker), got %s", describe(n))
		}
	}
	return c
}

// baseURLProblem says what is wrong with a base URL, or "" if nothing;
// example is a good one, the destination's host. It quotes the URL only
// once it is known to carry no credentials.
func baseURLProblem(raw, example string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "is not a valid URL; use e.g. " + example
	}
	if u.User != nil {
		return "must not contain a user name or password: the API key comes from apiKeySecret"
	}
	if u.Host == "" || u.Scheme == "" {
		return "must be an absolute URL like " + example
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return fmt.Sprintf("%s must not have a query or fragment", q(raw))
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return ""
	case "http":
		if isLoopback(u.Hostname()) {
			return ""
		}
		return fmt.Sprintf("%s must use https:// (over http:// the API key would travel in clear); http:// is allowed only for a loopback host (127.0.0.1, ::1, localhost)", q(raw))
	default:
		return fmt.Sprintf("%s must start with https://", q(raw))
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// export reads one export; listLine is the line of its list (0 if none).
func (d *decoder) export(f field, conns map[string]*Connection) (e *Export, listLine int) {
	name := f.key.Value
	path := join("exports", name)
	e = &Export{
		Name:            name,
		Mode:            plan.ModeUpsert,
		MaxProfiles:     DefaultMaxProfiles,
		MaxRemovalShare: DefaultMaxRemovalShare,
		Enabled:         true,
	}
	d.name(path, f.key.Line, name)
	o := d.object(f.val, path, f.key.Line, exportKeys)
	if o == nil {
		return e, 0
	}
	kind, _ := kinds.Lookup(defaultKind)
	if v, n, ok := d.required(o, "connection", "the name of a connection under connections:"); ok {
		if c, defined := conns[v]; defined {
			e.Connection, e.Kind = v, c.Kind
			if k, known := kinds.Lookup(c.Kind); known {
				kind = k
			}
		} else {
			d.add(o.sub("connection"), n.Line, "%s is not defined%s", q(v), definedHint(v, slices.Sorted(maps.Keys(conns)), "connections"))
		}
	}
	if v, n, ok := d.required(o, "segment", "the folder under segments/ that this export reads"); ok {
		if !namePattern.MatchString(v) || v == "." || v == ".." {
			d.add(o.sub("segment"), n.Line, "%s is not a valid folder name: use only letters, digits, '.', '_' and '-' (the folder under segments/)", q(v))
		} else {
			e.Segment = v
		}
	}
	listHint := "the title of the " + kind.Title + " list to fill; it is created when missing"
	if kind.Regions != nil {
		listHint = "the " + kind.Title + " tag this export's people get; an audience filtered on it is the list"
	}
	if sf, ok := o.fields["split"]; ok && !isNull(sf.val) {
		e.Split = d.split(sf, o.sub("split"), name)
		if lf, ok := o.fields["list"]; ok {
			d.add(o.sub("list"), lf.key.Line, "a split export sends each group to its own list: give the lists under split.groups, and remove list")
		}
	} else if v, n, ok := d.required(o, "list", listHint); ok {
		e.List, listLine = v, n.Line
	}
	if mf, ok := o.fields["match"]; ok && !isNull(mf.val) {
		e.Match = d.match(mf, o.sub("match"), kind)
	} else {
		d.add(o.sub("match"), o.line, "required (which columns feed the contact; at least email)")
	}
	if v, n, ok := d.str(o, "mode"); ok {
		if slices.Contains(modes, v) {
			e.Mode = v
		} else {
			d.add(o.sub("mode"), n.Line, "%s is not a mode%s; use upsert (add and update only), mirror (also remove leavers), update (change people %s has, never create one) or create (add people %s lacks, never change one)", q(v), didYouMean(v, modes), kind.Title, kind.Title)
		}
	}
	if v, n, ok := d.integer(o, "maxProfiles"); ok {
		if v > 0 {
			e.MaxProfiles = v
		} else {
			d.add(o.sub("maxProfiles"), n.Line, "must be more than 0 (the most profiles a run may send), got %d", v)
		}
	}
	if v, n, ok := d.number(o, "maxRemovalShare"); ok {
		if v > 0 && v <= 1 {
			e.MaxRemovalShare = v
		} else {
			d.add(o.sub("maxRemovalShare"), n.Line, "must be more than 0 and at most 1 (the largest share of the list a mirror run may remove, e.g. 0.2), got %s", describe(n))
		}
	}
	if v, ok := d.boolean(o, "allowLargeRemoval"); ok {
		e.AllowLargeRemoval = v
	}
	if v, ok := d.boolean(o, "enabled"); ok {
		e.Enabled = v
	}
	if v, ok := d.boolean(o, "createFields"); ok {
		if v && !kind.CreatesFields {
			d.add(o.sub("createFields"), o.fields["createFields"].val.Line, "%s creates custom fields on first use: remove createFields", kind.Title)
		}
		e.CreateFields = v
	}
	if v, ok := d.boolean(o, "showEmails"); ok {
		e.ShowEmails = v
	}
	if v, n, ok := d.str(o, "quietPeriod"); ok {
		p, err := time.ParseDuration(v)
		switch {
		case err != nil || p < time.Minute || p > 24*time.Hour:
			d.add(o.sub("quietPeriod"), n.Line, "%s is not a quiet period: give a duration from 1m to 24h, e.g. 15m (how long a folder of parts with neither manifest nor _SUCCESS marker must go without a new part to count as whole)", q(v))
		case e.Mode == plan.ModeMirror:
			d.add(o.sub("quietPeriod"), n.Line, "a mirror export cannot take a folder as whole by its quiet period: a part still on its way would read as leavers, and be removed; have the job that writes the folder add a manifest or a _SUCCESS marker, and remove quietPeriod")
		default:
			e.QuietPeriod = p
		}
	}
	return e, listLine
}

// split reads an export's split: its groups in order, each a percentage
// and a list (none: a holdout, sent nowhere).
func (d *decoder) split(f field, path, export string) *Split {
	sp := &Split{Parent: export, Salt: export}
	o := d.object(f.val, path, f.key.Line, splitKeys)
	if o == nil {
		return sp
	}
	if v, _, ok := d.str(o, "salt"); ok {
		sp.Salt = v
	}
	gf, ok := o.fields["groups"]
	if !ok || isNull(gf.val) || gf.val.Kind != yaml.MappingNode {
		d.add(o.sub("groups"), o.line, "required: the groups by name, each with a percent and a list (none: a holdout), e.g. a: {percent: 45, list: Test A}")
		return sp
	}
	total, lists := 0, 0
	for _, g := range d.pairs(gf.val, o.sub("groups")) {
		gp := join(o.sub("groups"), g.key.Value)
		d.name(gp, g.key.Line, g.key.Value)
		gobj := d.object(g.val, gp, g.key.Line, splitGroupKeys)
		if gobj == nil {
			continue
		}
		group := SplitGroup{Name: g.key.Value}
		listLine := g.key.Line
		if v, n, ok := d.number(gobj, "percent"); ok {
			share := int(math.Round(v * 100))
			if v <= 0 || v > 100 || math.Abs(float64(share)-v*100) > 1e-6 {
				d.add(gobj.sub("percent"), n.Line, "must be more than 0 and at most 100, in hundredths at most (e.g. 45 or 12.5), got %s", describe(n))
			}
			group.Share = share
		} else if n == nil {
			d.add(gobj.sub("percent"), g.key.Line, "required: the group's share of the segment, e.g. 45")
		}
		if v, n, ok := d.str(gobj, "list"); ok {
			group.List, listLine = v, n.Line
			lists++
		}
		total += group.Share
		sp.Groups = append(sp.Groups, group)
		sp.listLines = append(sp.listLines, listLine)
	}
	if total != split.Buckets && len(sp.Groups) > 0 {
		d.add(o.sub("groups"), gf.key.Line, "the groups' percentages add up to %s; they must add up to 100 (a holdout is a group without a list)", strings.TrimSuffix(split.Percent(total), " %"))
	}
	if lists == 0 && len(sp.Groups) > 0 {
		d.add(o.sub("groups"), gf.key.Line, "no group has a list: every contact would be held out")
	}
	return sp
}

func (d *decoder) match(f field, path string, kind dest.Kind) Match {
	var m Match
	o := d.object(f.val, path, f.key.Line, matchKeys)
	if o == nil {
		return m
	}
	if v, _, ok := d.required(o, "email", "the column or key holding the email address"); ok {
		m.Email = v
	}
	if v, _, ok := d.str(o, "firstName"); ok {
		m.FirstName = v
	}
	if v, _, ok := d.str(o, "lastName"); ok {
		m.LastName = v
	}
	cf, ok := o.fields["custom"]
	if !ok || isNull(cf.val) {
		return m
	}
	cpath := o.sub("custom")
	if cf.val.Kind != yaml.MappingNode {
		d.add(cpath, cf.val.Line, "must be a mapping of source column to %s custom field key, got %s", kind.Title, describe(cf.val))
		return m
	}
	fedBy := map[string]field{}
	for _, p := range d.pairs(cf.val, cpath) {
		src, kp := p.key.Value, join(cpath, p.key.Value)
		if strings.TrimSpace(src) == "" {
			d.add(kp, p.key.Line, "the source column name must not be empty")
			continue
		}
		key, decimal, line, ok := d.customField(p, kp, kind)
		if !ok {
			continue
		}
		if _, err := kind.FieldType(key, decimal); err != nil {
			d.add(kp, line, "%s is not %v", q(key), err)
			continue
		}
		if prev, dup := fedBy[key]; dup {
			d.add(kp, p.key.Line, "%s is already fed by %s (line %d): each custom field takes one column", q(key), q(prev.key.Value), prev.key.Line)
			continue
		}
		fedBy[key] = p
		if m.Custom == nil {
			m.Custom = map[string]string{}
		}
		m.Custom[src] = key
		if decimal {
			if m.Decimal == nil {
				m.Decimal = map[string]bool{}
			}
			m.Decimal[src] = true
		}
	}
	return m
}

// customField reads one custom mapping's value: the field key as a
// string or, for kinds that mark decimals, {field: KEY, decimal: true}.
func (d *decoder) customField(p field, path string, kind dest.Kind) (key string, decimal bool, line int, ok bool) {
	if p.val.Kind != yaml.MappingNode || !kind.MarksDecimals {
		key, ok = d.scalarString(p.val, path)
		return key, false, p.val.Line, ok
	}
	o := d.object(p.val, path, p.key.Line, customKeys)
	if o == nil {
		return "", false, 0, false
	}
	v, n, ok := d.required(o, "field", "the "+kind.Title+" custom field: "+kind.FieldHelp)
	if !ok {
		return "", false, 0, false
	}
	decimal, _ = d.boolean(o, "decimal")
	return v, decimal, n.Line, true
}

func definedHint(v string, known []string, section string) string {
	if len(known) == 0 {
		return " (no " + section + " are defined)"
	}
	if s, ok := closest(v, known); ok {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return " (defined: " + strings.Join(known, ", ") + ")"
}

func didYouMean(v string, candidates []string) string {
	if s, ok := closest(v, candidates); ok {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return ""
}

func (o *object) sub(key string) string { return join(o.path, key) }

// str reads an optional string. n is nil when the key is absent or null;
// ok is false then, and when the value is not a string (reported).
func (d *decoder) str(o *object, key string) (v string, n *yaml.Node, ok bool) {
	f, present := o.fields[key]
	if !present || isNull(f.val) {
		return "", nil, false
	}
	v, ok = d.scalarString(f.val, o.sub(key))
	return v, f.val, ok
}

// required reads a string that must be present and not blank.
func (d *decoder) required(o *object, key, hint string) (string, *yaml.Node, bool) {
	v, n, ok := d.str(o, key)
	switch {
	case n == nil:
		d.add(o.sub(key), o.line, "required (%s)", hint)
	case ok && strings.TrimSpace(v) == "":
		d.add(o.sub(key), n.Line, "must not be empty (%s)", hint)
		ok = false
	}
	return v, n, ok
}

// scalarString accepts any scalar but a boolean or null: a list titled 2024
// is a string to the user, "true" most likely a mistake.
func (d *decoder) scalarString(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!bool" || n.ShortTag() == "!!null" {
		hint := ""
		if n.ShortTag() == "!!bool" {
			hint = " (quote it if you mean the text)"
		}
		d.add(path, n.Line, "must be a string, got %s%s", describe(n), hint)
		return "", false
	}
	return n.Value, true
}

func (d *decoder) boolean(o *object, key string) (v, ok bool) {
	f, present := o.fields[key]
	if !present || isNull(f.val) {
		return false, false
	}
	if f.val.Kind != yaml.ScalarNode || f.val.ShortTag() != "!!bool" || f.val.Decode(&v) != nil {
		d.add(o.sub(key), f.val.Line, "must be true or false, got %s", describe(f.val))
		return false, false
	}
	return v, true
}

func (d *decoder) integer(o *object, key string) (v int, n *yaml.Node, ok bool) {
	f, present := o.fields[key]
	if !present || isNull(f.val) {
		return 0, nil, false
	}
	if f.val.Kind != yaml.ScalarNode || f.val.ShortTag() != "!!int" || f.val.Decode(&v) != nil {
		d.add(o.sub(key), f.val.Line, "must be a whole number, got %s", describe(f.val))
		return 0, f.val, false
	}
	return v, f.val, true
}

func (d *decoder) number(o *object, key string) (v float64, n *yaml.Node, ok bool) {
	f, present := o.fields[key]
	if !present || isNull(f.val) {
		return 0, nil, false
	}
	tag := f.val.ShortTag()
	if f.val.Kind != yaml.ScalarNode || (tag != "!!int" && tag != "!!float") || f.val.Decode(&v) != nil {
		d.add(o.sub(key), f.val.Line, "must be a number, got %s", describe(f.val))
		return 0, f.val, false
	}
	return v, f.val, true
}

// resolve follows an alias to the node it names (nil for a dangling one).
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names a value for "got ..." in messages, quoting only short ones.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		if len(n.Value) > 24 {
			return "a long value"
		}
		switch n.ShortTag() {
		case "!!int", "!!float", "!!bool":
			if !strings.ContainsFunc(n.Value, unicode.IsControl) {
				return n.Value
			}
		}
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

// q quotes a user value for a message, shortening long ones.
func q(s string) string {
	const max = 60
	if r := []rune(s); len(r) > max {
		s = string(r[:max]) + "…"
	}
	return strconv.Quote(s)
}

// join extends a key path; odd keys are quoted so every problem stays on
// one line.
func join(path, key string) string {
	if key == "" || len(key) > 60 || strings.ContainsFunc(key, unicode.IsControl) {
		key = q(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}
