package ortto

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/httpx"
	"github.com/segpilot/segpilot/shared/ortto/fieldid"
)

// Kind describes Ortto to the registry (shared/kinds).
func Kind() dest.Kind {
	return dest.Kind{
		Name: "ortto", Title: "Ortto", Regions: Regions, DefaultBaseURL: Regions["global"], APIPath: "/v1",
		FieldHelp:     `TYP:cm:name, e.g. "str:cm:loyalty-tier"`,
		TextField:     "str:cm:name",
		FieldType:     fieldType,
		MarksDecimals: true, CreatesFields: true,
		Capabilities: dest.Capabilities{MaxBatch: maxBatch, RemoveBatch: maxBatch, Writes: true,
			MaxRefused: maxRefused, RefusedPer: refusedPer},
		New: func(c dest.Connection) (dest.Destination, error) {
			return New(Options{BaseURL: c.BaseURL, APIKey: c.APIKey, HTTPClient: c.HTTPClient,
				Limiter: c.Limiter, Logger: c.Logger, Timeout: c.Timeout})
		},
	}
}

// A custom field id: TYP:cm:kebab-name. segpilot sends str (text), txt
// (long text), int (integers, and decimals × 1000), bol and dtz (a date).
var fieldPattern = regexp.MustCompile(`^(str|txt|int|bol|dtz):cm:[a-z0-9]+(-[a-z0-9]+)*$`)

var fieldTypes = map[string]dest.Type{"str": dest.String, "txt": dest.String, "int": dest.Integer, "bol": dest.Boolean, "dtz": dest.Date}

// fieldType checks a custom field id and returns its value type.
func fieldType(key string, decimal bool) (dest.Type, error) {
	if !fieldPattern.MatchString(key) {
		return "", errors.New("an Ortto custom field id" + fieldHint(key) +
			": write TYP:cm:name, TYP one of str, txt, int, bol, dtz and name in kebab-case, as Ortto shows the field's id under Settings › Fields, e.g. \"str:cm:loyalty-tier\"")
	}
	typ := fieldTypes[key[:3]]
	switch {
	case decimal && typ != dest.Integer:
		return "", errors.New("an int: field, the only kind decimal: true may mark (Ortto keeps decimals × 1000 in int fields)")
	case decimal:
		return dest.Decimal, nil
	}
	return typ, nil
}

// autopilotKey is Autopilot's custom key ("string--Loyalty--Tier"):
// people moving an export across write it first.
var autopilotKey = regexp.MustCompile(`^(string|integer|float|date|boolean)--([A-Za-z0-9]+(?:--[A-Za-z0-9]+)*)$`)

// fieldHint suggests the id a mistaken key most likely meant.
func fieldHint(key string) string {
	switch {
	case strings.HasPrefix(key, "bol::p") || strings.HasPrefix(key, "bol::sp"):
		return " (subscription fields are never sent: a new person gets Ortto's default, an existing one keeps their choice)"
	case strings.Contains(key, "::"):
		return " (built-in fields are not custom fields: map email and names under match.email, match.firstName and match.lastName)"
	}
	if m := autopilotKey.FindStringSubmatch(key); m != nil {
		typ := map[string]string{"string": "str", "integer": "int", "float": "int", "date": "dtz", "boolean": "bol"}[m[1]]
		fixed := typ + ":cm:" + strings.ToLower(strings.ReplaceAll(m[2], "--", "-"))
		if m[1] == "float" {
			return fmt.Sprintf(" (did you mean {field: %s, decimal: true}? Autopilot's key does not work in Ortto)", fixed)
		}
		return fmt.Sprintf(" (did you mean %q? Autopilot's key does not work in Ortto)", fixed)
	}
	if typ, name, ok := strings.Cut(key, ":cm:"); ok {
		alias := map[string]string{"string": "str", "text": "str", "integer": "int", "number": "int", "bool": "bol", "boolean": "bol", "date": "dtz"}
		if t, known := alias[strings.ToLower(typ)]; known {
			typ = t
		}
		if candidate := strings.ToLower(typ) + ":cm:" + fieldid.Kebab(name); candidate != key && fieldPattern.MatchString(candidate) {
			return fmt.Sprintf(" (did you mean %q?)", candidate)
		}
	}
	return ""
}

