// Package segment reads segment files (CSV, JSON Lines, JSON arrays, any of
// them gzip-compressed, and Parquet) as a stream of normalised, validated
// profiles.
//
// [Read] detects the format from the content, matches the export's mapping
// against the header (each JSON object's keys, a Parquet file's top-level
// columns), and calls back once per row, in order, with either a [Record]
// or a [Rejection]. Memory stays flat however large the file is; problems
// that make the whole file unusable are returned as a [*FileError].
package segment
