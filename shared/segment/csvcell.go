package segment

// SafeCSVCell makes s safe to put in a CSV that people open in a
// spreadsheet: a value starting with = + - @ (or a tab or carriage return)
// could run as a formula, so it gets a leading single quote.
func SafeCSVCell(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}