// Ortto's field limits (unicode characters).
const (
	maxString = 255
	maxText   = 4000
)

// fieldsOf is a contact's merge fields, or why the contact cannot be sent;
// checked remembers which custom keys were found to be cm fields.
// Empty values are left out, never blanking what Ortto holds; only custom
// (cm) fields are taken from Custom, so a subscription field (bol::p,
// bol::sp) cannot be sent however the config was built.
func fieldsOf(ct dest.Contact, checked map[string]bool) (map[string]any, string) {
	if strings.TrimSpace(ct.Email) == "" {
		return nil, "missing email"
	}
	f := map[string]any{fieldEmail: ct.Email}
	for key, v := range map[string]string{"str::first": ct.FirstName, "str::last": ct.LastName} {
		if strings.TrimSpace(v) == "" {
			continue
		}
		if n := utf8.RuneCountInString(v); n > maxString {
			return nil, fmt.Sprintf("%s is %d characters; Ortto keeps at most %d", key, n, maxString)
		}
		f[key] = v
	}
	for _, cv := range ct.Custom {
		ok, seen := checked[cv.Key]
		if !seen {
			ok = fieldPattern.MatchString(cv.Key)
			checked[cv.Key] = ok
		}
		if !ok {
			return nil, fmt.Sprintf("%s is not an Ortto custom field id; segpilot sends only custom (cm) fields besides email and names", cv.Key)
		}
		v, why := wireValue(cv)
		if why != "" {
			return nil, fmt.Sprintf("%s: %s", cv.Key, why)
		}
		if v != nil {
			f[cv.Key] = v
		}
	}
	return f, ""
}

// wireValue converts a custom value to Ortto's JSON: strings as they are
// (within the field's limit), integers as JSON numbers, decimals × 1000 as
// integers, booleans, dates as {year, month, day, timezone}. nil: empty,
// left out.
func wireValue(v dest.Value) (any, string) {
	switch x := v.Value.(type) {
	case nil:
		return nil, ""
	case string:
		if strings.TrimSpace(x) == "" {
			return nil, ""
		}
	}
	switch v.Type {
	case dest.String:
		s := fmt.Sprint(v.Value)
		limit := maxString
		if strings.HasPrefix(v.Key, "txt:") {
			limit = maxText
		}
		if n := utf8.RuneCountInString(s); n > limit {
			return nil, fmt.Sprintf("%d characters; Ortto keeps at most %d in this field", n, limit)
		}
		return s, ""
	case dest.Integer:
		n, err := strconv.ParseInt(numberText(v.Value), 10, 64)
		if err != nil {
			return nil, fmt.Sprintf("%v is not a whole number", v.Value)
		}
		return n, ""
	case dest.Decimal:
		return thousandths(numberText(v.Value))
	case dest.Boolean:
		b, ok := v.Value.(bool)
		if !ok {
			return nil, fmt.Sprintf("%v is not true or false", v.Value)
		}
		return b, ""
	case dest.Date:
		return dateObject(fmt.Sprint(v.Value))
	}
	return nil, fmt.Sprintf("type %q is not one segpilot sends to Ortto", v.Type)
}

func numberText(v any) string {
	switch x := v.(type) {
	case json.Number:
		return x.String()
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	default:
		return fmt.Sprint(x)
	}
}

// thousandths is a decimal × 1000 as Ortto keeps it, rounded half away
// from zero past the third decimal, computed exactly (no float rounding:
// 0.1 is 100, not 100.00000000000001).
func thousandths(s string) (any, string) {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return nil, fmt.Sprintf("%s is not a number", s)
	}
	r.Mul(r, big.NewRat(1000, 1))
	num, den := r.Num(), r.Denom()
	q, m := new(big.Int).QuoRem(num, den, new(big.Int))
	if m.Sign() != 0 && new(big.Int).Mul(new(big.Int).Abs(m), big.NewInt(2)).Cmp(den) >= 0 {
		q.Add(q, big.NewInt(int64(num.Sign())))
	}
	if !q.IsInt64() {
		return nil, fmt.Sprintf("%s × 1000 is beyond what Ortto keeps in an int field", s)
	}
	return q.Int64(), ""
}

