// Package segment reads segment files (CSV, JSON Lines, JSON arrays, any of
// them gzip-compressed) as a stream of normalised, validated profiles.
//
// [Read] detects the format from the content, matches the export's mapping
// against the header (or each JSON object's keys), and calls back once per
// row, in order, with either a [Record] or a [Rejection]. Memory stays flat
// however large the file is; problems that make the whole file unusable are
// returned as a [*FileError].
package segment
