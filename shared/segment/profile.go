package segment

// Profile is one normalised, validated contact read from a segment file.
type Profile struct {
	Email     string `json:"email"`
	FirstName string `json:"firstName,omitempty"`
	LastName  string `json:"lastName,omitempty"`
	// Custom maps an Autopilot custom field key ("string--Loyalty--Tier") to a
	// value of the declared type: string, int64, float64, bool, or an ISO 8601
	// date string.
	Custom map[string]any `json:"custom,omitempty"`
}

// Mapping names the source columns (CSV header) or keys (JSON) that feed a
// profile: the Customer Insights "data matching".
type Mapping struct {
	Email     string // required
	FirstName string // optional
	LastName  string // optional
	Custom    []CustomField
}

// CustomField maps one source column to an Autopilot custom field.
type CustomField struct {
	Source string // column or key in the segment file
	Key    string // Autopilot key, e.g. "string--Loyalty--Tier"
	Type   string // string, integer, float, date or boolean (the key's prefix)
}

// Record is one valid profile with the 1-based data row it came from
// (the CSV header is not counted; for JSON, the n-th object).
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