// dtz is Ortto's date object.
type dtz struct {
	Year     int    `json:"year"`
	Month    int    `json:"month"`
	Day      int    `json:"day"`
	Timezone string `json:"timezone"`
}

// dateObject turns a date ("2006-01-02") or an RFC 3339 timestamp (its
// date in UTC) into a dtz object in UTC.
func dateObject(s string) (any, string) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		if t, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return nil, fmt.Sprintf("%q is not a date", s)
		}
		t = t.UTC()
	}
	return dtz{Year: t.Year(), Month: int(t.Month()), Day: t.Day(), Timezone: "UTC"}, ""
}

// customField is one entry of POST /v1/person/custom-field/get.
type customField struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	DisplayType string `json:"display_type"`
}

// PrepareList checks that every custom field the export fills exists in
// the account with a matching type, creating the missing ones when the
// export allows it, and returns the tag (the export's list) people get.
// A tag needs no creating: Ortto makes it on first use. Even with no
// custom fields it asks for them, so a refused key (or one of another
// region) stops the run before anything is sent. With spec.Registry, a
// field is claimed before it is created, so exports in other processes
// create it once instead of one failing on the name the other took.
func (c *Client) PrepareList(ctx context.Context, spec dest.ListSpec) (string, error) {
	tag := strings.TrimSpace(spec.Title)
	if tag == "" {
		return "", errors.New("preparing the tag: empty list title")
	}
	fields, err := listFields(ctx, c.hc)
	if err != nil {
		return "", err
	}
	have, named := map[string]customField{}, map[string]customField{}
	for _, f := range fields {
		have[f.ID] = f
		named[nameOf(f.ID)] = f
	}
	var problems []string
	for _, f := range spec.Fields {
		got, ok := have[f.Key]
		taken, isTaken := named[nameOf(f.Key)]
		switch {
		case !ok && isTaken:
			problems = append(problems, fmt.Sprintf("custom field %s does not exist in Ortto, and %s has its name: map the column to %s, or rename one of them",
				f.Key, taken.ID, taken.ID))
			continue
		case !ok && spec.CreateFields:
			created, err := c.ensureField(ctx, spec, f)
			var ce *dest.ConfigError
			if errors.As(err, &ce) {
				problems = append(problems, ce.Msg)
				continue
			}
			if err != nil {
				return "", err
			}
			got, ok = created, true
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("custom field %s does not exist in Ortto: create it under Settings › Fields as a %s field named %q, or set createFields: true on the export",
				f.Key, createType(f), displayName(f.Key)))
			continue
		}
		if why := mismatch(f, got); why != "" {
			problems = append(problems, why)
		}
	}
	if len(problems) > 0 {
		return "", &dest.ConfigError{Msg: strings.Join(problems, "; ")}
	}
	return tag, nil
}

// nameOf is a custom field id's name part, which Ortto keeps unique: one
// field per name, whatever its type ("loyalty-tier" of str:cm:loyalty-tier).
func nameOf(id string) string {
	_, name, _ := strings.Cut(id, ":cm:")
	return name
}

// listFields is POST /v1/person/custom-field/get.
func listFields(ctx context.Context, hc httpx.Caller) ([]customField, error) {
	var answer struct {
		Fields []struct {
			Field customField `json:"field"`
		} `json:"fields"`
	}
	if err := hc.Do(ctx, httpx.Request{Method: http.MethodPost, Path: "/person/custom-field/get"}, &answer); err != nil {
		return nil, fmt.Errorf("listing Ortto's custom fields: %w", err)
	}
	out := make([]customField, len(answer.Fields))
	for i, f := range answer.Fields {
		out[i] = f.Field
	}
	return out, nil
}

