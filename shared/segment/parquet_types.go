package segment

import (
	"encoding/hex"
	"math/big"
	"strconv"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/deprecated"
	"github.com/parquet-go/parquet-go/format"
)

// csvText returns the function that writes a non-null value of a column of
// type t as the text a CSV export of the same data would hold, so that
// buildProfile applies the same rules to every format:
//
//   - integers in decimal (an INT64 beyond 2^53 is then refused as in CSV),
//     unsigned ones as unsigned;
//   - DECIMAL exactly, its scale as a decimal point ("1234.50");
//   - FLOAT and DOUBLE in the shortest decimal that reads back the same
//     value, never in exponent form ("1000000", not "1e+06"), as a
//     spreadsheet writes them, so a whole number fits an integer field;
//   - DATE as YYYY-MM-DD, and TIMESTAMP (and the legacy INT96) as RFC 3339
//     in UTC, the two forms a date field takes; a timestamp without time
//     zone (isAdjustedToUTC false) is taken as UTC, which keeps its date,
//     the part a date field keeps; TIME as hh:mm:ss[.fraction];
//   - BOOLEAN as true or false;
//   - strings, enums, JSON and plain byte arrays as their bytes (invalid
//     UTF-8 then rejects the row, as in CSV); UUID in its 8-4-4-4-12 form.
//
// For text (strings, enums, JSON, plain byte arrays) it returns asBytes
// and no function: the reader copies the bytes itself, the commonest case
// kept free of a call. For a type it cannot write (BSON, INTERVAL,
// FLOAT16, geospatial) it returns the type's name.
func csvText(t parquet.Type) (conv func(dst []byte, v parquet.Value) []byte, asBytes bool, unsupported string) {
	kind := t.Kind()
	if lt := t.LogicalType(); lt != nil {
		switch l := lt.Value.(type) {
		case *format.DecimalType:
			conv, unsupported := decimalText(kind, int(l.Scale))
			return conv, false, unsupported
		case *format.DateType:
			if kind == parquet.Int32 {
				return func(dst []byte, v parquet.Value) []byte {
					return time.Unix(int64(v.Int32())*86400, 0).UTC().AppendFormat(dst, time.DateOnly)
				}, false, ""
			}
		case *format.TimestampType:
			if kind == parquet.Int64 && l.Unit.Value != nil {
				unit := l.Unit.Value.Duration()
				return func(dst []byte, v parquet.Value) []byte {
					return unixTime(v.Int64(), unit).AppendFormat(dst, time.RFC3339Nano)
				}, false, ""
			}
		case *format.TimeType:
			if l.Unit.Value != nil && (kind == parquet.Int32 || kind == parquet.Int64) {
				unit := l.Unit.Value.Duration()
				return func(dst []byte, v parquet.Value) []byte {
					n := v.Int64()
					if kind == parquet.Int32 {
						n = int64(v.Int32())
					}
					return unixTime(n, unit).AppendFormat(dst, "15:04:05.999999999")
				}, false, ""
			}
		case *format.IntType:
			if !l.IsSigned {
				switch kind {
				case parquet.Int32:
					return func(dst []byte, v parquet.Value) []byte { return strconv.AppendUint(dst, uint64(v.Uint32()), 10) }, false, ""
				case parquet.Int64:
					return func(dst []byte, v parquet.Value) []byte { return strconv.AppendUint(dst, v.Uint64(), 10) }, false, ""
				}
			}
		case *format.UUIDType:
			if kind == parquet.FixedLenByteArray && t.Length() == 16 {
				return appendUUID, false, ""
			}
		case *format.StringType, *format.EnumType, *format.JsonType, *format.NullType:
			// the physical type's text below
		default:
			return nil, false, lt.String()
		}
	}
	if ct := t.ConvertedType(); ct != nil && *ct == deprecated.Interval {
		return nil, false, "INTERVAL"
	}
	switch kind {
	case parquet.Boolean:
		return func(dst []byte, v parquet.Value) []byte { return strconv.AppendBool(dst, v.Boolean()) }, false, ""
	case parquet.Int32:
		return func(dst []byte, v parquet.Value) []byte { return strconv.AppendInt(dst, int64(v.Int32()), 10) }, false, ""
	case parquet.Int64:
		return func(dst []byte, v parquet.Value) []byte { return strconv.AppendInt(dst, v.Int64(), 10) }, false, ""
	case parquet.Int96:
		return func(dst []byte, v parquet.Value) []byte {
			return int96Time(v.Int96()).AppendFormat(dst, time.RFC3339Nano)
		}, false, ""
	case parquet.Float:
		return func(dst []byte, v parquet.Value) []byte {
			return strconv.AppendFloat(dst, float64(v.Float()), 'f', -1, 32)
		}, false, ""
	case parquet.Double:
		return func(dst []byte, v parquet.Value) []byte { return strconv.AppendFloat(dst, v.Double(), 'f', -1, 64) }, false, ""
	case parquet.ByteArray, parquet.FixedLenByteArray:
		return nil, true, ""
	}
	return nil, false, t.String()
}

