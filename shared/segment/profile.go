package segment

import (
	"bytes"
	"encoding/json"
)

// Profile is one normalised, validated contact read from a segment file.
type Profile struct {
	Email     string `json:"email"`
	FirstName string `json:"firstName,omitempty"`
	LastName  string `json:"lastName,omitempty"`
	// Custom holds the destination's custom fields ("string--Loyalty--Tier",
	// "str:cm:loyalty-tier") with values of the declared type: string,
	// int64, float64, bool, or an ISO 8601 date string.
	Custom Custom `json:"custom,omitempty"`
}

// CustomValue is one custom field of a profile.
type CustomValue struct {
	Key   string
	Value any
}

// Custom is a profile's custom fields, sorted by key, each key once. A
// slice rather than a map: the reader builds one per row of files with
// millions of rows, and a small map costs several allocations. It encodes
// as the JSON object a map would.
type Custom []CustomValue

// Get returns the value of key.
func (c Custom) Get(key string) (any, bool) {
	for _, v := range c {
		if v.Key == key {
			return v.Value, true
		}
	}
	return nil, false
}

// Map returns the fields as a map (nil when there are none).
func (c Custom) Map() map[string]any {
	if len(c) == 0 {
		return nil
	}
	m := make(map[string]any, len(c))
	for _, v := range c {
		m[v.Key] = v.Value
	}
	return m
}

// CustomOf builds a Custom from a map, sorted by key.
func CustomOf(m map[string]any) Custom {
	if len(m) == 0 {
		return nil
	}
	c := make(Custom, 0, len(m))
	for k, v := range m {
		c = append(c, CustomValue{Key: k, Value: v})
	}
	c.sort()
	return c
}

// sort orders c by key; insertion sort, as c holds a handful of fields.
func (c Custom) sort() {
	for i := 1; i < len(c); i++ {
		for j := i; j > 0 && c[j].Key < c[j-1].Key; j-- {
			c[j], c[j-1] = c[j-1], c[j]
		}
	}
}

// MarshalJSON encodes c as a JSON object, exactly as encoding/json encodes
// the equivalent map.
func (c Custom) MarshalJSON() ([]byte, error) {
	if c == nil {
		return []byte("null"), nil
	}
	return json.Marshal(c.Map())
}

// UnmarshalJSON decodes a JSON object, keeping numbers as json.Number so
// large integers survive exactly.
func (c *Custom) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return err
	}
	*c = CustomOf(m)
	return nil
}

// Mapping names the source columns (CSV header) or keys (JSON) that feed a
// profile: the Customer Insights "data matching".
type Mapping struct {
	Email     string // required
	FirstName string // optional
	LastName  string // optional
	Custom    []CustomField
	// Destination is named by the row reasons that depend on it; its zero
	// value names none.
	Destination Destination
}

// Destination is the export's destination as row reasons name it.
type Destination struct {
	Title     string // "Autopilot", "Ortto"
	TextField string // how a text custom field is written there: "string--Name", "str:cm:name"
}

// CustomField maps one source column to a custom field of the destination.
type CustomField struct {
	Source string // column or key in the segment file
	Key    string // the destination's key, e.g. "string--Loyalty--Tier", "str:cm:loyalty-tier"
	Type   string // string, integer, float, date or boolean (by default an Autopilot key's prefix)
}

// Record is one valid profile with the data row it came from: the n-th
// record of the file, counted from 1 in every format (CSV: the header is
// row 0 and blank lines are not counted; JSON: the n-th object). It is not
// a line number: a CSV field or a JSON object may span lines.
type Record struct {
	Row     int
	Profile Profile
}

// Rejection is one row that will not be sent, and why.
type Rejection struct {
	Row    int
	Email  string // as given in the file, before normalisation
	Reason string
}