// ensureField returns the field f names, created: through spec.Registry
// when set, keyed by the field's name (Ortto's unit of uniqueness), else
// directly. A field of that name and another type is a *dest.ConfigError.
func (c *Client) ensureField(ctx context.Context, spec dest.ListSpec, f dest.Field) (customField, error) {
	fields := &fieldObjects{c: c, f: f, seen: map[string]customField{}}
	var id string
	if spec.Registry != nil {
		res, err := spec.Registry.Resolve(ctx, dest.ObjectField, nameOf(f.Key), fields)
		if err != nil {
			return customField{}, fmt.Errorf("preparing Ortto custom field %s: %w", f.Key, err)
		}
		id = res.ID
	} else {
		created, err := fields.Create(ctx)
		if err != nil {
			return customField{}, fmt.Errorf("preparing Ortto custom field %s: %w", f.Key, err)
		}
		id = created
	}
	if id != f.Key {
		return customField{}, &dest.ConfigError{Msg: fmt.Sprintf("custom field %s: Ortto's field named %q is %s, not %s: map the column to %s",
			f.Key, displayName(f.Key), id, f.Key, id)}
	}
	return fields.seen[id], nil
}

// fieldObjects is the custom fields with f's name, as a Registry sees
// them: at most one, since Ortto refuses a second field with a name.
type fieldObjects struct {
	c    *Client
	f    dest.Field
	seen map[string]customField // every field found or created, by id
}

func (o *fieldObjects) Find(ctx context.Context) ([]string, error) {
	fields, err := listFields(ctx, o.c.hc)
	return o.named(fields), err
}

// named keeps and returns the ids of the fields with o.f's name.
func (o *fieldObjects) named(fields []customField) []string {
	var ids []string
	for _, f := range fields {
		if nameOf(f.ID) == nameOf(o.f.Key) {
			o.seen[f.ID] = f
			ids = append(ids, f.ID)
		}
	}
	return ids
}

// Create sends custom-field/create. One that got no answer, or a 5xx, may
// have been applied: before a retry it looks, since Ortto would refuse
// the name a second time.
func (o *fieldObjects) Create(ctx context.Context) (string, error) {
	var answer struct {
		Field customField `json:"field"`
	}
	var found string
	r := httpx.Request{
		Method: http.MethodPost,
		Path:   "/person/custom-field/create",
		Body:   map[string]any{"name": displayName(o.f.Key), "type": createType(o.f), "track_changes": false},
		BeforeRetry: func(ctx context.Context, probe httpx.Caller) (bool, error) {
			fields, err := listFields(ctx, probe)
			if ids := o.named(fields); len(ids) > 0 {
				found = ids[0]
			}
			return found != "", err
		},
	}
	if err := o.c.hc.Do(ctx, r, &answer); err != nil {
		return "", fmt.Errorf("creating it: %w", err)
	}
	if found != "" {
		return found, nil
	}
	if answer.Field.ID == "" {
		return "", errors.New("creating it: the answer carried no field id")
	}
	o.seen[answer.Field.ID] = answer.Field
	return answer.Field.ID, nil
}

// mismatch says why an existing field cannot take the export's values.
func mismatch(f dest.Field, got customField) string {
	decimalField := got.DisplayType == "decimal" || got.DisplayType == "currency"
	switch {
	case f.Type == dest.Integer && decimalField:
		return fmt.Sprintf("custom field %s holds decimals in Ortto (%s): map it as {field: %s, decimal: true}", f.Key, got.DisplayType, f.Key)
	case f.Type == dest.Decimal && got.DisplayType == "integer":
		return fmt.Sprintf("custom field %s holds whole numbers in Ortto: drop decimal: true, or map the column to a decimal field", f.Key)
	}
	return ""
}

// createType is custom-field/create's type for f.
func createType(f dest.Field) string {
	switch {
	case f.Type == dest.Decimal:
		return "decimal"
	case strings.HasPrefix(f.Key, "txt:"):
		return "long_text"
	}
	return map[string]string{"str": "text", "int": "integer", "bol": "boolean", "dtz": "date"}[f.Key[:3]]
}

// displayName is the name whose kebab-case is the id's: "loyalty-tier" ->
// "Loyalty Tier".
func displayName(key string) string {
	_, name, _ := strings.Cut(key, ":cm:")
	words := strings.Split(name, "-")
	for i, w := range words {
		if w != "" {
			words[i] = strings.ToUpper(w[:1]) + w[1:]
		}
	}
	return strings.Join(words, " ")
}