// unixTime is n units since the Unix epoch, in UTC.
func unixTime(n int64, unit time.Duration) time.Time {
	switch unit {
	case time.Millisecond:
		return time.UnixMilli(n).UTC()
	case time.Microsecond:
		return time.UnixMicro(n).UTC()
	}
	return time.Unix(0, n).UTC()
}

// int96Time reads the legacy INT96 timestamp (Impala, Hive, older Spark):
// nanoseconds of the day, then the Julian day number.
func int96Time(i deprecated.Int96) time.Time {
	const julianUnixEpoch = 2440588
	nanos := int64(i[1])<<32 | int64(i[0])
	days := int64(i[2]) - julianUnixEpoch
	return time.Unix(days*86400, nanos).UTC()
}

func appendUUID(dst []byte, v parquet.Value) []byte {
	b := v.ByteArray()
	if len(b) != 16 {
		return append(dst, b...) // the schema said 16 bytes; keep what is there
	}
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:16])
	return append(dst, s[:]...)
}

// decimalText writes a DECIMAL of the physical kind with scale digits
// after the point, exactly: the unscaled integer's digits with a point.
func decimalText(kind parquet.Kind, scale int) (func(dst []byte, v parquet.Value) []byte, string) {
	var digits []byte // scratch: one column is converted by one goroutine
	var n big.Int
	switch kind {
	case parquet.Int32:
		return func(dst []byte, v parquet.Value) []byte {
			digits = strconv.AppendInt(digits[:0], int64(v.Int32()), 10)
			return appendScaled(dst, digits, scale)
		}, ""
	case parquet.Int64:
		return func(dst []byte, v parquet.Value) []byte {
			digits = strconv.AppendInt(digits[:0], v.Int64(), 10)
			return appendScaled(dst, digits, scale)
		}, ""
	case parquet.ByteArray, parquet.FixedLenByteArray:
		return func(dst []byte, v parquet.Value) []byte {
			b := v.ByteArray() // big-endian two's complement
			n.SetBytes(b)
			if len(b) > 0 && b[0]&0x80 != 0 {
				n.Sub(&n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
			}
			digits = n.Append(digits[:0], 10)
			return appendScaled(dst, digits, scale)
		}, ""
	}
	return nil, "DECIMAL stored as " + kind.String()
}

// appendScaled appends the decimal integer digits (maybe with a leading
// minus) divided by 10^scale.
func appendScaled(dst, digits []byte, scale int) []byte {
	if scale <= 0 {
		dst = append(dst, digits...)
		for range -scale {
			dst = append(dst, '0')
		}
		return dst
	}
	if len(digits) > 0 && digits[0] == '-' {
		dst = append(dst, '-')
		digits = digits[1:]
	}
	if len(digits) <= scale {
		dst = append(dst, '0', '.')
		for range scale - len(digits) {
			dst = append(dst, '0')
		}
		return append(dst, digits...)
	}
	cut := len(digits) - scale
	dst = append(dst, digits[:cut]...)
	dst = append(dst, '.')
	return append(dst, digits[cut:]...)
}
